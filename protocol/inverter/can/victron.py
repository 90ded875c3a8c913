"""`victron`: Victron GX "CAN-bus BMS LV (500 kbit/s)".

0x351 0x355 0x356 0x35A 0x35E 0x35F 0x370-0x377 0x379 0x382 every second (the GX stops charging when
0x351 is missing for ~3 s). Stop: CVL at the present voltage with 0 A, never CVL 0 (the GX reads
0 as over-voltage). The name in 0x35E/0x382 makes the GX apply brand quirks (a "PYLON" name with a
CVL <= 54 V gets its CVL replaced, CCL floored at C/4; BYD, LG, Pelio-L have their own): the default
name matches no quirk, and `notes()` warns when a configured name does.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can import alarms35a
from protocol.inverter.can.base import (
    BatteryState,
    Group,
    InverterProtocol,
    OptionValue,
    ascii_signals,
    limit_signals,
    measurement_signals,
    soc_soh_signals,
)
from protocol.inverter.can.pylon_v2 import extras_values

# 0x35E prefixes that dbus-systemcalc-py's DVCC quirks react to (reference 2.3)
GX_QUIRK_PREFIXES = {
    "PYLON": "CVL replaced by the GX when <= 54 V, CCL floored at C/4 (CCL 0 does not stop charging)",
    "PELIO": "CVL capped at 56.0 V, CCL floored at 20 % of capacity",
    "BYD": "the GX floats at <= 55 V and 40 A when CCL is 0",
    "LG": "CVL capped at 57.3 V",
    "DYNESS": "mis-detected as Pylontech by some GX versions",
}


class Victron(InverterProtocol):
    name = "victron"
    title = "Victron GX CAN-bus BMS LV"
    dbc_file = "victron.dbc"
    groups = (
        Group(
            1.0,
            (
                "Limits",
                "SocSoh",
                "Measurements",
                "AlarmsWarnings",
                "Name",
                "BatteryInfo",
                "BmsName1",
                "BmsName2",
                "ModuleCounts",
                "CellExtremes",
                "MinCellVoltageId",
                "MaxCellVoltageId",
                "MinTemperatureId",
                "MaxTemperatureId",
                "InstalledCapacity",
                "FamilyName",
            ),
        ),
    )
    keepalive_ids = frozenset({0x305, 0x307})
    keepalive_extended = False
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "BMSGW", "family": "LFP"}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (alarms35a.FLAG_OUTPUT,)

    def notes(self) -> list[str]:
        name = str(self.option("name")).upper()
        return [
            f"victron: the name {self.option('name')!r} triggers a GX quirk: {text}"
            for prefix, text in GX_QUIRK_PREFIXES.items()
            if name.startswith(prefix)
        ]

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "Limits":
            return limit_signals(state)
        if message == "SocSoh":
            return soc_soh_signals(state)
        if message == "Measurements":
            return measurement_signals(state)
        if message == "Name":
            return ascii_signals("Name", str(self.option("name")))
        if message == "BmsName1":
            return ascii_signals("Name", "bms-gate")
        if message == "BmsName2":
            return ascii_signals("Name", "way")
        if message == "FamilyName":
            return ascii_signals("Name", str(self.option("family")))
        if message == "BatteryInfo":
            return {
                "BatteryType": 0,
                "BmsVersion": 0x0100,
                "CapacityAh": state.bank.full_capacity_ah or 0.0,
                "ManufacturerId": 0,
            }
        extra = extras_values(message, state, self.flag_outputs[alarms35a.FLAG_OUTPUT])
        if extra is None:
            raise KeyError(message)
        return extra


PROTOCOL = Victron
