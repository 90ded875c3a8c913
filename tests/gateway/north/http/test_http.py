"""The read-only HTTP API over a model store (ASGI in-process; the served path is in test_app)."""

from __future__ import annotations

import math
import re

import httpx
from fastapi import APIRouter

from gateway.app.config import Config
from gateway.app.context import AppContext
from gateway.app.supervisor import ServiceStatus
from gateway.core.model import (
    Availability,
    ClockReading,
    LinkStats,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.documents import pack_answer, plain
from gateway.north.http import create_app
from tests.support.flags import by_kind


def tele(soc: float, current: float = 10.0, protections: tuple[str, ...] = ()) -> Telemetry:
    """`protections`: flag names of the codecs' tables."""
    return Telemetry.build(
        measured_at=1000.0,
        cell_voltages_v=[3.30, 3.35, 3.32],
        temperatures=[Temperature(TempRole.CELL, 1, 25.0), Temperature(TempRole.MOS, 1, 31.0)],
        voltage_v=9.97,
        current_a=current,
        soc_pct=soc,
        full_capacity_ah=100.0,
        remaining_capacity_ah=soc,
        flags=by_kind(protections),
    )


def context() -> AppContext:
    store = ModelStore([("b1", 1), ("b1", 2), ("b2", 5)], names={("b1", 1): "left"})
    store.publish(
        PackSnapshot(
            "b1",
            1,
            Availability.ONLINE,
            tele(40.0, protections=("Cell OV protection",)),
            PackIdentity(version="V1", serial="SN1", protocol="tianpower"),
            ParameterSet.of(999.0, [ParameterReading("CELL_OV_Start", 3.65, "V")]),
            ClockReading(1002.0, 1000.0),
            LinkStats(requests=4, responses=3, last_success_at=1000.0),
            name="left",
        ),
        PackSnapshot("b1", 2, Availability.STALE, tele(80.0)),
        now=1000.0,
    )
    return AppContext(config=Config(), config_path=None, store=store)


async def get(ctx: AppContext, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_health_and_readiness() -> None:
    ctx = context()
    assert (await get(ctx, "/healthz")).json() == {"status": "ok"}
    ctx.services["poller:b1"] = ServiceStatus("poller:b1")
    r = await get(ctx, "/readyz")
    assert r.status_code == 503 and r.json()["services"] == {"poller:b1": "starting"}
    ctx.services["poller:b1"].mark_ready()
    r = await get(ctx, "/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


async def test_packs_list_and_single_pack() -> None:
    ctx = context()
    r = await get(ctx, "/api/packs")
    packs = r.json()
    assert [(p["bus"], p["address"], p["availability"]) for p in packs] == [
        ("b1", 1, "online"),
        ("b1", 2, "stale"),
        ("b2", 5, "unknown"),
    ]
    one = (await get(ctx, "/api/packs/b1/1")).json()
    t = one["telemetry"]
    assert one["name"] == "left" and one["online"] is True
    assert t["cell_voltages_v"] == [3.30, 3.35, 3.32]
    assert t["cell_max_v"] == 3.35 and t["cell_max_index"] == 2 and t["cell_min_index"] == 1
    assert math.isclose(t["power_w"], 99.7)
    assert t["protections"] == ["Cell OV protection"]
    assert t["temperatures"][1] == {"role": "mos", "index": 1, "label": "mos1", "value_c": 31.0}
    assert one["identity"]["serial"] == "SN1"
    assert one["parameters"]["values"]["CELL_OV_Start"] == {"value": 3.65, "unit": "V"}
    assert one["clock"]["drift_s"] == 2.0
    assert one["link"]["success_ratio"] == 0.75
    unknown = (await get(ctx, "/api/packs/b2/5")).json()
    assert unknown["telemetry"] is None and unknown["availability"] == "unknown"
    r = await get(ctx, "/api/packs/b9/1")
    assert r.status_code == 404 and "b1/1" in r.json()["detail"]
    assert (await get(ctx, "/api/packs/b1/x")).status_code == 422


async def test_system_bank_counts_only_online_packs() -> None:
    ctx = context()
    body = (await get(ctx, "/api/system")).json()
    bank = body["bank"]
    assert bank["packs_configured"] == 3 and bank["packs_online"] == 1
    assert bank["packs_stale"] == 1 and bank["packs_offline"] == 1
    assert bank["soc_pct"] == 40.0  # the stale pack's 80 % is excluded
    assert bank["protecting_packs"] == [{"bus": "b1", "address": 1}]
    assert bank["cell_diff_v"] is not None
    gw = body["gateway"]
    assert gw["version"] and gw["ready"] is False and gw["simulator"] is False


async def test_extra_routers_are_mounted() -> None:
    ctx = context()
    router = APIRouter()

    @router.get("/metrics")
    async def metrics() -> dict[str, int]:
        return {"n": len(ctx.store.view.packs)}

    ctx.http_routers.append(router)
    assert (await get(ctx, "/metrics")).json() == {"n": 3}


def test_plain_handles_non_finite_and_sets() -> None:
    assert plain({"a": float("nan"), "b": frozenset({"z", "a"}), "c": b"\x01"}) == {
        "a": None,
        "b": ["a", "z"],
        "c": "01",
    }
    assert plain([3.2800000000000002, 0.1 + 0.2, 1764150000.123456, 0.0834561999887]) == [
        3.28,
        0.3,
        1764150000.123456,
        0.0834561999887,
    ]
    snap = PackSnapshot("b", 1, Availability.OFFLINE)
    assert pack_answer(snap, 2000.0)["age_s"] is None


async def test_docs_page_loads_swagger_ui_from_the_gateway_not_a_cdn() -> None:
    """Issue 17 defect 9: /docs loaded Swagger UI from a public CDN and was blank offline."""
    app = create_app(AppContext(config=Config(), config_path=None, store=ModelStore([])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
        assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets  # same origin
        for asset in assets:
            r = await client.get(asset)
            assert r.status_code == 200 and len(r.content) > 1000, asset
        assert "cdn" not in page.text.lower() and "openapi.json" in page.text
        assert (await client.get("/openapi.json")).status_code == 200
