"""Issue 17 defect 3: a verified write is visible at once. After an SN, capacity, cell-count or
clock write, `/api/packs`, `/metrics` and the history key show the read-back value in the next
request, not after the poller's next identity read (every 3600 s by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.north.http import create_app
from gateway.north.metrics.collector import install as install_metrics
from gateway.ops.history.service import HistoryService
from gateway.ops.security.auth import Role
from tests.support.admin_support import Stack, admin_stack


async def pack_doc(client: httpx.AsyncClient) -> dict[str, Any]:
    packs = (await client.get("/api/packs")).json()
    doc: dict[str, Any] = next(p for p in packs if p["bus"] == "sim" and p["address"] == 1)
    return doc


def with_metrics(stack: Stack) -> httpx.AsyncClient:
    install_metrics(stack.ctx)
    app = create_app(stack.ctx)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")


async def test_serial_write_shows_in_packs_metrics_and_history_key(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack, with_metrics(stack) as client:
        old = (await pack_doc(client))["identity"]["serial"]
        assert old and old != "BG-0042"
        # the next identity read is an hour away: only the write itself can update the model
        assert stack.poller.packs[1].next_identity - stack.poller._mono() > 3000
        r = await client.put(
            "/api/packs/sim/1/serial", json={"serial": "BG-0042"}, headers=stack.auth(Role.ADMIN)
        )
        assert r.status_code == 200 and r.json()["items"][0]["outcome"] == "verified", r.text
        assert (await pack_doc(client))["identity"]["serial"] == "BG-0042"
        metrics = (await client.get("/metrics")).text
        assert 'serial="BG-0042"' in metrics and f'serial="{old}"' not in metrics
        history = HistoryService.from_context(stack.ctx)
        try:
            assert await history.pack_serial(("sim", 1)) == "BG-0042"
        finally:
            history.db.close()


async def test_capacities_cell_count_and_clock_show_their_read_back(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack, with_metrics(stack) as client:
        admin = stack.auth(Role.ADMIN)
        body = {"full_ah": 180.0, "nominal_ah": 180.0, "allow_inferred": True}
        r = await client.put("/api/packs/sim/1/capacities", json=body, headers=admin)
        assert r.status_code == 200, r.text
        doc = await pack_doc(client)
        assert doc["telemetry"]["full_capacity_ah"] == 180.0
        assert "bms_pack_full_capacity_ampere_hours" in (metrics := (await client.get("/metrics")).text)
        assert any(
            line.startswith("bms_pack_full_capacity_ampere_hours{") and line.endswith(" 180.0")
            for line in metrics.splitlines()
        )
        # the cell count has no read-back (the pack applies it after a reset): the telemetry read
        # right after the write is published, so the model shows what the pack reports now
        before = stack.ctx.store.view.pack("sim", 1)
        assert before is not None and before.telemetry is not None
        measured = before.telemetry.measured_at
        r = await client.put(
            "/api/packs/sim/1/cell-count",
            json={"cells": 15, "confirm": True},
            headers=stack.auth(Role.FACTORY),
        )
        assert r.status_code == 200, r.text
        after = stack.ctx.store.view.pack("sim", 1)
        assert after is not None and after.telemetry is not None and after.telemetry.measured_at > measured
        # the clock read back after a sync is the model's clock at once
        stack.sim.pack(1).clock_offset_s = 900.0  # the pack's clock is a quarter of an hour fast
        r = await client.post("/api/clock/sync", json={"packs": ["sim/1"]}, headers=admin)
        assert r.status_code == 200, r.text
        snap = stack.ctx.store.view.pack("sim", 1)
        assert snap is not None and snap.clock is not None and abs(snap.clock.drift_s) <= 3.0
        assert (await pack_doc(client))["clock"]["read_at"] == snap.clock.read_at
