"""`sma`: SMA Sunny Island 6.0H/8.0H external-BMS protocol (FSS-ConnectingBat-TI-en-10).

Little-endian (the emulator that sends big-endian and swaps the currents is wrong: the document
wins). 0x351 0x355 0x356 0x35A 0x35B 0x35E 0x35F every 500 ms, which keeps every id >= 200 ms apart
(the SI's inhibit time). Fields we have no value for are sent as invalid (0xFFFF / 0x8000) so the
SI uses its default. The SI ignores out-of-range values silently, so CVL is kept within 41-63 V and
the discharge voltage within 41-48 V. The SI's 0x305 carries measurements (not an all-zero
keepalive); 0x305/0x306/0x307 all count as the inverter being present.
Stop: the blocked direction's current 0 A, CVL not above the present voltage, alarm pairs set.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can import alarms35a
from protocol.inverter.can.alarms35a import alarm_pairs
from protocol.inverter.can.base import (
    BatteryState,
    Group,
    InverterProtocol,
    OptionValue,
    ascii_signals,
    charge_current,
    charge_voltage,
    discharge_current,
    measurement_signals,
    soc_soh_signals,
)
from protocol.inverter.can.dbc import INVALID

SI_CVL_RANGE_V = (41.0, 63.0)
SI_DVL_RANGE_V = (41.0, 48.0)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


class Sma(InverterProtocol):
    name = "sma"
    title = "SMA Sunny Island external BMS"
    dbc_file = "sma.dbc"
    groups = (
        Group(0.5, ("Limits", "SocSoh", "Measurements", "AlarmsWarnings", "Events", "Name", "BatteryInfo")),
    )
    keepalive_ids = frozenset({0x305, 0x306, 0x307})
    keepalive_extended = False
    min_repeat_s = 0.2
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "BMSGW"}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (alarms35a.FLAG_OUTPUT,)

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "Limits":
            return {
                "ChargeVoltageLimit": _clamp(charge_voltage(state), SI_CVL_RANGE_V),
                "ChargeCurrentLimit": charge_current(state),
                "DischargeCurrentLimit": discharge_current(state),
                "DischargeVoltageLimit": _clamp(state.discharge_voltage_v, SI_DVL_RANGE_V),
            }
        if message == "SocSoh":
            return soc_soh_signals(state)
        if message == "Measurements":
            return measurement_signals(state)
        if message == "AlarmsWarnings":
            return alarm_pairs(self.flag_outputs[alarms35a.FLAG_OUTPUT], state)
        if message == "Events":
            return {"SocRecalibration": 0, "PowerLimitStart": 0, "PowerLimitStop": 0, "PreventiveShutdown": 0}
        if message == "Name":
            return ascii_signals("Name", str(self.option("name")))
        if message == "BatteryInfo":
            capacity = state.bank.full_capacity_ah
            return {
                "BatteryType": INVALID,
                "BmsVersion": INVALID,
                "CapacityAh": INVALID if capacity is None else capacity,
                "ManufacturerId": INVALID,
            }
        raise KeyError(message)


PROTOCOL = Sma
