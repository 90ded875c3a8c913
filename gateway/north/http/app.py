"""The read-only HTTP API: health, readiness, the bank and every pack's snapshot.

`create_app(ctx)` builds the FastAPI application; routers that other adapters put into
`ctx.http_routers` (metrics, admin API, ...) are mounted as they are. With `[admin]
data_needs_token` the data routes need a bearer token of the viewer role or higher (the admin
API's tokens, `gateway.north.http.auth`); health and readiness stay open. The application only reads
`ctx.store` and the counters; it never talks to a bus.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from gateway import __version__
from gateway.app.context import AppContext
from gateway.north.documents import bank_document, pack_answer, plain


def gateway_status(ctx: AppContext, now: float) -> dict[str, Any]:
    buses: dict[str, Any] = {}
    for bcfg in ctx.config.bus:
        owner = ctx.buses.get(bcfg.name)
        poller = ctx.pollers.get(bcfg.name)
        buses[bcfg.name] = {
            "url": bcfg.url,
            "protocol": bcfg.protocol,
            "detected_protocol": None if poller is None else poller.detected_family,
            "addresses": list(bcfg.addresses),
            "paused": {} if poller is None else {str(a): why for a, why in poller.paused().items()},
            "connected": bool(owner and owner.connected),
            "counters": None if owner is None else plain(owner.counters),
            "realtime_interval_s": bcfg.realtime_interval_s,
        }
    for name, owner in ctx.buses.items():  # the built-in simulator's bus is not in the config
        if name not in buses:
            poller = ctx.pollers.get(name)
            buses[name] = {
                "url": None,
                "protocol": None if poller is None else poller.cfg.protocol,
                "detected_protocol": None if poller is None else poller.detected_family,
                "addresses": [] if poller is None else list(poller.cfg.addresses),
                "paused": {} if poller is None else {str(a): why for a, why in poller.paused().items()},
                "connected": owner.connected,
                "counters": plain(owner.counters),
                "realtime_interval_s": None if poller is None else poller.cfg.realtime_interval_s,
            }
    return {
        "version": __version__,
        "started_at": ctx.started_at,
        "uptime_s": max(0.0, now - ctx.started_at),
        "ready": ctx.all_ready,
        "simulator": ctx.simulator is not None,
        "services": [s.as_dict() for s in ctx.services.values()],
        "buses": buses,
        "endpoints": dict(ctx.endpoints),
        "model_version": ctx.store.view.version,
        "events_dropped": ctx.store.events_dropped,
    }


def _data_dependencies(ctx: AppContext) -> list[Any]:
    """The viewer-token check of the data routes when `[admin] data_needs_token` (else none)."""
    if not ctx.config.admin.data_needs_token:
        return []
    from gateway.app import shared
    from gateway.north.http.auth import bearer_caller
    from gateway.ops.security.auth import Role

    auth = shared.auth(ctx)  # the token store of the admin API (gateway.north.http.admin.install)
    # viewer is the weakest role: no 403 can happen, so there is nothing to audit
    return [Depends(bearer_caller(Role.VIEWER, auth.tokens, auth.limiter, lambda: None))]


def create_app(ctx: AppContext) -> FastAPI:
    # /docs is Swagger UI with its assets served by this process from the fastapi-offline package
    # (/static-offline-docs/...), never from a public CDN: the page works on a box without internet.
    app = FastAPIOffline(
        docs_url="/docs",
        redoc_url=None,
        title="bms-gateway",
        version=__version__,
        description="Battery packs on RS485: snapshots, bank aggregate and gateway status.",
    )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process and its event loop are alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """200 once every service reported ready, 503 with the services' states before that."""
        services = {s.name: s.state.value for s in ctx.services.values()}
        ready = ctx.all_ready
        return JSONResponse({"ready": ready, "services": services}, status_code=200 if ready else 503)

    data = _data_dependencies(ctx)

    @app.get("/api/system", tags=["data"], dependencies=data)
    async def system() -> dict[str, Any]:
        """The bank aggregate over online packs, the charge policy's latest decision (null before the
        first evaluation) and the gateway's own status."""
        now = time.time()
        decision = ctx.decisions.latest
        return {
            "bank": bank_document(ctx.store.view.bank),
            "policy": None if decision is None else plain(decision),
            "gateway": gateway_status(ctx, now),
        }

    @app.get("/api/packs", tags=["data"], dependencies=data)
    async def packs() -> list[dict[str, Any]]:
        """Every configured pack's latest snapshot, ordered by bus and address: each the pack's one
        JSON document (the same MQTT publishes on the pack's state topic) plus `age_s`."""
        now = time.time()
        return [pack_answer(p, now) for p in ctx.store.view.ordered()]

    @app.get("/api/packs/{bus}/{address}", tags=["data"], dependencies=data)
    async def pack(bus: str, address: int) -> dict[str, Any]:
        """One pack's latest snapshot (404 for a pack that is not configured)."""
        snap = ctx.store.view.pack(bus, address)
        if snap is None:
            known = ", ".join(f"{b}/{a}" for b, a in sorted(ctx.store.view.packs)) or "none"
            raise HTTPException(404, f"no pack {bus}/{address}; configured: {known}")
        return pack_answer(snap, time.time())

    from gateway.north.http.live import install_live_routes  # /api/stream, /api/policy

    install_live_routes(app, ctx, data)
    routers = [*ctx.http_routers, *(make() for make in ctx.http_router_factories)]
    for router in routers:
        app.include_router(router)
    _guard(app, ctx)
    from gateway.north.http.openapi import document

    document(app, [*app.routes, *(r for router in routers for r in router.routes)])
    return app


def _guard(app: FastAPI, ctx: AppContext) -> None:
    """Authentication before any body is read, and every body capped (`gateway.north.http.guard`)."""
    from gateway.north.http.guard import RequestGuard
    from gateway.ops.admin.transfer import MAX_FILE_BYTES

    def tokens() -> Any:
        return None if ctx.auth is None else ctx.auth.tokens

    app.add_middleware(
        RequestGuard,
        tokens=tokens,
        default_cap=ctx.config.admin.max_body_kib * 1024,
        caps=(
            (r"/api/packs/[^/]+/[^/]+/parameters/import", MAX_FILE_BYTES),
            (r"/api/firmware/images", ctx.config.firmware.max_image_kib * 1024 + 1024),
        ),
    )
