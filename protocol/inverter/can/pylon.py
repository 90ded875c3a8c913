"""`pylon`: Pylontech low-voltage CAN V1.2 (0x351 0x355 0x356 0x359 0x35C 0x35E every second).

The base of the Pylon family (`deye`, `goodwe`, `sofar`, `solark`, `luxpower`, `pylon-v2`): the
subclasses change the DBC, the name string or a few values. 0x351 bytes 6-7 carry the discharge
voltage limit as real packs do. Stop encoding: the blocked direction's current 0 A and its enable
bit cleared, CVL at the present voltage (never 0), protection/alarm bits set. 0x359 bit positions
follow the V1.2 document (not the emulators the reference warns about). No I/O here.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can.base import (
    HIGH_TEMP,
    LOW_TEMP,
    OVERVOLTAGE,
    SYSTEM,
    UNDERVOLTAGE,
    BatteryState,
    Group,
    InverterProtocol,
    OptionValue,
    any_of,
    ascii_signals,
    limit_signals,
    measurement_signals,
    soc_soh_signals,
)

PYLON_SET = ("Limits", "SocSoh", "Measurements", "ProtectionAlarm", "Request", "Name")


def pylon_flags(state: BatteryState) -> dict[str, float]:
    """0x359 bytes 0-3 (protection and early-warning bits) from the neutral alarm names."""
    a, w = state.alarms, state.warnings
    return {
        "ProtCellOverVoltage": any_of(a, *OVERVOLTAGE),
        "ProtCellUnderVoltage": any_of(a, *UNDERVOLTAGE),
        "ProtCellOverTemperature": any_of(a, *HIGH_TEMP),
        "ProtCellUnderTemperature": any_of(a, *LOW_TEMP),
        "ProtDischargeOverCurrent": any_of(a, "discharge_overcurrent", "short_circuit"),
        "ProtChargeOverCurrent": any_of(a, "charge_overcurrent"),
        "ProtSystemError": any_of(a, *SYSTEM),
        "AlarmHighVoltage": any_of(w, *OVERVOLTAGE),
        "AlarmLowVoltage": any_of(w, *UNDERVOLTAGE),
        "AlarmHighTemperature": any_of(w, *HIGH_TEMP),
        "AlarmLowTemperature": any_of(w, *LOW_TEMP),
        "AlarmDischargeHighCurrent": any_of(w, "discharge_overcurrent"),
        "AlarmChargeHighCurrent": any_of(w, "charge_overcurrent"),
        "AlarmInternalCommFail": any_of(w | a, "communication"),
    }


class Pylon(InverterProtocol):
    name = "pylon"
    title = "Pylontech LV CAN V1.2"
    dbc_file = "pylon.dbc"
    groups = (Group(1.0, PYLON_SET),)
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "PYLON", "module_count": 0}

    def module_count(self, state: BatteryState) -> int:
        configured = int(self.option("module_count"))
        return configured if configured > 0 else state.packs_online

    def limits(self, state: BatteryState) -> dict[str, float]:
        return limit_signals(state)

    def request(self, state: BatteryState) -> dict[str, float]:
        return {
            "ChargeEnable": float(state.charge_enabled),
            "DischargeEnable": float(state.discharge_enabled),
            "ForceChargeRequest1": float(state.force_charge_1 and not state.stale),
            "ForceChargeRequest2": float(state.force_charge_2 and not state.stale),
            "FullChargeRequest": float(state.full_charge_request and not state.stale),
        }

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "Limits":
            return self.limits(state)
        if message == "SocSoh":
            return soc_soh_signals(state)
        if message == "Measurements":
            return measurement_signals(state)
        if message == "ProtectionAlarm":
            return {**pylon_flags(state), "ModuleCount": self.module_count(state), "TagP": 0x50, "TagN": 0x4E}
        if message == "Request":
            return self.request(state)
        if message == "Name":
            return ascii_signals("Name", str(self.option("name")))
        raise KeyError(message)


PROTOCOL = Pylon
