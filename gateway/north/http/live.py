"""Live read routes: `GET /api/stream` (server-sent snapshots) and `GET /api/policy`.

`/api/stream` sends the bank, every pack's snapshot (without its parameter table) and the charge
decision as one JSON document per `data:` line: at once, then whenever the model changed but at
most once per `interval_s`, and at least every `heartbeat_s` so a client can tell a quiet gateway
from a dead connection. `/api/policy` is the bank as the inverter sees it: the decision with the
limiting factor of every value, and what the selected CAN and RS485 inverter protocols send for it.
Both follow `[admin] data_needs_token` like `/api/packs`.

This module only reads `ctx.store` and the adapters' published state; it never talks to a bus and
never changes a running adapter (the CAN frames shown are encoded by a separate protocol instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse

from gateway.app.context import AppContext
from gateway.core.model import PackSnapshot
from gateway.north.documents import bank_document, pack_answer, plain

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


def stream_pack_json(snap: PackSnapshot, now: float) -> dict[str, Any]:
    """A pack's snapshot for the live stream: the live form of its document (the parameter table
    left out, its read time kept), with `age_s` as the HTTP API answers it."""
    return pack_answer(snap, now, parameter_values=False)


def decision_json(ctx: AppContext) -> dict[str, Any] | None:
    decision = ctx.decisions.latest
    return None if decision is None else plain(decision)


def snapshot_doc(ctx: AppContext, now: float) -> dict[str, Any]:
    view = ctx.store.view
    return {
        "t": now,
        "version": view.version,
        "bank": bank_document(view.bank),
        "packs": [stream_pack_json(p, now) for p in view.ordered()],
        "decision": decision_json(ctx),
    }


async def snapshots(
    ctx: AppContext, interval_s: float, heartbeat_s: float = HEARTBEAT_S
) -> AsyncIterator[dict[str, Any]]:
    """The current snapshot, then one as soon as the model changed (but at most one per
    `interval_s`), and one at least every `heartbeat_s`. Ends only when the client goes away."""
    changed = asyncio.Event()

    async def watch() -> None:
        async for _ in ctx.store.subscribe():
            changed.set()

    watcher = asyncio.create_task(watch())
    try:
        while True:
            changed.clear()
            yield snapshot_doc(ctx, time.time())
            await asyncio.sleep(interval_s)  # the rate limit
            if not changed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, heartbeat_s - interval_s)):
                        await changed.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _can_part(ctx: AppContext, decision: Any, now: float, cache: dict[str, Any]) -> dict[str, Any]:
    from mappings.flags import load_outputs
    from protocol.inverter.can import registry

    cfg = ctx.config.can
    service = ctx.can
    name = service.protocol.name if service is not None else cfg.protocol
    out: dict[str, Any] = {
        "protocol": name,
        "enabled": cfg.enabled,
        "running": service is not None,
        "stats": None if service is None else plain(service.stats.as_dict()),
        "frames": [],
        "error": None,
    }
    if decision is None or not decision.has_data:
        out["error"] = "no pack data yet: nothing is sent before the first fresh reading"
        return out
    try:
        proto = cache.get(name)
        if proto is None:
            options = cfg.options if name == cfg.protocol else {}
            proto = cache[name] = registry.create(name, options, flag_outputs=load_outputs())
        state = service.current_state(now) if service is not None else decision
        if state is None:
            return out
        for message in proto.messages_sent():
            values = proto.values(message, state, now)
            frame = proto.encode(message, state, now)
            out["frames"].append(
                {
                    "message": message,
                    "id": frame.arbitration_id,
                    "extended": frame.is_extended,
                    "data": frame.data.hex(" ").upper(),
                    "signals": plain(values),
                }
            )
    except Exception as err:  # a protocol that cannot encode this state: say so, never break the page
        log.debug("CAN preview of %s failed", name, exc_info=True)
        out["error"] = f"{type(err).__name__}: {err}"
    return out


def _rs485_part(ctx: AppContext, decision: Any) -> dict[str, Any]:
    from gateway.north.rs485.service import limits_of, parameters_of

    cfg = ctx.config.inverter_rs485
    service = ctx.rs485
    out: dict[str, Any] = {
        "protocol": service.protocol if service is not None else cfg.protocol,
        "enabled": cfg.enabled,
        "running": service is not None,
        "stats": None,
        "limits": plain(limits_of(decision, ctx.store.view, parameters_of(decision))),
    }
    if service is not None:
        out["stats"] = plain(service.stats())
    return out


def install_live_routes(app: FastAPI, ctx: AppContext, dependencies: list[Any]) -> None:
    """Add `/api/stream` and `/api/policy` to the read API, with the data routes' dependencies."""
    can_cache: dict[str, Any] = {}

    @app.get("/api/stream", tags=["data"], dependencies=dependencies)
    async def stream(
        interval_s: float = Query(1.0, ge=0.2, le=60.0, description="at most one snapshot per interval"),
    ) -> StreamingResponse:
        """Server-sent events: the bank, every pack (without parameter tables) and the charge
        decision, at once and on every change (at most one per `interval_s`, at least every 5 s)."""

        async def body() -> AsyncIterator[bytes]:
            async for doc in snapshots(ctx, interval_s):
                yield f"data: {json.dumps(doc, separators=(',', ':'))}\n\n".encode()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/policy", tags=["data"], dependencies=dependencies)
    async def policy() -> dict[str, Any]:
        """The charge decision with every value's limiting factor, and what the selected CAN and
        RS485 inverter protocols send for it (CAN frames with their signals; RS485 limits)."""
        now = time.time()
        decision = ctx.decisions.latest
        return {
            "t": now,
            "decision": None if decision is None else plain(decision),
            "can": _can_part(ctx, decision, now, can_cache),
            "rs485": _rs485_part(ctx, decision),
        }
