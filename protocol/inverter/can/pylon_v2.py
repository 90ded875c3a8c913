"""`pylon-v2`: the Pylontech union — V1.2 frames plus the V1.3 0x35A/0x35F and the 0x37x extras.

A robust emulator sends the union (inverters ignore ids they do not know): 0x351 0x355 (6 bytes,
high-resolution SOC) 0x356 0x359 0x35A 0x35C 0x35E 0x35F 0x372-0x377 0x379, every second.
Not for Victron GX (use `victron`) nor Afore (different meanings of the same ids).
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can import alarms35a
from protocol.inverter.can.alarms35a import alarm_pairs
from protocol.inverter.can.base import BatteryState, Group, OptionValue, ascii_signals
from protocol.inverter.can.pylon import FLAG_OUTPUT as PYLON_FLAGS
from protocol.inverter.can.pylon import PYLON_SET, Pylon
from protocol.inverter.flags import FlagOutput

EXTRAS = (
    "AlarmsWarnings",
    "BatteryInfo",
    "ModuleCounts",
    "CellExtremes",
    "MinCellVoltageId",
    "MaxCellVoltageId",
    "MinTemperatureId",
    "MaxTemperatureId",
    "InstalledCapacity",
)


def extras_values(message: str, state: BatteryState, flags35a: FlagOutput) -> dict[str, float] | None:
    """Values of the Victron-style extra frames (shared with `victron`); None if not one of them."""
    if message == "AlarmsWarnings":
        return alarm_pairs(flags35a, state)
    if message == "ModuleCounts":
        return {
            "ModulesOnline": state.bank.packs_online,
            "ModulesBlockingCharge": state.packs_blocking_charge,
            "ModulesBlockingDischarge": state.packs_blocking_discharge,
            "ModulesOffline": max(0, state.bank.packs_configured - state.bank.packs_online),
        }
    if message == "CellExtremes":
        return {
            "MinCellVoltage": bank.value(state.bank.cell_min),
            "MaxCellVoltage": bank.value(state.bank.cell_max),
            "MinCellTemperature": bank.temp_min(state.bank),
            "MaxCellTemperature": bank.temp_max(state.bank),
        }
    ids = {
        "MinCellVoltageId": bank.place(state.bank.cell_min),
        "MaxCellVoltageId": bank.place(state.bank.cell_max),
        "MinTemperatureId": bank.place(state.bank.temp_min),
        "MaxTemperatureId": bank.place(state.bank.temp_max),
    }
    if message in ids:
        return ascii_signals("Id", ids[message])
    if message == "InstalledCapacity":
        return {"InstalledCapacityAh": state.bank.full_capacity_ah or 0.0}
    return None


class PylonV2(Pylon):
    name = "pylon-v2"
    title = "Pylontech LV CAN union (V1.2 + V1.3 + 0x37x extras)"
    dbc_file = "pylon_v2.dbc"
    groups = (Group(1.0, (*PYLON_SET, *EXTRAS)),)
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "PYLON", "module_count": 0}
    flag_outputs_used: ClassVar[tuple[str, ...]] = (PYLON_FLAGS, alarms35a.FLAG_OUTPUT)

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "BatteryInfo":  # Pylon V1.3: "LI", BMS version, capacity, id
            return {
                "BatteryType": 0x494C,  # ASCII "LI" little-endian
                "BmsVersion": 0x0100,
                "CapacityAh": state.bank.full_capacity_ah or 0.0,
                "ManufacturerId": 0,
            }
        extra = extras_values(message, state, self.flag_outputs[alarms35a.FLAG_OUTPUT])
        if extra is not None:
            return extra
        return super().values(message, state, now)


PROTOCOL = PylonV2
