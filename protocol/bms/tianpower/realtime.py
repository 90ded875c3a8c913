"""Tianpower CMD 0x01 realtime data: the TLV groups, the status flag table, decode and encode.

DATA is a run of groups `[id][count][count x value]`; values are 2 bytes for ids up to 0x0A and 4
bytes from 0x0B on (reference 3.A.2). The groups are walked generically: any cell count, any number
of temperatures with their sensor tags, counter groups kept raw with their documented hypotheses.
Units are explicit; current is positive while charging.

Sans-I/O, no state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.bms.base import Blocks, FlagInfo, Meaning
from protocol.bms.base import FlagKind as FlagKind
from protocol.errors import LocalProtocolError, RemoteProtocolError

# --- group ids -------------------------------------------------------------------------------

G_CELLS = 0x01
G_CURRENT = 0x02
G_SOC = 0x03
G_FULL_CAPACITY = 0x04
G_TEMPERATURES = 0x05
G_STATUS = 0x06
G_CYCLES = 0x07
G_VOLTAGE = 0x08
G_SOH = 0x09
G_EXTRA_PROTECTION = 0x0A
WIDE_GROUPS_FROM = 0x0B  # 4-byte values from here on
REQUIRED_GROUPS = (
    G_CELLS,
    G_CURRENT,
    G_SOC,
    G_FULL_CAPACITY,
    G_TEMPERATURES,
    G_STATUS,
    G_CYCLES,
    G_VOLTAGE,
    G_SOH,
)
STATUS_BYTES = 10

GROUP_NAMES = {
    G_CELLS: "cell voltages",
    G_CURRENT: "current",
    G_SOC: "SOC",
    G_FULL_CAPACITY: "full capacity",
    G_TEMPERATURES: "temperatures",
    G_STATUS: "status bytes",
    G_CYCLES: "cycles",
    G_VOLTAGE: "pack voltage",
    G_SOH: "SOH",
    G_EXTRA_PROTECTION: "extra protection word",
}

# Counter groups (4-byte values): what is known or guessed about them (reference 3.A.2).
COUNTER_HYPOTHESES: dict[int, str] = {
    0x0B: "hypothesis: cumulative charged Ah (unverified)",
    0x0C: "hypothesis: cumulative discharged Ah (unverified)",
    0x0D: "unknown monotonic counter",
    0x0E: "unknown (0x00400000 on Basengreen, fast-changing 0x0023xxxx on Revov)",
    0x0F: "hypothesis: cumulative charged energy in Wh (unverified)",
    0x10: "hypothesis: cumulative discharged energy in Wh (unverified)",
    0x11: "only TP-BD16S48V300: 32-bit current, A = (50000 - raw) / 100 (unverified)",
}

CURRENT_OFFSET = 30000  # A = (30000 - raw) / 100
TEMP_OFFSET_C = 50  # degC = low byte - 50
CELL_MV_MASK = 0x1FFF
CELL_BALANCING = 0x80  # flags in the high byte of a cell value
CELL_OVER_VOLTAGE = 0x40
CELL_UNDER_VOLTAGE = 0x20


class TempSensor(enum.StrEnum):
    CELL = "cell"
    MOS = "mos"
    AMBIENT = "ambient"
    UNKNOWN = "unknown"


# Temperature tags (high byte of a group 0x05 value). 0x80 is EG4's fifth sensor: probably the MOS
# sensor (*inferred*, reference 3.A.2).
TEMP_TAGS: dict[int, TempSensor] = {
    0x00: TempSensor.CELL,
    0x20: TempSensor.AMBIENT,
    0x40: TempSensor.MOS,
    0x80: TempSensor.MOS,
}


@dataclass(frozen=True, slots=True)
class StatusFlag:
    """One bit of group 0x06 (or of the group 0x0A word) with its meaning as data."""

    byte: int  # 0..9 within the group 0x06 data, or 10 for the extra protection word (group 0x0A)
    bit: int
    name: str
    kind: FlagKind  # severity
    description: str
    meaning: Meaning
    blocks: Blocks = Blocks.NONE
    source: str = ""

    @property
    def info(self) -> FlagInfo:
        return FlagInfo(self.name, self.kind, self.meaning, self.blocks, self.source or SRC_TOOL)


P, A, F, S = FlagKind.PROTECTION, FlagKind.ALARM, FlagKind.FAULT, FlagKind.STATE
M = Meaning
CHG, DSG, BOTH, NONE = Blocks.CHARGE, Blocks.DISCHARGE, Blocks.BOTH, Blocks.NONE

# Where the meanings come from (cited by public name; the reference's 3.A.5 collects them).
SRC_TOOL = (
    "name only: the vendor tool's flag name; PA1DVB's Basengreen logger and bms_proto's flag table "
    "name the same bit alike, no source describes it further"
)
SRC_PROTO = "bms_proto flag table"
SRC_SHINWA = "Shinwa protocol specification (names the bit without cell/pack)"
SRC_NAME_ONLY = "name only: no source describes this bit beyond its name"
SRC_BLOCK = "; blocked direction: gateway's choice ({})"
SRC_UNDOCUMENTED = "no source names this bit"

# Group 0x06 status bytes (reference 3.A.5). Names follow the vendor tool where known
# ("Manual_CHG_MOS_Open", "536_COM_Timeout", "Startup_Failed", "Fire_fighting_Alarm", "Gap_Waite")
# and the same style elsewhere. The meaning of each bit comes from the sources named in `source`;
# where a source says something other than the name suggests, the source wins ("Hot_Failure" is
# bms_proto's "fan_on_failure", not a temperature).
STATUS_FLAGS: tuple[StatusFlag, ...] = (
    StatusFlag(
        0,
        3,
        "Cell_Low_Vol_Fault",
        F,
        "cell voltage low (fault)",
        M.CELL_UNDERVOLTAGE,
        DSG,
        SRC_TOOL
        + " (cell_vol_low_fault)"
        + SRC_BLOCK.format("a cell below its fault level must not be discharged"),
    ),
    StatusFlag(
        0,
        4,
        "Vol_Line_Break",
        F,
        "voltage sense line broken",
        M.VOLTAGE_SENSE_FAULT,
        BOTH,
        SRC_TOOL
        + " (vol_line_break)"
        + SRC_BLOCK.format("cell voltages unknown: neither over- nor under-voltage can be seen"),
    ),
    StatusFlag(
        0,
        5,
        "CHG_MOS_Fault",
        F,
        "charge MOS failure",
        M.CHARGE_MOS_FAULT,
        CHG,
        SRC_TOOL + " (bms_proto: charge_mos_fault)" + SRC_BLOCK.format("the pack cannot stop a charge"),
    ),
    StatusFlag(
        0,
        6,
        "DSG_MOS_Fault",
        F,
        "discharge MOS failure",
        M.DISCHARGE_MOS_FAULT,
        DSG,
        SRC_TOOL + " (bms_proto: discharge_mos_fault)" + SRC_BLOCK.format("the pack cannot stop a discharge"),
    ),
    StatusFlag(
        0,
        7,
        "Vol_Sensor_Fault",
        F,
        "voltage sensor (module) failure",
        M.VOLTAGE_SENSE_FAULT,
        BOTH,
        SRC_TOOL + " (bms_proto: vol_sensor_fault)" + SRC_BLOCK.format("cell voltages unknown"),
    ),
    StatusFlag(
        1,
        0,
        "NTC_Disconnected",
        F,
        "NTC disconnected",
        M.NTC_FAULT,
        NONE,
        SRC_TOOL + " (bms_proto: ntc_disconnection); the temperature derating still sees the readings",
    ),
    StatusFlag(
        1,
        1,
        "Current_Module_Fault",
        F,
        "ADC / current module failure",
        M.MEASUREMENT_FAULT,
        BOTH,
        "PA1DVB's logger: ADC_MOD_Fault; bms_proto: adc_mod_fault "
        "(an ADC module failure, not an over-current)" + SRC_BLOCK.format("measurements unreliable"),
    ),
    StatusFlag(
        1,
        2,
        "Charger_Reversed",
        F,
        "reverse battery / charger reversed",
        M.REVERSE_POLARITY,
        BOTH,
        "PA1DVB's logger: Reverse_Battery; bms_proto: reverse_battery" + SRC_BLOCK.format("wiring fault"),
    ),
    StatusFlag(
        1,
        3,
        "Hot_Failure",
        F,
        "fan-on failure (vendor name 'hot failure')",
        M.FAN_FAULT,
        NONE,
        "bms_proto: fan_on_failure (the vendor tool's 'Hot_Failure'; the tool shows a 'Fan State'); "
        "not a temperature",
    ),
    StatusFlag(
        1,
        4,
        "Battery_Locked",
        S,
        "battery locked",
        M.LOCKED,
        NONE,
        SRC_TOOL + " (bms_proto: battery_locked); the manual: anti-theft lock turns the discharge MOS off",
    ),
    StatusFlag(
        1,
        5,
        "COM_Timeout",
        A,
        "communication timeout",
        M.COMMUNICATION,
        NONE,
        "vendor manual 4.5.6 ('communication timeout' of the anti-theft function)",
    ),
    StatusFlag(1, 6, "SN_Code_Failure", A, "SN code failure", M.CONFIGURATION_FAULT, NONE, SRC_NAME_ONLY),
    StatusFlag(
        1,
        7,
        "Secondary_Trip",
        P,
        "secondary trip",
        M.SECONDARY_PROTECTION,
        BOTH,
        SRC_NAME_ONLY + " (a second-level protection tripped; direction not stated, both blocked)",
    ),
    StatusFlag(
        2,
        0,
        "DISC_OT_Prot",
        P,
        "discharge over-temperature protection",
        M.DISCHARGE_OVERTEMPERATURE,
        DSG,
        SRC_TOOL + " (bms_proto: disc_ov_temp_protection)",
    ),
    StatusFlag(
        2,
        1,
        "DISC_UT_Prot",
        P,
        "discharge under-temperature protection",
        M.DISCHARGE_UNDERTEMPERATURE,
        DSG,
        SRC_TOOL + " (bms_proto: disc_un_temp_protection)",
    ),
    StatusFlag(
        2,
        3,
        "Startup_Failed",
        F,
        "startup failed",
        M.STARTUP_FAULT,
        BOTH,
        SRC_TOOL + " (bms_proto: startup_failed)" + SRC_BLOCK.format("the pack did not start"),
    ),
    StatusFlag(
        2,
        4,
        "CHG_MOS_Off",
        S,
        "charge MOS off",
        M.CHARGE_MOS,
        NONE,
        SRC_TOOL + " (bms_proto: charge_mos_off)",
    ),
    StatusFlag(
        2,
        5,
        "DSG_MOS_Off",
        S,
        "discharge MOS off",
        M.DISCHARGE_MOS,
        NONE,
        SRC_TOOL + " (bms_proto: discharge_mos_off)",
    ),
    StatusFlag(
        2,
        6,
        "536_COM_Timeout",
        A,
        "AFE ('536') communication timeout",
        M.COMMUNICATION,
        NONE,
        SRC_TOOL + " (bms_proto: host_536_com_timeout)",
    ),
    StatusFlag(3, 0, "Charging", S, "charging", M.CHARGING, NONE, SRC_TOOL + " (bms_proto: charging)"),
    StatusFlag(
        3, 1, "Discharging", S, "discharging", M.DISCHARGING, NONE, SRC_TOOL + " (bms_proto: discharging)"
    ),
    StatusFlag(
        3,
        2,
        "Short_Circuit_Prot",
        P,
        "short-circuit protection",
        M.SHORT_CIRCUIT,
        BOTH,
        SRC_TOOL + " (bms_proto: short_circuit_protection)",
    ),
    StatusFlag(
        3,
        3,
        "Over_Current_Prot",
        P,
        "over-current protection",
        M.OVERCURRENT,
        BOTH,
        SRC_TOOL + " (ov_cur_protection; direction not stated)",
    ),
    StatusFlag(
        3, 4, "Over_Voltage_Prot", P, "over-voltage protection (Shinwa spec)", M.OVERVOLTAGE, CHG, SRC_SHINWA
    ),
    StatusFlag(
        3,
        5,
        "Under_Voltage_Prot",
        P,
        "under-voltage protection (Shinwa spec)",
        M.UNDERVOLTAGE,
        DSG,
        SRC_SHINWA,
    ),
    StatusFlag(
        3,
        6,
        "CHG_OT_Prot",
        P,
        "charge over-temperature protection",
        M.CHARGE_OVERTEMPERATURE,
        CHG,
        SRC_TOOL + " (bms_proto: chg_ov_temp_protection)",
    ),
    StatusFlag(
        3,
        7,
        "CHG_UT_Prot",
        P,
        "charge under-temperature protection",
        M.CHARGE_UNDERTEMPERATURE,
        CHG,
        SRC_TOOL + " (bms_proto: chg_un_temp_protection)",
    ),
    StatusFlag(
        4,
        0,
        "ENV_UT_Prot",
        P,
        "ambient low-temperature protection",
        M.AMBIENT_UNDERTEMPERATURE,
        BOTH,
        SRC_TOOL + " (bms_proto: ambient_low_temp_protection)",
    ),
    StatusFlag(
        4,
        1,
        "ENV_OT_Prot",
        P,
        "ambient high-temperature protection",
        M.AMBIENT_OVERTEMPERATURE,
        BOTH,
        SRC_TOOL + " (bms_proto: ambient_high_temp_protection)",
    ),
    StatusFlag(4, 4, "SOC_Low_Prot", P, "SOC low protection", M.SOC_LOW, DSG, "reference 3.A.5 (bms_proto)"),
    StatusFlag(
        4,
        7,
        "Heater_Indicator",
        S,
        "heater-pad indicator (bms_proto)",
        M.HEATER,
        NONE,
        SRC_PROTO + " (heater_pad_indicator)",
    ),
    StatusFlag(5, 0, "Manual_CHG_MOS_Open", S, "charge MOS opened manually", M.MANUAL_MOS, NONE, SRC_TOOL),
    StatusFlag(
        5, 1, "Manual_CHG_MOS_Close", S, "charge MOS switched off manually", M.MANUAL_MOS, NONE, SRC_TOOL
    ),
    StatusFlag(5, 2, "Manual_DSG_MOS_Open", S, "discharge MOS opened manually", M.MANUAL_MOS, NONE, SRC_TOOL),
    StatusFlag(
        5, 3, "Manual_DSG_MOS_Close", S, "discharge MOS switched off manually", M.MANUAL_MOS, NONE, SRC_TOOL
    ),
    StatusFlag(
        5, 4, "Heating_Pad_On", S, "heating pad on", M.HEATER, NONE, SRC_TOOL + " (bms_proto: heating_pad)"
    ),
    StatusFlag(
        5,
        5,
        "MOS_OT_Prot",
        P,
        "MOSFET over-temperature protection",
        M.MOS_OVERTEMPERATURE,
        BOTH,
        SRC_TOOL + " (bms_proto: mosfet_ov_temp_protection)",
    ),
    StatusFlag(
        5,
        6,
        "MOS_UT_Prot",
        P,
        "MOSFET low-temperature protection",
        M.MOS_UNDERTEMPERATURE,
        BOTH,
        SRC_TOOL + " (bms_proto: mosfet_lo_temp_protection)",
    ),
    StatusFlag(
        5,
        7,
        "CHG_Low_Temp_Block",
        P,
        "charging blocked, temperature too low",
        M.CHARGE_UNDERTEMPERATURE,
        CHG,
        SRC_TOOL + " (bms_proto: chg_open_temp_too_low)",
    ),
    StatusFlag(
        7, 0, "SOC_Low2_Alarm", A, "SOC low 2", M.SOC_LOW, NONE, SRC_TOOL + " (bms_proto: soc_low_alarm2)"
    ),
    StatusFlag(
        7, 1, "Vibration_Alarm", A, "vibration", M.VIBRATION, NONE, SRC_TOOL + " (bms_proto: vibration_alarm)"
    ),
    StatusFlag(
        7,
        2,
        "Gap_Waite",
        S,
        "waiting to recharge during a break",
        M.WAITING,
        NONE,
        "vendor tool ('Gap waite'); PA1DVB's logger: Gap_power_make_up_waite",
    ),
    StatusFlag(
        7,
        3,
        "Fire_fighting_Alarm",
        F,
        "aerosol / fire-fighting alarm",
        M.FIRE,
        BOTH,
        SRC_TOOL + " (bms_proto: fire_fighting_alarm)" + SRC_BLOCK.format("fire alarm: stop"),
    ),
    StatusFlag(7, 4, "SOH_Low_Alarm", A, "SOH low", M.SOH_LOW, NONE, "reference 3.A.5 (GHswitt)"),
    StatusFlag(
        7,
        5,
        "NTC_Short_Circuit",
        F,
        "NTC (temperature sensor) short circuit",
        M.NTC_FAULT,
        NONE,
        "PA1DVB's logger: NTC_short_circuit (a temperature sensor fault, not a short-circuit "
        "protection); the temperature derating still sees the readings",
    ),
    StatusFlag(
        7,
        6,
        "Temp_Diff_Alarm",
        A,
        "temperature difference",
        M.TEMPERATURE_DIFFERENCE,
        NONE,
        "reference 3.A.5 (GHswitt)",
    ),
    StatusFlag(7, 7, "System_Lock", S, "system lock", M.LOCKED, NONE, "reference 3.A.5 (GHswitt)"),
    StatusFlag(
        8,
        0,
        "ENV_OT_Alarm",
        A,
        "ambient over-temperature alarm",
        M.AMBIENT_OVERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: amb_over_temp_alarm)",
    ),
    StatusFlag(
        8,
        1,
        "ENV_UT_Alarm",
        A,
        "ambient low-temperature alarm",
        M.AMBIENT_UNDERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: amb_low_temp_alarm)",
    ),
    StatusFlag(
        8,
        2,
        "MOS_OT_Alarm",
        A,
        "MOS over-temperature alarm",
        M.MOS_OVERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: mos_over_temp_alarm)",
    ),
    StatusFlag(
        8, 3, "SOC_Low_Alarm", A, "SOC low alarm", M.SOC_LOW, NONE, SRC_TOOL + " (bms_proto: soc_low_alarm)"
    ),
    StatusFlag(
        8,
        4,
        "Vol_Diff_Alarm",
        A,
        "cell voltage difference alarm",
        M.CELL_IMBALANCE,
        NONE,
        SRC_TOOL + " (bms_proto: vol_dif_alarm)",
    ),
    StatusFlag(
        8,
        5,
        "DISC_OT_Alarm",
        A,
        "discharge over-temperature alarm",
        M.DISCHARGE_OVERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: bat_disc_over_temp_alarm)",
    ),
    StatusFlag(
        8,
        6,
        "DISC_UT_Alarm",
        A,
        "discharge low-temperature alarm",
        M.DISCHARGE_UNDERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: bat_disc_low_temp_alarm)",
    ),
    StatusFlag(
        9,
        0,
        "CELL_OV_Alarm",
        A,
        "cell over-voltage alarm",
        M.CELL_OVERVOLTAGE,
        NONE,
        SRC_TOOL + " (bms_proto: cell_over_vol_alarm)",
    ),
    StatusFlag(
        9,
        1,
        "CELL_UV_Alarm",
        A,
        "cell under-voltage alarm",
        M.CELL_UNDERVOLTAGE,
        NONE,
        SRC_TOOL + " (bms_proto: cell_low_vol_alarm)",
    ),
    StatusFlag(
        9,
        2,
        "PACK_OV_Alarm",
        A,
        "pack over-voltage alarm",
        M.PACK_OVERVOLTAGE,
        NONE,
        SRC_TOOL + " (bms_proto: pack_over_vol_alarm)",
    ),
    StatusFlag(
        9,
        3,
        "PACK_UV_Alarm",
        A,
        "pack under-voltage alarm",
        M.PACK_UNDERVOLTAGE,
        NONE,
        SRC_TOOL + " (bms_proto: pack_low_vol_alarm)",
    ),
    StatusFlag(
        9,
        4,
        "CHG_OC_Alarm",
        A,
        "charge over-current alarm",
        M.CHARGE_OVERCURRENT,
        NONE,
        SRC_TOOL + " (bms_proto: chg_over_cur_alarm)",
    ),
    StatusFlag(
        9,
        5,
        "DISC_OC_Alarm",
        A,
        "discharge over-current alarm",
        M.DISCHARGE_OVERCURRENT,
        NONE,
        SRC_TOOL + " (bms_proto: disc_over_curr_alarm)",
    ),
    StatusFlag(
        9,
        6,
        "CHG_OT_Alarm",
        A,
        "charge over-temperature alarm",
        M.CHARGE_OVERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: bat_chg_over_temp_alarm)",
    ),
    StatusFlag(
        9,
        7,
        "CHG_UT_Alarm",
        A,
        "charge low-temperature alarm",
        M.CHARGE_UNDERTEMPERATURE,
        NONE,
        SRC_TOOL + " (bms_proto: bat_chg_low_temp_alarm)",
    ),
)

EXTRA_WORD = 10  # pseudo byte index of the group 0x0A word in `StatusFlag.byte`
# Group 0x0A extra protection word (bit numbers within the 16-bit word, high byte first on the wire).
EXTRA_PROTECTION_FLAGS: tuple[StatusFlag, ...] = (
    StatusFlag(
        EXTRA_WORD,
        0,
        "CELL_OV_Prot",
        P,
        "cell over-voltage protection",
        M.CELL_OVERVOLTAGE,
        CHG,
        SRC_TOOL + " (PA1DVB: Cell_Over_Prot)",
    ),
    StatusFlag(
        EXTRA_WORD,
        1,
        "PACK_OV_Prot",
        P,
        "pack over-voltage protection",
        M.PACK_OVERVOLTAGE,
        CHG,
        SRC_TOOL + " (PA1DVB: Pack_Over_Prot)",
    ),
    StatusFlag(
        EXTRA_WORD,
        2,
        "CELL_UV_Prot",
        P,
        "cell under-voltage protection",
        M.CELL_UNDERVOLTAGE,
        DSG,
        SRC_TOOL + " (PA1DVB: Cell_Under_Prot)",
    ),
    StatusFlag(
        EXTRA_WORD,
        3,
        "PACK_UV_Prot",
        P,
        "pack under-voltage protection",
        M.PACK_UNDERVOLTAGE,
        DSG,
        SRC_TOOL + " (PA1DVB: Pack_Under_Prot)",
    ),
    StatusFlag(
        EXTRA_WORD,
        13,
        "Full_Cha_Prot",
        P,
        "full-charge protection",
        M.FULL,
        CHG,
        SRC_TOOL + " (PA1DVB: Full_Cha_Prot, bms_proto: full_charge_protection)",
    ),
)

ALL_FLAGS = STATUS_FLAGS + EXTRA_PROTECTION_FLAGS
FLAGS_BY_NAME = {f.name: f for f in ALL_FLAGS}
_KNOWN_STATUS_BITS = {(f.byte, f.bit) for f in STATUS_FLAGS}
_KNOWN_EXTRA_BITS = {f.bit for f in EXTRA_PROTECTION_FLAGS}


def unknown_flag_name(byte: int, bit: int) -> str:
    return f"Status_B{byte}_Bit{bit}" if byte != EXTRA_WORD else f"Extra_Prot_Bit{bit}"


def undocumented_flag(byte: int, bit: int) -> FlagInfo:
    """The explicit table entry of a bit no source names: a state without output (as before)."""
    return FlagInfo(unknown_flag_name(byte, bit), S, M.UNDOCUMENTED, NONE, SRC_UNDOCUMENTED)


# Every bit position of group 0x06 and of the group 0x0A word, documented or not.
UNDOCUMENTED_FLAGS: tuple[FlagInfo, ...] = tuple(
    undocumented_flag(byte, bit)
    for byte in range(10)
    for bit in range(8)
    if (byte, bit) not in _KNOWN_STATUS_BITS
) + tuple(undocumented_flag(EXTRA_WORD, bit) for bit in range(16) if bit not in _KNOWN_EXTRA_BITS)
FLAG_TABLE: tuple[FlagInfo, ...] = tuple(f.info for f in ALL_FLAGS) + UNDOCUMENTED_FLAGS
FLAG_INFO_BY_NAME: dict[str, FlagInfo] = {f.name: f for f in FLAG_TABLE}


# --- typed result --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CellReading:
    voltage_v: float
    balancing: bool = False
    over_voltage: bool = False
    under_voltage: bool = False


@dataclass(frozen=True, slots=True)
class TempReading:
    tag: int  # high byte of the wire value (sensor tag)
    value_c: float

    @property
    def sensor(self) -> TempSensor:
        return TEMP_TAGS.get(self.tag, TempSensor.UNKNOWN)


@dataclass(frozen=True, slots=True)
class CounterGroup:
    group: int  # 0x0B and above
    values: tuple[int, ...]  # 32-bit raw values

    @property
    def hypothesis(self) -> str:
        return COUNTER_HYPOTHESES.get(self.group, "undocumented group")


@dataclass(frozen=True, slots=True)
class RealtimeData:
    """CMD 0x01 response, every group decoded (see the module docstring)."""

    cells: tuple[CellReading, ...]
    current_a: float  # positive = charging
    soc_pct: float  # raw / 100, not clamped (some firmwares report 100.01)
    full_capacity_ah: float
    temperatures: tuple[TempReading, ...]
    status: bytes  # the 10 status bytes of group 0x06
    cycles: int
    voltage_v: float
    soh_pct: float
    extra_protection: int | None = None  # group 0x0A word, absent on some firmwares
    counters: tuple[CounterGroup, ...] = ()

    @property
    def cell_voltages_v(self) -> tuple[float, ...]:
        return tuple(c.voltage_v for c in self.cells)

    @property
    def balancing_cells(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.cells, 1) if c.balancing)

    @property
    def remaining_capacity_ah(self) -> float:
        """Not sent by the pack; full capacity x SOC, as the vendor tool computes it."""
        return round(self.full_capacity_ah * min(self.soc_pct, 100.0) / 100.0, 2)

    def flags(self) -> tuple[StatusFlag, ...]:
        """Active named flags (status bytes and extra protection word)."""
        active = [f for f in STATUS_FLAGS if self.status[f.byte] >> f.bit & 1]
        if self.extra_protection is not None:
            active += [f for f in EXTRA_PROTECTION_FLAGS if self.extra_protection >> f.bit & 1]
        return tuple(active)

    def flag_names(self, kind: FlagKind | None = None) -> tuple[str, ...]:
        return tuple(f.name for f in self.flags() if kind is None or f.kind is kind)

    def active_flags(self) -> tuple[FlagInfo, ...]:
        """Every set bit with its meaning: the named flags, then the undocumented bits."""
        named = tuple(f.info for f in self.flags())
        return named + tuple(FLAG_INFO_BY_NAME[name] for name in self.unknown_bits())

    def unknown_bits(self) -> tuple[str, ...]:
        """Set bits that no source documents, by a stable placeholder name."""
        out = [
            unknown_flag_name(byte, bit)
            for byte in range(STATUS_BYTES)
            for bit in range(8)
            if self.status[byte] >> bit & 1 and (byte, bit) not in _KNOWN_STATUS_BITS
        ]
        if self.extra_protection is not None:
            out += [
                unknown_flag_name(EXTRA_WORD, bit)
                for bit in range(16)
                if self.extra_protection >> bit & 1 and bit not in _KNOWN_EXTRA_BITS
            ]
        return tuple(out)

    @property
    def charge_mos_on(self) -> bool:
        return not self.status[2] & 0x10

    @property
    def discharge_mos_on(self) -> bool:
        return not self.status[2] & 0x20

    @property
    def heater_on(self) -> bool:
        return bool(self.status[5] & 0x10)


# --- decode --------------------------------------------------------------------------------------


def walk_groups(data: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """Split DATA into (group id, raw values); RemoteProtocolError on a malformed group."""
    groups: list[tuple[int, tuple[int, ...]]] = []
    seen: set[int] = set()
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise RemoteProtocolError(f"realtime data: group header cut off at byte {i}")
        gid, count = data[i], data[i + 1]
        if gid in seen:
            raise RemoteProtocolError(f"realtime data: group 0x{gid:02X} appears twice")
        if gid == 0:
            raise RemoteProtocolError(f"realtime data: invalid group id 0x00 at byte {i}")
        seen.add(gid)
        width = 4 if gid >= WIDE_GROUPS_FROM else 2
        end = i + 2 + count * width
        if end > len(data):
            raise RemoteProtocolError(
                f"realtime data: group 0x{gid:02X} announces {count} values of {width} bytes, "
                f"only {len(data) - i - 2} bytes left"
            )
        values = tuple(int.from_bytes(data[j : j + width], "big") for j in range(i + 2, end, width))
        groups.append((gid, values))
        i = end
    return groups


def _single(gid: int, values: tuple[int, ...]) -> int:
    if len(values) != 1:
        raise RemoteProtocolError(
            f"realtime data: group 0x{gid:02X} ({GROUP_NAMES.get(gid, '?')}) "
            f"holds {len(values)} values, not 1"
        )
    return values[0]


def decode_realtime(data: bytes) -> RealtimeData:
    groups = dict(walk_groups(data))
    missing = [g for g in REQUIRED_GROUPS if g not in groups]
    if missing:
        names = ", ".join(f"0x{g:02X} ({GROUP_NAMES[g]})" for g in missing)
        raise RemoteProtocolError(f"realtime data lacks group(s) {names}")
    cells_raw = groups[G_CELLS]
    if not cells_raw:
        raise RemoteProtocolError("realtime data: no cell voltages")
    status_words = groups[G_STATUS]
    if len(status_words) != STATUS_BYTES // 2:
        raise RemoteProtocolError(f"realtime data: status group has {len(status_words)} words, expected 5")
    cells = tuple(
        CellReading(
            voltage_v=(v & CELL_MV_MASK) / 1000.0,
            balancing=bool(v >> 8 & CELL_BALANCING),
            over_voltage=bool(v >> 8 & CELL_OVER_VOLTAGE),
            under_voltage=bool(v >> 8 & CELL_UNDER_VOLTAGE),
        )
        for v in cells_raw
    )
    temps = tuple(
        TempReading(tag=v >> 8, value_c=float((v & 0xFF) - TEMP_OFFSET_C)) for v in groups[G_TEMPERATURES]
    )
    extra = groups.get(G_EXTRA_PROTECTION)
    counters = tuple(CounterGroup(gid, vals) for gid, vals in groups.items() if gid >= WIDE_GROUPS_FROM)
    return RealtimeData(
        cells=cells,
        current_a=round((CURRENT_OFFSET - _single(G_CURRENT, groups[G_CURRENT])) / 100.0, 2),
        soc_pct=_single(G_SOC, groups[G_SOC]) / 100.0,
        full_capacity_ah=_single(G_FULL_CAPACITY, groups[G_FULL_CAPACITY]) / 100.0,
        temperatures=temps,
        status=b"".join(w.to_bytes(2, "big") for w in status_words),
        cycles=_single(G_CYCLES, groups[G_CYCLES]),
        voltage_v=_single(G_VOLTAGE, groups[G_VOLTAGE]) / 100.0,
        soh_pct=_single(G_SOH, groups[G_SOH]) / 100.0,
        extra_protection=None if extra is None else _single(G_EXTRA_PROTECTION, extra),
        counters=counters,
    )


# --- encode (the simulator's response builder) ----------------------------------------------------


def _u16(name: str, value: float) -> int:
    raw = round(value)
    if not 0 <= raw <= 0xFFFF:
        raise LocalProtocolError(f"{name}: {value!r} does not fit 16 bits")
    return raw


def _group(gid: int, values: Iterable[int]) -> bytes:
    vals = list(values)
    if len(vals) > 0xFF:
        raise LocalProtocolError(f"group 0x{gid:02X}: {len(vals)} values do not fit the count byte")
    width = 4 if gid >= WIDE_GROUPS_FROM else 2
    out = bytearray((gid, len(vals)))
    for v in vals:
        if not 0 <= v < 1 << (8 * width):
            raise LocalProtocolError(f"group 0x{gid:02X}: value {v} does not fit {width} bytes")
        out += v.to_bytes(width, "big")
    return bytes(out)


def encode_realtime_data(rt: RealtimeData) -> bytes:
    """DATA of a CMD 0x01 response for `rt` (groups in the order real packs send them)."""
    if not rt.cells:
        raise LocalProtocolError("realtime data needs at least one cell")
    if len(rt.status) != STATUS_BYTES:
        raise LocalProtocolError(f"status must be {STATUS_BYTES} bytes, got {len(rt.status)}")
    cells = []
    for i, c in enumerate(rt.cells, 1):
        mv = _u16(f"cell {i}", c.voltage_v * 1000.0)
        if mv > CELL_MV_MASK:
            raise LocalProtocolError(f"cell {i}: {c.voltage_v} V does not fit 13 bits of mV")
        flags = (
            (CELL_BALANCING if c.balancing else 0)
            | (CELL_OVER_VOLTAGE if c.over_voltage else 0)
            | (CELL_UNDER_VOLTAGE if c.under_voltage else 0)
        )
        cells.append(flags << 8 | mv)
    temps = []
    for t in rt.temperatures:
        low = round(t.value_c) + TEMP_OFFSET_C
        if not 0 <= low <= 0xFF or not 0 <= t.tag <= 0xFF:
            raise LocalProtocolError(f"temperature {t.value_c} degC / tag {t.tag} does not fit")
        temps.append(t.tag << 8 | low)
    out = bytearray()
    out += _group(G_CELLS, cells)
    out += _group(G_CURRENT, [_u16("current", CURRENT_OFFSET - rt.current_a * 100.0)])
    out += _group(G_SOC, [_u16("soc", rt.soc_pct * 100.0)])
    out += _group(G_FULL_CAPACITY, [_u16("full capacity", rt.full_capacity_ah * 100.0)])
    out += _group(G_TEMPERATURES, temps)
    out += _group(G_STATUS, [int.from_bytes(rt.status[i : i + 2], "big") for i in range(0, STATUS_BYTES, 2)])
    out += _group(G_CYCLES, [_u16("cycles", rt.cycles)])
    out += _group(G_VOLTAGE, [_u16("voltage", rt.voltage_v * 100.0)])
    out += _group(G_SOH, [_u16("soh", rt.soh_pct * 100.0)])
    if rt.extra_protection is not None:
        out += _group(G_EXTRA_PROTECTION, [_u16("extra protection", rt.extra_protection)])
    for cg in rt.counters:
        if cg.group < WIDE_GROUPS_FROM:
            raise LocalProtocolError(f"counter group id 0x{cg.group:02X} must be 0x0B or above")
        out += _group(cg.group, cg.values)
    return bytes(out)


def status_bytes(*names: str) -> bytes:
    """The 10 status bytes with the named flags set (helper for simulators and tests)."""
    buf = bytearray(STATUS_BYTES)
    for name in names:
        flag = FLAGS_BY_NAME.get(name)
        if flag is None or flag.byte == EXTRA_WORD:
            raise LocalProtocolError(f"{name!r} is not a status-byte flag")
        buf[flag.byte] |= 1 << flag.bit
    return bytes(buf)


def extra_protection_word(*names: str) -> int:
    word = 0
    for name in names:
        flag = FLAGS_BY_NAME.get(name)
        if flag is None or flag.byte != EXTRA_WORD:
            raise LocalProtocolError(f"{name!r} is not an extra-protection flag")
        word |= 1 << flag.bit
    return word
