"""`sofar`: Sofar LV (ME3000SP, HYD-ES) — Pylon frames with Sofar's stop encoding and extras.

Sofar ignores zero limits: a blocked direction is sent as 0.1 A (and charging blocked as CVL
0.1 V), with the enable bit cleared and alarm bits set. The extras (remaining capacity in 0x355
bytes 6-7, cycle count in 0x356 bytes 6-7) come from one emulator with an uncertain scale: they are
*inferred* and sent only with the option `extras = true`; otherwise those bytes are 0.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can.base import BatteryState, OptionValue
from protocol.inverter.can.pylon import Pylon

SOFAR_STOP_V = 0.1
SOFAR_STOP_A = 0.1


class Sofar(Pylon):
    name = "sofar"
    title = "Sofar LV CAN (Pylon frames, 0.1 V / 0.1 A stop)"
    dbc_file = "sofar.dbc"
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "PYLON", "module_count": 0, "extras": False}

    def limits(self, state: BatteryState) -> dict[str, float]:
        return {
            "ChargeVoltageLimit": state.charge_voltage_v if state.charge_enabled else SOFAR_STOP_V,
            "ChargeCurrentLimit": max(state.charge_current_a, SOFAR_STOP_A)
            if state.charge_enabled
            else SOFAR_STOP_A,
            "DischargeCurrentLimit": (
                max(state.discharge_current_a, SOFAR_STOP_A) if state.discharge_enabled else SOFAR_STOP_A
            ),
            "DischargeVoltageLimit": state.discharge_voltage_v,
        }

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        values = super().values(message, state, now)
        extras = bool(self.option("extras"))
        if message == "SocSoh":
            values["RemainingCapacity"] = (state.bank.remaining_capacity_ah or 0.0) if extras else 0.0
        elif message == "Measurements":
            values["CycleCount"] = float(state.bank.cycles_max or 0) if extras else 0.0
        return values


PROTOCOL = Sofar
