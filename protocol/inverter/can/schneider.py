"""`schneider`: Schneider "SE BMS CAN Communication V2" (XW Pro / Conext), as implemented publicly.

29-bit ids, big-endian. The inverter sends a 0x310 heartbeat every second. The BMS sends every
500 ms 0x321 0x322 0x323 0x324 0x325, every 2 s 0x320 0x326 0x327, every 10 s 0x333 ("SEBMS").
0x325 carries the permission bits and a stop bit, plus warning and fault words (bit n = the
reference's enum value n). The source is a single implementation ([IMPL] in the reference).
Stop: permission cleared, the blocked direction's current 0 A, stop bit when both are blocked,
state "faulted" while data is stale.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can.base import (
    BatteryState,
    Group,
    InverterProtocol,
    OptionValue,
    ascii_signals,
    charge_current,
    charge_voltage,
    discharge_current,
)
from protocol.inverter.flags import PROTECTION, WARNING

HEARTBEAT_ID = 0x310
STATE_ONLINE, STATE_FAULTED = 3, 4
FLAG_OUTPUT = "can.schneider"  # bit of the Faults / Warnings words per meaning (mappings/flags)


class Schneider(InverterProtocol):
    name = "schneider"
    title = "Schneider SE BMS CAN V2 (29-bit)"
    dbc_file = "schneider.dbc"
    groups = (
        Group(0.5, ("VoltageLimits", "CurrentLimits", "Measurements", "TemperatureSoc", "Status")),
        Group(2.0, ("ProtocolVersion", "State", "CellExtremes")),
        Group(10.0, ("Name",)),
    )
    keepalive_ids = frozenset({HEARTBEAT_ID})
    keepalive_extended = True
    option_defaults: ClassVar[dict[str, OptionValue]] = {}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (FLAG_OUTPUT,)

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "VoltageLimits":
            return {
                "MaxChargeVoltage": charge_voltage(state),
                "MinDischargeVoltage": state.discharge_voltage_v,
            }
        if message == "CurrentLimits":
            return {
                "MaxChargeCurrent": charge_current(state),
                "MaxDischargeCurrent": discharge_current(state),
            }
        if message == "Measurements":
            return {"Voltage": bank.voltage(state.bank), "Current": bank.current(state.bank)}
        if message == "TemperatureSoc":
            return {"AverageTemperature": bank.temperature(state.bank), "SOC": bank.soc(state.bank)}
        if message == "Status":
            return {
                "ForceChargeRequest": float(
                    (state.force_charge_1 or state.force_charge_2) and not state.stale
                ),
                "ChargePermitted": float(state.charge_enabled),
                "DischargePermitted": float(state.discharge_enabled),
                "Stop": float(not state.charge_enabled and not state.discharge_enabled),
                "Warnings": self.flag_outputs[FLAG_OUTPUT].bits(WARNING, state.warnings),
                "Faults": self.flag_outputs[FLAG_OUTPUT].bits(PROTECTION, state.alarms),
            }
        if message == "ProtocolVersion":
            return {"Version": 2}
        if message == "State":
            return {
                "State": STATE_FAULTED if state.stale or state.alarms else STATE_ONLINE,
                "CycleCount": float(state.bank.cycles_max or 0),
                "SOH": bank.soh(state.bank),
                "CapacityAh": state.bank.full_capacity_ah or 0.0,
            }
        if message == "CellExtremes":
            return {
                "MaxCellTemperature": bank.temp_max(state.bank),
                "MinCellTemperature": bank.temp_min(state.bank),
                "MaxCellVoltage": bank.value(state.bank.cell_max),
                "MinCellVoltage": bank.value(state.bank.cell_min),
            }
        if message == "Name":
            return ascii_signals("Name", "SEBMS")
        raise KeyError(message)


PROTOCOL = Schneider
