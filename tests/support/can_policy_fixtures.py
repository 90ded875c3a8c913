"""Builders of model views for the policy and CAN tests (plain functions, no pytest fixtures)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType

from gateway.core.model import (
    Availability,
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


def decision(**overrides: object) -> ChargeDecision:
    """A fresh two-pack decision (default policy) with some fields replaced."""
    from dataclasses import replace

    from gateway.app.config import PolicyConfig
    from gateway.core.controls import Controls
    from gateway.core.policy.engine import PolicyEngine

    now = 1_800_000_000.0
    d = PolicyEngine(PolicyConfig()).evaluate(bank(now), Controls().state(now), now)
    return replace(d, **overrides)  # type: ignore[arg-type]
