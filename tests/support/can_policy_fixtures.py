"""Builders of model views for the policy and CAN tests (plain functions, no pytest fixtures)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType

from gateway.core.model import (
    Availability,
    CellRef,
    ModelView,
    PackSnapshot,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
    aggregate,
)
from gateway.core.policy.engine import ChargeDecision
from tests.support.flags import by_kind, named


def telemetry(
    *,
    now: float,
    cells: Sequence[float] = (3.30,) * 16,
    current_a: float = 0.0,
    soc_pct: float = 50.0,
    soh_pct: float = 98.0,
    cell_temps_c: Iterable[float] = (25.0, 26.0),
    mos_temp_c: float | None = 30.0,
    protections: Iterable[str] = (),
    alarms: Iterable[str] = (),
    faults: Iterable[str] = (),
    flags: Iterable[str] = (),  # any severity, by name
    full_ah: float = 100.0,
    cycles: int = 12,
) -> Telemetry:
    temps = [Temperature(TempRole.CELL, i + 1, t) for i, t in enumerate(cell_temps_c)]
    if mos_temp_c is not None:
        temps.append(Temperature(TempRole.MOS, 1, mos_temp_c))
    return Telemetry.build(
        measured_at=now,
        cell_voltages_v=cells,
        temperatures=temps,
        voltage_v=sum(cells),
        current_a=current_a,
        soc_pct=soc_pct,
        soh_pct=soh_pct,
        full_capacity_ah=full_ah,
        remaining_capacity_ah=full_ah * soc_pct / 100.0,
        nominal_capacity_ah=full_ah,
        cycles=cycles,
        flags=by_kind(protections, alarms, faults) + named(*flags),
    )


def params(now: float, **values: float) -> ParameterSet:
    return ParameterSet.of(now, [ParameterReading(k, v, "") for k, v in values.items()])


def pack(
    address: int,
    t: Telemetry | None,
    *,
    availability: Availability = Availability.ONLINE,
    parameters: ParameterSet | None = None,
    bus: str = "bus1",
) -> PackSnapshot:
    return PackSnapshot(bus, address, availability, telemetry=t, parameters=parameters)


def view(packs: Iterable[PackSnapshot], now: float, version: int = 1) -> ModelView:
    items = {p.key: p for p in packs}
    return ModelView(version, MappingProxyType(items), aggregate(items.values(), now))


def bank(now: float, n: int = 2, **kw: object) -> ModelView:
    """`n` identical online packs built with `telemetry(now=now, **kw)`."""
    return view([pack(a, telemetry(now=now, **kw)) for a in range(1, n + 1)], now)  # type: ignore[arg-type]


# The bank values a test may set through `decision()`: by their old flat decision names.
BANK_FIELDS = {
    "soc_pct": "soc_pct",
    "soh_pct": "soh_pct",
    "voltage_v": "voltage_v",
    "current_a": "current_a",
    "temperature_c": "temp_mean_c",
    "full_capacity_ah": "full_capacity_ah",
    "remaining_capacity_ah": "remaining_capacity_ah",
    "nominal_capacity_ah": "nominal_capacity_ah",
    "cycles": "cycles_max",
    "packs_online": "packs_online",
    "packs_configured": "packs_configured",
    "cells_per_pack": "cells_per_pack",
}
# extremes: (value name, id name) -> bank field; an id is "bus/address/index"
BANK_EXTREMES = {
    ("cell_max_v", "cell_max_id"): "cell_max",
    ("cell_min_v", "cell_min_id"): "cell_min",
    ("temp_max_c", "temp_max_id"): "temp_max",
    ("temp_min_c", "temp_min_id"): "temp_min",
}


def decision(**overrides: object) -> ChargeDecision:
    """A fresh two-pack decision (default policy) with some fields replaced; bank values (by the
    names of `BANK_FIELDS` and `BANK_EXTREMES`) replace those of the decision's bank."""
    from dataclasses import replace

    from gateway.app.config import PolicyConfig
    from gateway.core.controls import Controls
    from gateway.core.policy.engine import PolicyEngine

    now = 1_800_000_000.0
    d = PolicyEngine(PolicyConfig()).evaluate(bank(now), Controls().state(now), now)
    bank_changes: dict[str, object] = {
        BANK_FIELDS[k]: overrides.pop(k) for k in list(overrides) if k in BANK_FIELDS
    }
    for (value_name, id_name), field_name in BANK_EXTREMES.items():
        if value_name in overrides or id_name in overrides:
            ref = getattr(d.bank, field_name)
            value = overrides.pop(value_name, ref.value)
            bus, address, index = str(overrides.pop(id_name, f"{ref.bus}/{ref.address}/{ref.index}")).split(
                "/"
            )
            bank_changes[field_name] = CellRef(bus, int(address), int(index), float(value))  # type: ignore[arg-type]
    return replace(d, bank=replace(d.bank, **bank_changes), **overrides)  # type: ignore[arg-type]
