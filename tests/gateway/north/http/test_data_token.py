"""`[admin] data_needs_token`: the data routes (`/api/system`, `/api/packs`, one pack) need a bearer
token of any role; health, readiness and the OpenAPI document stay open. Off by default."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.app.config import parse_config
from gateway.app.context import AppContext
from gateway.core.model import ModelStore
from gateway.north.http import create_app
from gateway.ops.security.auth import Role
from tests.support.admin_support import admin_stack

DATA = ["/api/system", "/api/packs", "/api/packs/sim/1"]


@pytest.mark.e2e
async def test_data_routes_need_a_viewer_token_when_configured(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        for path in DATA:  # the default: open, as before
            assert (await stack.client.get(path)).status_code == 200, path
        cfg = stack.ctx.config
        stack.ctx.config = cfg.model_copy(
            update={"admin": cfg.admin.model_copy(update={"data_needs_token": True})}
        )
        transport = httpx.ASGITransport(app=create_app(stack.ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            for path in DATA:
                r = await client.get(path)
                assert r.status_code == 401, path
                assert "viewer role" in r.json()["detail"] and "token create" in r.json()["detail"]
                r = await client.get(path, headers={"Authorization": "Bearer bmsg_nope_x"})
                assert r.status_code == 401, path
                for role in Role:
                    assert (await client.get(path, headers=stack.auth(role))).status_code == 200, (path, role)
            for path in ("/healthz", "/readyz", "/api/openapi.json"):
                assert (await client.get(path)).status_code != 401, path
            r = await client.get("/api/packs/sim/1", headers=stack.auth(Role.VIEWER))
            assert r.json()["address"] == 1 and r.json()["paused"] is None


async def test_without_the_admin_api_the_token_file_of_the_config_is_used(tmp_path: Path) -> None:
    from gateway.ops.security.auth import TokenStore

    cfg = parse_config({"state_dir": str(tmp_path), "admin": {"data_needs_token": True}}, env={})
    ctx = AppContext(config=cfg, config_path=None, store=ModelStore([]))
    _, token = TokenStore(tmp_path / "tokens.json").create(Role.VIEWER, "grafana")
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        assert (await client.get("/api/packs")).status_code == 401
        r = await client.get("/api/packs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json() == []
