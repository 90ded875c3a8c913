"""`growatt`: Growatt BMS CAN low voltage (V1.04) — big-endian, query/response.

The inverter sends 0x301 once a second; each 0x301 is answered with 0x311 0x312 0x313 0x314 0x319
0x320 0x321 (the per-cell frames 0x315-0x318 are optional and not sent for parallel banks). The
0x301 is also the keepalive. Stop: the blocked direction's current 0 A and its enable bits cleared,
CV not above the present voltage, protection/warning bits set.
"""

from __future__ import annotations

import time
from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can.base import (
    BatteryState,
    CanFrame,
    InverterProtocol,
    OptionValue,
    Reaction,
    charge_current,
    charge_voltage,
    discharge_current,
    flag_signals,
)

REQUEST_ID = 0x301
ANSWER = ("Limits", "ProtectionWarning", "Measurements", "Capacity", "Request", "Identity", "Upgrade")
STATE_STANDBY, STATE_CHARGING, STATE_DISCHARGING = 1, 2, 3
IDLE_CURRENT_A = 0.5
FLAG_OUTPUT = "can.growatt"  # 0x312 bits per meaning (mappings/flags/outputs.toml)


def datetime_word(now: float) -> int:
    """0x320 date-time bitfield: s 0-5, min 6-11, h 12-16, day 17-21, month 22-25, year-2000 26-31 (UTC)."""
    t = time.gmtime(now)
    return (
        t.tm_sec % 60
        | t.tm_min << 6
        | t.tm_hour << 12
        | t.tm_mday << 17
        | t.tm_mon << 22
        | max(0, min(63, t.tm_year - 2000)) << 26
    )


class Growatt(InverterProtocol):
    name = "growatt"
    title = "Growatt BMS CAN low voltage V1.04"
    dbc_file = "growatt.dbc"
    groups = ()
    answer_messages = ANSWER
    keepalive_ids = frozenset({REQUEST_ID})
    keepalive_extended = False
    option_defaults: ClassVar[dict[str, OptionValue]] = {"abbreviation": "BG", "manufacturer_code": 0}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (FLAG_OUTPUT,)

    def react(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        if frame.arbitration_id != REQUEST_ID or frame.is_extended:
            return Reaction()
        self.inverter_seen = True
        frames = () if state is None else tuple(self.encode_all(ANSWER, state, now))
        return Reaction(frames=frames, keepalive=True)

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "Limits":
            if bank.current(state.bank) > IDLE_CURRENT_A:
                st = STATE_CHARGING
            elif bank.current(state.bank) < -IDLE_CURRENT_A:
                st = STATE_DISCHARGING
            else:
                st = STATE_STANDBY
            return {
                "ChargeVoltage": charge_voltage(state),
                "ChargeCurrentLimit": charge_current(state),
                "DischargeCurrentLimit": discharge_current(state),
                "State": st,
                "ErrorValid": float(bool(state.alarms)),
                "Balancing": 0,
                "Sleep": 0,
                "DischargeEnabled": float(state.discharge_enabled),
                "ChargeEnabled": float(state.charge_enabled),
                "TerminalOpen": 0,
                "MasterMode": 1 if state.bank.packs_online > 1 else 0,
                "InverterState": 0,
            }
        if message == "ProtectionWarning":
            return {
                **flag_signals(self.flag_outputs[FLAG_OUTPUT], state),
                "ProtSoftStartFail": 0,
                "WarnPackBeforeTurnOff": 0,
                "PackCount": max(1, state.bank.packs_online),
                "ManufacturerCode": float(self.option("manufacturer_code")),
                "CellCount": bank.cells(state.bank),
            }
        if message == "Measurements":
            return {
                "Voltage": bank.voltage(state.bank),
                "Current": bank.current(state.bank),
                "MaxCellTemperature": bank.temp_max(state.bank),
                "SOC": round(bank.soc(state.bank)),
                "SOH": round(bank.soh(state.bank)),
                "SOHFlag": 0,
            }
        if message == "Capacity":
            return {
                "RemainingCapacity": state.bank.remaining_capacity_ah or 0.0,
                "FullCapacity": state.bank.full_capacity_ah or 0.0,
                "CellDeltaV": max(0.0, bank.value(state.bank.cell_max) - bank.value(state.bank.cell_min)),
                "CycleCount": float(state.bank.cycles_max or 0),
            }
        if message == "Request":
            return {
                "Chemistry": 0,  # LFP
                "ForceChargeRequest1": float(state.force_charge_1 and not state.stale),
                "ForceChargeRequest2": float(state.force_charge_2 and not state.stale),
                "DischargeEnable": float(state.discharge_enabled),
                "ChargeEnable": float(state.charge_enabled),
                "MaxCellVoltage": bank.value(state.bank.cell_max),
                "MinCellVoltage": bank.value(state.bank.cell_min),
                "MaxCellNumber": bank.index(state.bank.cell_max),
                "MinCellNumber": bank.index(state.bank.cell_min),
                "FaultyPack": 0,
            }
        if message == "Identity":
            abbrev = str(self.option("abbreviation")).upper().encode("ascii", "replace")[:2].ljust(2, b" ")
            return {
                "Abbrev0": abbrev[0],
                "Abbrev1": abbrev[1],
                "HardwareVersion": 1,
                "SoftwareVersion": 1,
                "DateTime": datetime_word(now),
            }
        if message == "Upgrade":
            return {"UpdateStatus": 0, "UpdateProgress": 0, "PackUnderUpgrade": 0, "SuccessCount": 0}
        raise KeyError(message)


PROTOCOL = Growatt
