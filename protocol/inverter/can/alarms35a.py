"""The SMA / Victron / Pylon-V1.3 0x35A alarm and warning frame: 2-bit pairs, 1 = active, 2 = ok.

Shared by `sma`, `victron` and `pylon-v2`. Which meanings raise which pair is data
(`can.alarms35a` in mappings/flags/outputs.toml); a pair no meaning names is sent as 0 ("not
supported"), "General" is any flag at that level.
"""

from __future__ import annotations

from protocol.inverter.can.base import BatteryState
from protocol.inverter.flags import PROTECTION, WARNING, FlagOutput

ACTIVE = 1.0
OK = 2.0
NOT_SUPPORTED = 0.0
FLAG_OUTPUT = "can.alarms35a"

# every pair of the frame (the DBC has Alarm<pair> and Warning<pair> for each)
PAIRS = (
    "General",
    "HighVoltage",
    "LowVoltage",
    "HighTemperature",
    "LowTemperature",
    "HighTemperatureCharge",
    "LowTemperatureCharge",
    "HighDischargeCurrent",
    "HighChargeCurrent",
    "Contactor",
    "ShortCircuit",
    "BmsInternal",
    "CellImbalance",
)


def alarm_pairs(out: FlagOutput, state: BatteryState) -> dict[str, float]:
    values: dict[str, float] = {}
    for prefix, level, flags in (("Alarm", PROTECTION, state.alarms), ("Warning", WARNING, state.warnings)):
        supported = out.targets(level)
        raised = out.raised(level, flags)
        for pair in PAIRS:
            if pair == "General":
                values[f"{prefix}{pair}"] = ACTIVE if flags else OK
            elif pair not in supported:
                values[f"{prefix}{pair}"] = NOT_SUPPORTED
            else:
                values[f"{prefix}{pair}"] = ACTIVE if pair in raised else OK
    return values
