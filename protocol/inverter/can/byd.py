"""`byd`: BYD Battery-Box Premium HVS CAN (as reverse-engineered by public emulators).

11-bit ids, big-endian. Silent until the inverter speaks (0x151, 0x091, 0x0D1 or 0x111; some
inverters only probe when their battery model is set to BYD). 0x151 with byte 0 bit 0 set asks the
battery to identify itself: answered with 0x250 (firmware, capacity), 0x2D0 ("BYD") and four 0x3D0
frames ("Battery-Box Premium HVS"). Cyclic once the inverter was seen: 0x110 every 2 s, 0x150 0x1D0
0x210 every 10 s, 0x190 every 60 s (its content is not decoded publicly: byte 0 is set while we
report an alarm, byte 7 counts up like real packs do). Stop: the blocked direction's limit 0 A,
the charge voltage limit not above the present voltage, 0x190 alarm byte set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can import dbc
from protocol.inverter.can.base import (
    BatteryState,
    CanFrame,
    Group,
    InverterProtocol,
    OptionValue,
    Reaction,
    ascii_signals,
    charge_current,
    charge_voltage,
    discharge_current,
)
from protocol.inverter.flags import FlagOutputs

INVERTER_IDS = frozenset({0x151, 0x091, 0x0D1, 0x111})
IDENTIFY_ID = 0x151
MODEL_TEXT = "Battery-Box Premium HVS"


class Byd(InverterProtocol):
    name = "byd"
    title = "BYD Battery-Box Premium HVS CAN"
    dbc_file = "byd.dbc"
    groups = (
        Group(2.0, ("Limits",)),
        Group(10.0, ("SocSoh", "Measurements", "Temperatures")),
        Group(60.0, ("Alarms",)),
    )
    answer_messages = ("Identity", "Brand")
    keepalive_ids = INVERTER_IDS
    keepalive_extended = False
    silent_until_inverter = True
    option_defaults: ClassVar[dict[str, OptionValue]] = {}

    def __init__(
        self, options: Mapping[str, OptionValue] | None = None, *, flag_outputs: FlagOutputs
    ) -> None:
        super().__init__(options, flag_outputs=flag_outputs)
        self._alarm_counter = 0

    def react(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        if frame.is_extended or frame.arbitration_id not in INVERTER_IDS:
            return Reaction()
        self.inverter_seen = True
        if frame.arbitration_id == IDENTIFY_ID and frame.data and frame.data[0] & 0x01 and state is not None:
            return Reaction(tuple(self.identity(state, now)), keepalive=True)
        return Reaction(keepalive=True)

    def identity(self, state: BatteryState, now: float) -> list[CanFrame]:
        frames = self.encode_all(("Identity", "Brand"), state, now)
        text = MODEL_TEXT.encode("ascii").ljust(28, b"\x00")
        for index in range(4):
            chunk = text[index * 7 : index * 7 + 7]
            values = {"Index": float(index), **{f"Text{i}": float(b) for i, b in enumerate(chunk)}}
            frames.append(dbc.encode(self.db, "Model", values))
        return frames

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "Limits":
            return {
                "MaxChargeVoltage": charge_voltage(state),
                "MinDischargeVoltage": state.discharge_voltage_v,
                "MaxDischargeCurrent": discharge_current(state),
                "MaxChargeCurrent": charge_current(state),
            }
        if message == "SocSoh":
            return {
                "SOC": bank.soc(state.bank),
                "SOH": bank.soh(state.bank),
                "RemainingCapacity": state.bank.remaining_capacity_ah or 0.0,
                "FullCapacity": state.bank.full_capacity_ah or 0.0,
            }
        if message == "Measurements":
            return {
                "Voltage": bank.voltage(state.bank),
                "Current": bank.current(state.bank),
                "Temperature": bank.temperature(state.bank),
            }
        if message == "Temperatures":
            return {"MaxTemperature": bank.temp_max(state.bank), "MinTemperature": bank.temp_min(state.bank)}
        if message == "Alarms":
            self._alarm_counter = (self._alarm_counter + 1) % 256
            return {"AlarmByte": 1.0 if state.alarms else 0.0, "Counter": self._alarm_counter}
        if message == "Identity":
            kwh = (state.bank.full_capacity_ah or 0.0) * bank.voltage(state.bank) / 1000.0
            return {"FirmwareMajor": 1, "FirmwareMinor": 0, "CapacityKwh": kwh}
        if message == "Brand":
            return ascii_signals("Name", "BYD")
        raise KeyError(message)


PROTOCOL = Byd
