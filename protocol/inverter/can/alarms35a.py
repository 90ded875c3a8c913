"""The SMA / Victron / Pylon-V1.3 0x35A alarm and warning frame: 2-bit pairs, 1 = active, 2 = ok.

Shared by `sma`, `victron` and `pylon-v2`; pairs we have no source for are sent as 0 ("not supported").
"""

from __future__ import annotations

from protocol.inverter.can.base import HIGH_TEMP, LOW_TEMP, OVERVOLTAGE, UNDERVOLTAGE, BatteryState

ACTIVE = 1.0
OK = 2.0
NOT_SUPPORTED = 0.0

# pair name in the DBC -> neutral names that raise it (None: not supported by the gateway)
PAIR_SOURCES: dict[str, tuple[str, ...] | None] = {
    "General": (),  # any alarm at all
    "HighVoltage": OVERVOLTAGE,
    "LowVoltage": UNDERVOLTAGE,
    "HighTemperature": HIGH_TEMP,
    "LowTemperature": LOW_TEMP,
    "HighTemperatureCharge": None,
    "LowTemperatureCharge": None,
    "HighDischargeCurrent": ("discharge_overcurrent",),
    "HighChargeCurrent": ("charge_overcurrent",),
    "Contactor": None,
    "ShortCircuit": ("short_circuit",),
    "BmsInternal": ("system_error", "communication"),
    "CellImbalance": ("cell_imbalance",),
}


def alarm_pairs(state: BatteryState) -> dict[str, float]:
    values: dict[str, float] = {}
    for kind, flags in (("Alarm", state.alarms), ("Warning", state.warnings)):
        for pair, sources in PAIR_SOURCES.items():
            if sources is None:
                values[f"{kind}{pair}"] = NOT_SUPPORTED
            elif not sources:
                values[f"{kind}{pair}"] = ACTIVE if flags else OK
            else:
                values[f"{kind}{pair}"] = ACTIVE if any(f in flags for f in sources) else OK
    return values
