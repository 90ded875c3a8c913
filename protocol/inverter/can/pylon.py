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
    BatteryState,
    Group,
    InverterProtocol,
    OptionValue,
    ascii_signals,
    flag_signals,
    limit_signals,
    measurement_signals,
    soc_soh_signals,
)

PYLON_SET = ("Limits", "SocSoh", "Measurements", "ProtectionAlarm", "Request", "Name")


FLAG_OUTPUT = "can.pylon"  # 0x359 bits per meaning (mappings/flags/outputs.toml)


class Pylon(InverterProtocol):
    name = "pylon"
    title = "Pylontech LV CAN V1.2"
    dbc_file = "pylon.dbc"
    groups = (Group(1.0, PYLON_SET),)
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "PYLON", "module_count": 0}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (FLAG_OUTPUT,)

    def module_count(self, state: BatteryState) -> int:
        configured = int(self.option("module_count"))
        return configured if configured > 0 else state.bank.packs_online

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
            flags = flag_signals(self.flag_outputs[FLAG_OUTPUT], state)
            return {**flags, "ModuleCount": self.module_count(state), "TagP": 0x50, "TagN": 0x4E}
        if message == "Request":
            return self.request(state)
        if message == "Name":
            return ascii_signals("Name", str(self.option("name")))
        raise KeyError(message)


PROTOCOL = Pylon
