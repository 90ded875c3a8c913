"""`luxpower`: LuxPower / EG4 battery CAN V04.2 ("Lithium 6").

Differences from Pylon: 0x355 bytes 4-7 max/min cell mV, 0x356 bytes 4-7 max/min cell temperature,
0x359 bytes 5-6 capacity (Ah), 0x35C force-charge bits swapped (bit 5 = FC2, bit 4 = FC1) and bytes
2-3 cycle count. The inverter may send 0x300 with byte 0 bit 0 = "shut the battery down": we cannot
switch packs off from the CAN side, so the protocol reports the command (logged and counted by the
CAN service) and sends both directions blocked until the inverter clears the bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can.base import BatteryState, CanFrame, OptionValue, Reaction, stop_voltage
from protocol.inverter.can.pylon import Pylon
from protocol.inverter.flags import FlagOutputs

SHUTDOWN_ID = 0x300


class LuxPower(Pylon):
    name = "luxpower"
    title = "LuxPower / EG4 battery CAN V04.2"
    dbc_file = "luxpower.dbc"
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "BMSGW", "module_count": 0}

    def __init__(
        self, options: Mapping[str, OptionValue] | None = None, *, flag_outputs: FlagOutputs
    ) -> None:
        super().__init__(options, flag_outputs=flag_outputs)
        self.shutdown_requested = False

    def limits(self, state: BatteryState) -> dict[str, float]:
        values = super().limits(state)
        if self.shutdown_requested:
            values.update(
                ChargeVoltageLimit=stop_voltage(state), ChargeCurrentLimit=0.0, DischargeCurrentLimit=0.0
            )
        return values

    def request(self, state: BatteryState) -> dict[str, float]:
        values = super().request(state)
        if self.shutdown_requested:
            values = dict.fromkeys(values, 0.0)
        return values

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        values = super().values(message, state, now)
        if message == "SocSoh":
            values.update(
                MaxCellVoltage=bank.value(state.bank.cell_max), MinCellVoltage=bank.value(state.bank.cell_min)
            )
        elif message == "Measurements":
            values.update(
                MaxCellTemperature=bank.temp_max(state.bank), MinCellTemperature=bank.temp_min(state.bank)
            )
        elif message == "ProtectionAlarm":
            values["CapacityAh"] = state.bank.full_capacity_ah or 0.0
        elif message == "Request":
            values["CycleCount"] = float(state.bank.cycles_max or 0)
        return values

    def react(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        if frame.arbitration_id == SHUTDOWN_ID and not frame.is_extended and frame.data:
            requested = bool(frame.data[0] & 0x01)
            changed = requested != self.shutdown_requested
            self.shutdown_requested = requested
            command = ("shutdown" if requested else "shutdown_cleared") if changed else None
            return Reaction(keepalive=False, command=command)
        return super().react(frame, state, now)

    def reset(self) -> None:
        super().reset()
        self.shutdown_requested = False


PROTOCOL = LuxPower
