"""PACE commands: the CID2 table, request builders, request parsers and the remaining payloads
(parameter groups, identity strings, clock, capacities, history, switches, protocol selection).

Layouts are tables; every payload has a decoder and a mirror encoder. Writes that are not publicly
documented are marked `inferred` here and refused by the driver unless the caller opts in.

This module is sans-I/O: it must never import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from protocol.bms import bootloader as bl
from protocol.bms.pace.frame import (
    BOOT_CODES,
    CID1_EG4,
    CID1_LFP,
    VER_20,
    VER_25,
    PaceFrame,
    encode_frame,
)
from protocol.bms.pace.values import (
    Reader,
    Variant,
    _u8,
    _u16,
    temp_from_wire,
    temp_to_wire,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError


class Cmd(enum.IntEnum):
    """CID2 command codes (v25 unless marked v20)."""

    ANALOG = 0x42
    STATUS = 0x44
    SYSTEM_PARAMETERS = 0x47  # v20 (Pylon-style); v25 packs answer CID2 invalid
    V20_READ_TIME = 0x4D
    V20_WRITE_TIME = 0x4E
    PROTOCOL_VERSION = 0x4F
    V20_MANUFACTURER = 0x51
    PACK_COUNT = 0x90
    V20_SERIAL = 0x93
    V20_SHUTDOWN = 0x95
    SWITCH = 0x99
    CHARGE_MOS = 0x9A
    DISCHARGE_MOS = 0x9B
    SHUTDOWN = 0x9C
    READ_SLEEP = 0xA0
    READ_HISTORY = 0xA1
    READ_CAPACITIES = 0xA6
    WRITE_SLEEP = 0xA8
    WRITE_FULL_CHARGE = 0xAE
    READ_FULL_CHARGE = 0xAF
    READ_TIME = 0xB1
    WRITE_TIME = 0xB2
    WRITE_BALANCE = 0xB5
    READ_BALANCE = 0xB6
    HARDWARE_VERSION = 0xC1
    SERIAL_NUMBER = 0xC2
    WRITE_CELL_OV = 0xD0
    READ_CELL_OV = 0xD1
    WRITE_CELL_UV = 0xD2
    READ_CELL_UV = 0xD3
    WRITE_PACK_OV = 0xD4
    READ_PACK_OV = 0xD5
    WRITE_PACK_UV = 0xD6
    READ_PACK_UV = 0xD7
    WRITE_CHARGE_OC = 0xD8
    READ_CHARGE_OC = 0xD9
    WRITE_DISCHARGE_OC1 = 0xDA
    READ_DISCHARGE_OC1 = 0xDB
    WRITE_CD_OT = 0xDC
    READ_CD_OT = 0xDD
    WRITE_CD_UT = 0xDE
    READ_CD_UT = 0xDF
    WRITE_MOS_OT = 0xE0
    READ_MOS_OT = 0xE1
    WRITE_DISCHARGE_OC2 = 0xE2
    READ_DISCHARGE_OC2 = 0xE3
    WRITE_SHORT_CIRCUIT = 0xE4
    READ_SHORT_CIRCUIT = 0xE5
    WRITE_ENVIRONMENT_T = 0xE6
    READ_ENVIRONMENT_T = 0xE7
    READ_PROTOCOLS = 0xEB
    WRITE_PROTOCOLS = 0xEC
    READ_LIMITER_CURRENT = 0xED
    WRITE_LIMITER_CURRENT = 0xEE
    # bms-gateway's own firmware-upgrade protocol (not PACE's), see protocol.bms.bootloader
    BOOT_ENTER = 0xF0
    BOOT_BLOCK = 0xF1
    BOOT_VERIFY = 0xF2
    BOOT_REBOOT = 0xF3
    BOOT_STATUS = 0xF4


def command_name(cid2: int) -> str:
    try:
        return Cmd(cid2).name.lower()
    except ValueError:
        return f"unknown_0x{cid2:02X}"


# ------------------------------------------------------------------------------------------------
# request building


def request(
    address: int, cid2: int, info: bytes = b"", *, version: int = VER_25, cid1: int = CID1_LFP
) -> bytes:
    if not 0 <= address <= 0xFF:
        raise LocalProtocolError(f"PACE address {address} out of range 0..255")
    return encode_frame(version, address, cid1, cid2, info)


def response(
    address: int, rtn: int, info: bytes = b"", *, version: int = VER_25, cid1: int = CID1_LFP
) -> bytes:
    """A response frame (the simulator answers with the VER and CID1 of the request)."""
    return encode_frame(version, address, cid1, rtn, info)


def variant_of(version: int, cid1: int) -> Variant:
    if version == VER_25:
        return Variant.V25
    return Variant.EG4 if cid1 == CID1_EG4 else Variant.V20


BANK = 0xFF  # INFO command value: every pack of the bank, answered by the master


def analog_request(address: int, *, bank: bool = False, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    """Analog read; `bank=True` asks the master at `address` for every pack (INFO 0xFF).
    EG4 (v20, CID1 0x4A) sends an empty INFO."""
    if variant_of(version, cid1) is Variant.EG4:
        if bank:
            raise LocalProtocolError("EG4 v20 has no whole-bank read")
        return request(address, Cmd.ANALOG, b"", version=version, cid1=cid1)
    return request(address, Cmd.ANALOG, bytes([BANK if bank else address]), version=version, cid1=cid1)


def status_request(address: int, *, bank: bool = False, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    if variant_of(version, cid1) is Variant.EG4:
        if bank:
            raise LocalProtocolError("EG4 v20 has no whole-bank read")
        return request(address, Cmd.STATUS, b"", version=version, cid1=cid1)
    return request(address, Cmd.STATUS, bytes([BANK if bank else address]), version=version, cid1=cid1)


def pack_count_request(address: int, *, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    """Number of packs in the bank, asked of the master (CID2 0x90, empty INFO)."""
    return request(address, Cmd.PACK_COUNT, b"", version=version, cid1=cid1)


def simple_request(address: int, cid2: int, *, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    """Requests with an empty INFO (identity, clock, parameter group reads, capacities, ...)."""
    return request(address, cid2, b"", version=version, cid1=cid1)


def version_probe(address: int) -> bytes:
    """Protocol version query (VER 0x20, CID1 0x46, CID2 0x4F): any PACE pack answers it."""
    return request(address, Cmd.PROTOCOL_VERSION, b"", version=VER_20, cid1=CID1_LFP)


# ------------------------------------------------------------------------------------------------
# simple payloads


def decode_pack_count(info: bytes) -> int:
    r = Reader(info, "pack count response")
    return r.u8("pack count")


def encode_pack_count(count: int) -> bytes:
    return _u8(count, "pack count")


def decode_text(info: bytes) -> str:
    """An ASCII identity string (hardware version, serial number): NUL and space padding removed,
    non-printable bytes shown as \\xNN so nothing is silently lost."""
    text = "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in info.rstrip(b"\x00 "))
    return text.strip()


def encode_text(text: str, width: int) -> bytes:
    data = text.encode("ascii", errors="strict")
    if len(data) > width:
        raise LocalProtocolError(f"identity string {text!r} longer than {width} characters")
    return data.ljust(width, b" ")


@dataclass(frozen=True, slots=True)
class ManufacturerV20:
    """CID2 0x51 (v20, and v25 firmwares that answer it). Pylon-style packs send device name (10),
    software version (2 bytes) and manufacturer (20); other lengths (EG4) are shown as cleaned text."""

    device_name: str | None
    software_version: tuple[int, int] | None
    manufacturer: str | None
    text: str


def decode_manufacturer_v20(info: bytes) -> ManufacturerV20:
    if len(info) == 32:
        return ManufacturerV20(
            decode_text(info[:10]), (info[10], info[11]), decode_text(info[12:]), decode_text(info)
        )
    return ManufacturerV20(None, None, None, decode_text(info))


def encode_manufacturer_v20(device_name: str, software_version: tuple[int, int], manufacturer: str) -> bytes:
    return (
        encode_text(device_name, 10)
        + _u8(software_version[0], "version major")
        + _u8(software_version[1], "version minor")
        + encode_text(manufacturer, 20)
    )


# ---- system parameters (CID2 0x47, Pylon-style layout; many v25 firmwares answer CID2 invalid)

SYSTEM_PARAMETER_FIELDS: tuple[tuple[str, str], ...] = (
    ("cell_high_voltage_v", "mV"),
    ("cell_low_voltage_v", "mV"),
    ("cell_under_voltage_v", "mV"),
    ("charge_high_temperature_c", "dK"),
    ("charge_low_temperature_c", "dK"),
    ("charge_current_limit_a", "dA"),
    ("module_high_voltage_v", "mV"),
    ("module_low_voltage_v", "mV"),
    ("module_under_voltage_v", "mV"),
    ("discharge_high_temperature_c", "dK"),
    ("discharge_low_temperature_c", "dK"),
    ("discharge_current_limit_a", "dA"),
)


@dataclass(frozen=True, slots=True)
class SystemParameters:
    """CID2 0x47: limits (V, °C, A; the current limits are signed 0.1 A on the wire)."""

    cell_high_voltage_v: float
    cell_low_voltage_v: float
    cell_under_voltage_v: float
    charge_high_temperature_c: float
    charge_low_temperature_c: float
    charge_current_limit_a: float
    module_high_voltage_v: float
    module_low_voltage_v: float
    module_under_voltage_v: float
    discharge_high_temperature_c: float
    discharge_low_temperature_c: float
    discharge_current_limit_a: float
    info_flag: int | None = None  # Pylon packs lead with an INFOFLAG byte


def decode_system_parameters(info: bytes) -> SystemParameters:
    r = Reader(info, "system parameters")
    flag = r.u8("INFOFLAG") if len(info) == 2 * len(SYSTEM_PARAMETER_FIELDS) + 1 else None
    vals: dict[str, float] = {}
    for name, unit in SYSTEM_PARAMETER_FIELDS:
        if unit == "mV":
            vals[name] = r.u16(name) / 1000.0
        elif unit == "dK":
            vals[name] = temp_from_wire(r.u16(name))
        else:
            vals[name] = r.s16(name) / 10.0
    if r.remaining:
        raise RemoteProtocolError(f"PACE system parameters: {r.remaining} unexpected trailing byte(s)")
    return SystemParameters(**vals, info_flag=flag)


def encode_system_parameters(sp: SystemParameters) -> bytes:
    out = bytearray() if sp.info_flag is None else bytearray(_u8(sp.info_flag, "INFOFLAG"))
    for name, unit in SYSTEM_PARAMETER_FIELDS:
        value = getattr(sp, name)
        if unit == "mV":
            out += _u16(round(value * 1000), name)
        elif unit == "dK":
            out += _u16(temp_to_wire(value), name)
        else:
            raw = round(value * 10)
            if not -0x8000 <= raw <= 0x7FFF:
                raise LocalProtocolError(f"{name} {value} does not fit")
            out += raw.to_bytes(2, "big", signed=True)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Capacities:
    """CID2 0xA6: remaining, actual (full) and design capacity."""

    remaining_ah: float
    full_ah: float
    design_ah: float


def decode_capacities(info: bytes) -> Capacities:
    r = Reader(info, "capacity response")
    return Capacities(
        r.u16("remaining capacity") / 100.0, r.u16("full capacity") / 100.0, r.u16("design capacity") / 100.0
    )


def encode_capacities(c: Capacities) -> bytes:
    return (
        _u16(round(c.remaining_ah * 100), "remaining capacity")
        + _u16(round(c.full_ah * 100), "full capacity")
        + _u16(round(c.design_ah * 100), "design capacity")
    )


def decode_datetime(info: bytes, variant: Variant) -> dt.datetime:
    """Pack clock: v25 year as YY (+2000), v20 year as 16 bits; then month, day, h, m, s."""
    r = Reader(info, "date/time")
    year = r.u8("year") + 2000 if variant is Variant.V25 else r.u16("year")
    month, day, hour, minute, second = (r.u8(n) for n in ("month", "day", "hour", "minute", "second"))
    parts = (month, day, hour, minute, second)
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise RemoteProtocolError(f"PACE date/time {year}-{parts} is not a valid time: {err}") from None


def encode_datetime(when: dt.datetime, variant: Variant) -> bytes:
    if variant is Variant.V25:
        if not 2000 <= when.year <= 2255:
            raise LocalProtocolError(f"year {when.year} cannot be sent as YY")
        out = _u8(when.year - 2000, "year")
    else:
        out = _u16(when.year, "year")
    return out + bytes([when.month, when.day, when.hour, when.minute, when.second])


# ---- inverter protocol selection (CID2 0xEB read / 0xEC write)

CAN_PROTOCOLS: dict[int, str] = {
    0x00: "PACE",
    0x01: "Pylon / DeYe / CHNT Power / LiVolTek / Megarevo / SunSynk / SunGrow / Sol-Ark / SolarEdge",
    0x02: "Growatt / Sacolar",
    0x03: "Victron",
    0x04: "Schneider / SE / SMA",
    0x05: "LuxPower",
    0x06: "SoroTec / SRD",
    0x07: "SMA / Studer",
    0x08: "GoodWe",
    0x09: "Studer",
    0x0A: "Sofar",
    0x0B: "Must / PV",
    0x0C: "Solis / Jinlang / JL",
    0x0D: "DIDU / TBB",
    0x0E: "Senergy / Aifu",
    0x0F: "TBB",
    0x10: "Pylon_V202",
    0x11: "Growatt_V109",
    0x12: "Must_V202",
    0x13: "Afore",
    0x14: "INVT / YWT",
    0x15: "FUJI",
    0x16: "Sofar_V21003",
    0xFF: "(blank)",
}

RS485_PROTOCOLS: dict[int, str] = {
    0x00: "Pace Modbus",
    0x01: "Pylon / DeYe / Bentterson",
    0x02: "Growatt",
    0x03: "Voltronic / EA Sun Power / MPP Solar",
    0x04: "Schneider / SE",
    0x05: "PHOCOS",
    0x06: "LuxPower",
    0x07: "Solar",
    0x08: "Lithium / SMARK",
    0x09: "EP / MSL",
    0x0A: "RTU04",
    0x0B: "LuxPower_V01",
    0x0C: "LuxPower_V03",
    0x0D: "SRNE / WOW",
    0x0E: "LEOCH",
    0x0F: "Pylon_F",
    0x10: "Afore",
    0x11: "UPS_AGXN",
    0x12: "Orex_Sunpolo",
    0x13: "XIONGTAO",
    0x14: "RONGKE",
    0x15: "XINRUI",
    0x16: "ELTEK",
    0x17: "GT",
    0x18: "Leoch_V106",
    0xFF: "(blank)",
}

PROTOCOL_MODES: dict[int, str] = {0x00: "auto", 0x01: "manual", 0xFF: "(blank)"}


@dataclass(frozen=True, slots=True)
class Protocols:
    can: int
    rs485: int
    mode: int  # 0 auto, 1 manual

    @property
    def can_name(self) -> str:
        return CAN_PROTOCOLS.get(self.can, f"unknown 0x{self.can:02X}")

    @property
    def rs485_name(self) -> str:
        return RS485_PROTOCOLS.get(self.rs485, f"unknown 0x{self.rs485:02X}")

    @property
    def mode_name(self) -> str:
        return PROTOCOL_MODES.get(self.mode, f"unknown 0x{self.mode:02X}")

    def validate(self) -> None:
        """Refuse codes outside the documented tables (before anything reaches a bus)."""
        if self.can not in CAN_PROTOCOLS:
            raise LocalProtocolError(f"CAN protocol code 0x{self.can:02X} is not in the PACE CAN table")
        if self.rs485 not in RS485_PROTOCOLS:
            raise LocalProtocolError(f"RS485 protocol code 0x{self.rs485:02X} is not in the PACE RS485 table")
        if self.mode not in PROTOCOL_MODES:
            raise LocalProtocolError(f"protocol mode 0x{self.mode:02X} is not auto (0) or manual (1)")


def decode_protocols(info: bytes) -> Protocols:
    r = Reader(info, "protocol selection")
    return Protocols(r.u8("CAN protocol"), r.u8("RS485 protocol"), r.u8("mode"))


def encode_protocols(p: Protocols) -> bytes:
    return _u8(p.can, "CAN protocol") + _u8(p.rs485, "RS485 protocol") + _u8(p.mode, "mode")


# ---- switches (CID2 0x99) and MOSFETs (0x9A / 0x9B)


class SwitchCode(enum.IntEnum):
    """Payload of CID2 0x99 (values as PbmsTools sends them on the wire)."""

    LED_ALARM_OFF = 0x06
    LED_ALARM_ON = 0x07
    LIMITER_HIGH_GEAR = 0x08
    LIMITER_LOW_GEAR = 0x09
    LIMITER_OFF = 0x0A
    LIMITER_ON = 0x0B
    BUZZER_OFF = 0x0C
    BUZZER_ON = 0x0D


@dataclass(frozen=True, slots=True)
class SwitchAck:
    """Answer to CID2 0x99: the switch code echoed and the configuration status byte afterwards."""

    code: int
    configuration: int


def decode_switch_ack(info: bytes) -> SwitchAck:
    r = Reader(info, "switch answer")
    return SwitchAck(r.u8("switch code"), r.u8("configuration"))


def encode_switch_ack(a: SwitchAck) -> bytes:
    return _u8(a.code, "switch code") + _u8(a.configuration, "configuration")


# MOSFET payload. *Inferred* from the captures: after payload 00 the answer's system-status byte has
# the MOSFET's "on" bit set, after 01 it is clear (public sources disagree on the naming), so
# 00 = switch on, 01 = switch off. The driver verifies the state in the answer.
MOS_ON = 0x00
MOS_OFF = 0x01


def decode_mos_ack(info: bytes) -> int:
    """Answer to CID2 0x9A/0x9B: the system status byte afterwards."""
    return Reader(info, "MOSFET answer").u8("system status")


# ---- history records (CID2 0xA1)


@dataclass(frozen=True, slots=True)
class HistoryRecordV25:
    """One stored record. The 12 bytes after the capacities (alarm/protection/fault types, per
    PbmsTools' columns) are not publicly decoded: kept raw in `tail`."""

    recorded_at: dt.datetime
    cell_voltages_v: tuple[float, ...]
    temperatures_c: tuple[float, ...]
    current_a: float
    voltage_v: float
    remaining_ah: float
    full_ah: float
    tail: bytes = b""


def history_request(address: int, index: int, *, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    """Record number `index` (0 = newest)."""
    return request(address, Cmd.READ_HISTORY, _u16(index, "history index"), version=version, cid1=cid1)


def decode_history(info: bytes) -> HistoryRecordV25 | None:
    """None for the empty answer that means "no more records"."""
    if not info:
        return None
    when = decode_datetime(info[:6], Variant.V25)
    r = Reader(info[6:], "history record")
    m = r.u8("cell count")
    cells = tuple(r.u16(f"cell {i + 1} voltage") / 1000.0 for i in range(m))
    n = r.u8("temperature count")
    temps = tuple(temp_from_wire(r.u16(f"temperature {i + 1}")) for i in range(n))
    current = r.s16("current") / 100.0
    voltage = r.u16("pack voltage") / 1000.0
    remaining = r.u16("remaining capacity") / 100.0
    full = r.u16("full capacity") / 100.0
    return HistoryRecordV25(when, cells, temps, current, voltage, remaining, full, r.rest())


def encode_history(rec: HistoryRecordV25) -> bytes:
    out = bytearray(encode_datetime(rec.recorded_at, Variant.V25))
    out += _u8(len(rec.cell_voltages_v), "cell count")
    for v in rec.cell_voltages_v:
        out += _u16(round(v * 1000), "cell voltage")
    out += _u8(len(rec.temperatures_c), "temperature count")
    for t in rec.temperatures_c:
        out += _u16(temp_to_wire(t), "temperature")
    out += round(rec.current_a * 100).to_bytes(2, "big", signed=True)
    out += _u16(round(rec.voltage_v * 1000), "pack voltage")
    out += _u16(round(rec.remaining_ah * 100), "remaining capacity")
    out += _u16(round(rec.full_ah * 100), "full capacity")
    return bytes(out + rec.tail)


# ------------------------------------------------------------------------------------------------
# parameter groups (read/write pairs of the PbmsTools "Parameter Setting" and "System Configuration")


class FieldKind(enum.StrEnum):
    U8 = "u8"
    U16 = "u16"
    U16_NEG_READ = "u16_neg_read"  # read as negative two's complement, written positive


@dataclass(frozen=True, slots=True)
class GroupField:
    name: str
    kind: FieldKind

    @property
    def size(self) -> int:
        return 1 if self.kind is FieldKind.U8 else 2


@dataclass(frozen=True, slots=True)
class GroupLayout:
    key: str
    read: int  # CID2 of the read
    write: int  # CID2 of the write
    lead: bool  # a leading command-value byte precedes the fields (read answer and write request)
    fields: tuple[GroupField, ...]
    title: str

    def index(self, name: str) -> int:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(f"{self.key} has no field {name!r}")


def _f(*spec: tuple[str, FieldKind]) -> tuple[GroupField, ...]:
    return tuple(GroupField(n, k) for n, k in spec)


U8, U16, NEG = FieldKind.U8, FieldKind.U16, FieldKind.U16_NEG_READ
_V4 = _f(("alarm", U16), ("protect", U16), ("release", U16), ("delay", U8))
_T6 = _f(*((n, U16) for n in ("t1", "t2", "t3", "t4", "t5", "t6")))

PARAM_GROUPS: tuple[GroupLayout, ...] = (
    GroupLayout("cell_ov", 0xD1, 0xD0, True, _V4, "Cell over-voltage"),
    GroupLayout("pack_ov", 0xD5, 0xD4, True, _V4, "Pack over-voltage"),
    GroupLayout("cell_uv", 0xD3, 0xD2, True, _V4, "Cell under-voltage"),
    GroupLayout("pack_uv", 0xD7, 0xD6, True, _V4, "Pack under-voltage"),
    GroupLayout(
        "charge_oc",
        0xD9,
        0xD8,
        True,
        _f(("alarm", U16), ("protect", U16), ("delay", U8)),
        "Charge over-current",
    ),
    GroupLayout(
        "discharge_oc1",
        0xDB,
        0xDA,
        True,
        _f(("alarm", NEG), ("protect", NEG), ("delay", U8)),
        "Discharge over-current 1",
    ),
    GroupLayout(
        "discharge_oc2", 0xE3, 0xE2, True, _f(("protect", U8), ("delay", U8)), "Discharge over-current 2"
    ),
    GroupLayout("short_circuit", 0xE5, 0xE4, False, _f(("delay", U8)), "Short circuit"),
    GroupLayout("balance", 0xB6, 0xB5, False, _f(("threshold", U16), ("delta", U16)), "Cell balancing"),
    GroupLayout("sleep", 0xA0, 0xA8, False, _f(("cell", U16), ("reserved", U8), ("delay", U8)), "Sleep"),
    GroupLayout(
        "full_charge",
        0xAF,
        0xAE,
        False,
        _f(("voltage", U16), ("current", U16), ("low_soc", U8)),
        "Full charge / low charge",
    ),
    GroupLayout("cd_ot", 0xDD, 0xDC, True, _T6, "Charge/discharge over-temperature"),
    GroupLayout("cd_ut", 0xDF, 0xDE, True, _T6, "Charge/discharge under-temperature"),
    GroupLayout(
        "mos_ot",
        0xE1,
        0xE0,
        True,
        _f(("alarm", U16), ("protect", U16), ("release", U16)),
        "MOSFET over-temperature",
    ),
    GroupLayout("environment_t", 0xE7, 0xE6, True, _T6, "Environment under/over-temperature"),
    GroupLayout("limiter", 0xED, 0xEE, True, _f(("current", U8)), "Charge current limiter start current"),
)

GROUPS_BY_READ = {g.read: g for g in PARAM_GROUPS}
GROUPS_BY_WRITE = {g.write: g for g in PARAM_GROUPS}
GROUPS_BY_KEY = {g.key: g for g in PARAM_GROUPS}


@dataclass(frozen=True, slots=True)
class GroupValues:
    """A parameter group's wire values (unscaled), in the layout's field order.

    `lead` is the leading command-value byte (None when the group has none): a write sends back the
    value that was read. `extra` keeps bytes some firmwares append to a read answer (E3 sends its
    fields twice); they are never written.
    """

    key: str
    values: tuple[int, ...]
    lead: int | None = None
    extra: bytes = b""

    @property
    def layout(self) -> GroupLayout:
        return GROUPS_BY_KEY[self.key]

    def replace(self, updates: dict[int, int]) -> GroupValues:
        vals = list(self.values)
        for i, v in updates.items():
            vals[i] = v
        return GroupValues(self.key, tuple(vals), self.lead, self.extra)


def _decode_group(layout: GroupLayout, info: bytes, *, is_read: bool) -> GroupValues:
    r = Reader(info, f"{layout.key} parameters")
    lead = r.u8("command value") if layout.lead else None
    vals: list[int] = []
    for f in layout.fields:
        if f.kind is FieldKind.U8:
            vals.append(r.u8(f.name))
        elif f.kind is FieldKind.U16_NEG_READ and is_read:
            vals.append(-r.s16(f.name))
        else:
            vals.append(r.u16(f.name))
    extra = r.rest()
    if extra and not is_read:
        raise RemoteProtocolError(f"PACE {layout.key} write carries {len(extra)} unexpected trailing byte(s)")
    return GroupValues(layout.key, tuple(vals), lead, extra)


def _encode_group(g: GroupValues, *, is_read: bool) -> bytes:
    layout = g.layout
    if len(g.values) != len(layout.fields):
        raise LocalProtocolError(f"{layout.key} needs {len(layout.fields)} values, got {len(g.values)}")
    out = bytearray()
    if layout.lead:
        out += _u8(1 if g.lead is None else g.lead, "command value")
    for f, v in zip(layout.fields, g.values, strict=True):
        if f.kind is FieldKind.U8:
            out += _u8(v, f"{layout.key}.{f.name}")
        elif f.kind is FieldKind.U16_NEG_READ and is_read:
            if not 0 <= v <= 0x8000:
                raise LocalProtocolError(f"{layout.key}.{f.name} {v} does not fit")
            out += (-v).to_bytes(2, "big", signed=True)
        else:
            out += _u16(v, f"{layout.key}.{f.name}")
    if is_read:
        out += g.extra
    return bytes(out)


def decode_group_read(read_cid2: int, info: bytes) -> GroupValues:
    """The answer to a parameter-group read (CID2 = the read command)."""
    try:
        layout = GROUPS_BY_READ[read_cid2]
    except KeyError:
        raise LocalProtocolError(f"0x{read_cid2:02X} is not a PACE parameter-group read") from None
    return _decode_group(layout, info, is_read=True)


def encode_group_read(g: GroupValues) -> bytes:
    """INFO of the answer to a group read (simulator)."""
    return _encode_group(g, is_read=True)


def group_write_request(
    address: int, g: GroupValues, *, version: int = VER_25, cid1: int = CID1_LFP
) -> bytes:
    return request(address, g.layout.write, _encode_group(g, is_read=False), version=version, cid1=cid1)


def decode_group_write(write_cid2: int, info: bytes) -> GroupValues:
    """INFO of a group-write request (simulator)."""
    try:
        layout = GROUPS_BY_WRITE[write_cid2]
    except KeyError:
        raise RemoteProtocolError(f"0x{write_cid2:02X} is not a PACE parameter-group write") from None
    return _decode_group(layout, info, is_read=False)


# ------------------------------------------------------------------------------------------------
# request parsing (the simulator's and the `decode` command's view of a master's request)


@dataclass(frozen=True, slots=True)
class PaceRequest:
    """A master's request, typed. `command_value` is the 1-byte INFO of analog/status reads
    (the address, or 0xFF for the whole bank)."""

    version: int
    address: int
    cid1: int
    cid2: int
    name: str
    command_value: int | None = None
    argument: Any = None  # typed payload: GroupValues, datetime, Protocols, SwitchCode, int, ...

    @property
    def variant(self) -> Variant:
        return variant_of(self.version, self.cid1)

    @property
    def bank(self) -> bool:
        return self.command_value == BANK


_EMPTY_INFO = frozenset(
    {
        Cmd.PROTOCOL_VERSION,
        Cmd.V20_MANUFACTURER,
        Cmd.V20_READ_TIME,
        Cmd.V20_SERIAL,
        Cmd.PACK_COUNT,
        Cmd.READ_CAPACITIES,
        Cmd.READ_TIME,
        Cmd.HARDWARE_VERSION,
        Cmd.SERIAL_NUMBER,
        Cmd.READ_PROTOCOLS,
        *GROUPS_BY_READ,
    }
)


def parse_request(frame: PaceFrame) -> PaceRequest:
    """Type a request frame; RemoteProtocolError when its INFO does not fit the command."""
    if not frame.is_request:
        raise RemoteProtocolError(f"PACE frame with CID2 0x{frame.command:02X} is not a request")
    cid2, info = frame.command, frame.info
    variant = variant_of(frame.version, frame.cid1)
    base = {"version": frame.version, "address": frame.address, "cid1": frame.cid1, "cid2": cid2}
    name = command_name(cid2)
    r = Reader(info, f"{name} request")
    if cid2 in (Cmd.ANALOG, Cmd.STATUS, Cmd.SYSTEM_PARAMETERS):
        value = r.u8("command value") if info else None
        return PaceRequest(**base, name=name, command_value=value)
    if cid2 in _EMPTY_INFO:
        return PaceRequest(**base, name=name)
    if cid2 == Cmd.READ_HISTORY:
        return PaceRequest(**base, name=name, argument=r.u16("history index"))
    if cid2 in (Cmd.WRITE_TIME, Cmd.V20_WRITE_TIME):
        return PaceRequest(**base, name=name, argument=decode_datetime(info, variant))
    if cid2 == Cmd.WRITE_PROTOCOLS:
        return PaceRequest(**base, name=name, argument=decode_protocols(info))
    if cid2 == Cmd.SWITCH:
        return PaceRequest(**base, name=name, argument=r.u8("switch code"))
    if cid2 in (Cmd.CHARGE_MOS, Cmd.DISCHARGE_MOS, Cmd.SHUTDOWN, Cmd.V20_SHUTDOWN):
        return PaceRequest(**base, name=name, argument=r.u8("payload") if info else None)
    if cid2 in GROUPS_BY_WRITE:
        return PaceRequest(**base, name=name, argument=decode_group_write(cid2, info))
    op = BOOT_CODES.op(cid2)
    if op is not None:  # the argument is the parsed bootloader message
        return PaceRequest(**base, name=name, argument=bl.decode_request(op, info))
    raise RemoteProtocolError(f"PACE request with unknown CID2 0x{cid2:02X}")


def datetime_request(
    address: int, when: dt.datetime, *, version: int = VER_25, cid1: int = CID1_LFP
) -> bytes:
    variant = variant_of(version, cid1)
    cid2 = Cmd.WRITE_TIME if variant is Variant.V25 else Cmd.V20_WRITE_TIME
    return request(address, cid2, encode_datetime(when, variant), version=version, cid1=cid1)


def protocols_request(address: int, p: Protocols) -> bytes:
    p.validate()
    return request(address, Cmd.WRITE_PROTOCOLS, encode_protocols(p))


def switch_request(address: int, code: SwitchCode) -> bytes:
    return request(address, Cmd.SWITCH, bytes([SwitchCode(code)]))


def mos_request(address: int, *, charge: bool, on: bool) -> bytes:
    cid2 = Cmd.CHARGE_MOS if charge else Cmd.DISCHARGE_MOS
    return request(address, cid2, bytes([MOS_ON if on else MOS_OFF]))


def shutdown_request(address: int, *, version: int = VER_25, cid1: int = CID1_LFP) -> bytes:
    """v25: CID2 0x9C with payload 01 (as PbmsTools sends it); v20: CID2 0x95 with the address."""
    if version == VER_25:
        return request(address, Cmd.SHUTDOWN, b"\x01")
    return request(address, Cmd.V20_SHUTDOWN, _u8(address, "address"), version=version, cid1=cid1)
