"""`solark`: Sol-Ark CAN V1.3 — Pylon ids with 8-byte frames, 0x356 voltage in 0.1 V, 0x379 bank capacity.

Sol-Ark expects one aggregator sending system-wide values (which is what the policy decides).
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can.base import BatteryState, Group, OptionValue
from protocol.inverter.can.pylon import PYLON_SET, Pylon


class SolArk(Pylon):
    name = "solark"
    title = "Sol-Ark CAN V1.3"
    dbc_file = "solark.dbc"
    groups = (Group(1.0, (*PYLON_SET, "BankCapacity")),)
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "PYLON", "module_count": 0}

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "BankCapacity":
            return {"CapacityAh": state.bank.full_capacity_ah or 0.0}
        return super().values(message, state, now)


PROTOCOL = SolArk
