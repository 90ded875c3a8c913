"""The pack model: derived values and the bank aggregation rules."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.model import (
    Availability,
    EventKind,
    ModelStore,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
    aggregate,
)
from tests.support.flags import named


def _tel(cells: list[float], current: float, soc: float, full: float, **kw: object) -> Telemetry:
    return Telemetry.build(
        measured_at=1000.0,
        cell_voltages_v=cells,
        temperatures=[Temperature(TempRole.CELL, 1, 20.0), Temperature(TempRole.CELL, 2, 24.0)],
        voltage_v=sum(cells),
        current_a=current,
        soc_pct=soc,
        full_capacity_ah=full,
        remaining_capacity_ah=full * soc / 100,
        **kw,  # type: ignore[arg-type]
    )


def test_derived_values() -> None:
    t = _tel([3.30, 3.35, 3.28, 3.31], current=-10.0, soc=50.0, full=100.0)
    assert t.cell_max_v == 3.35 and t.cell_max_index == 2
    assert t.cell_min_v == 3.28 and t.cell_min_index == 3
    assert t.cell_diff_v == pytest.approx(0.07)
    assert t.power_w == pytest.approx(t.voltage_v * -10.0)
    assert t.remaining_discharge_time_s == pytest.approx(5 * 3600)
    assert t.remaining_charge_time_s is None
    assert (t.temp_min_c, t.temp_max_c) == (20.0, 24.0)


def test_bank_aggregate_rules() -> None:
    a = PackSnapshot("b", 1, Availability.ONLINE, _tel([3.3] * 4, 10.0, 80.0, 100.0))
    b = PackSnapshot(
        "b", 2, Availability.ONLINE, _tel([3.4] * 4, 20.0, 20.0, 300.0, flags=named("CELL_OV_Prot"))
    )
    c = PackSnapshot("b", 3, Availability.OFFLINE, _tel([2.0] * 4, 99.0, 1.0, 100.0))
    d = PackSnapshot("b", 4, Availability.STALE, _tel([2.0] * 4, 99.0, 1.0, 100.0))
    bank = aggregate([a, b, c, d], now=5.0)
    assert bank.packs_online == 2 and bank.packs_offline == 1 and bank.packs_stale == 1
    assert bank.current_a == pytest.approx(30.0)
    assert bank.voltage_v == pytest.approx((13.2 + 13.6) / 2)
    assert bank.soc_pct == pytest.approx((80 * 100 + 20 * 300) / 400)
    assert bank.cell_max is not None and bank.cell_max.address == 2
    assert bank.cell_min is not None and bank.cell_min.address == 1
    assert bank.protections == {"CELL_OV_Prot"} and bank.protecting_packs == (("b", 2),)
    assert bank.flags == named("CELL_OV_Prot")


async def test_store_publishes_views_and_events() -> None:
    store = ModelStore([("b", 1)])
    events: list[object] = []

    async def collect() -> None:
        async for ev in store.events():
            events.append(ev)
            if len(events) == 2:
                return

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(0)
    store.publish(
        PackSnapshot(
            "b", 1, Availability.ONLINE, _tel([3.3] * 4, 1.0, 50.0, 100.0, flags=named("CELL_OV_Alarm"))
        )
    )
    await asyncio.wait_for(task, 2)
    kinds = sorted((e.kind, e.name) for e in events)  # type: ignore[attr-defined]
    assert kinds == [(EventKind.ALARM, "CELL_OV_Alarm"), (EventKind.AVAILABILITY, "online")]
    assert store.view.version == 1 and store.view.bank.packs_online == 1
