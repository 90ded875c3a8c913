"""The real processes: `bms-gateway token create`, then `bms-gateway run` on its built-in simulator, then
`bms-gateway admin ...` commands against it over a real socket. Proves the admin API is wired into
the gateway (`gateway.app.wiring.build_services`) and that tokens created by the command work."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ROOT = REPO

CONFIG = """\
state_dir = "state"

[http]
listen = "127.0.0.1:0"

[modbus]
enabled = false

[simulator]
enabled = true
packs = 2
profile = "idle"

[can]
protocol = "pylon"  # our inverter

[admin]
allow_inferred_writes = true
"""


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_token_run_and_admin_cli_processes(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    code, out, _ = await cli("token", "create", "--role", "admin", "--config", str(cfg))
    assert code == 0
    token = out.strip().splitlines()[-1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        "run",
        "--config",
        str(cfg),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = (await proc.stdout.readline()).decode()
                assert line, "the gateway exited early"
                if line.startswith("http:"):
                    url = line.removeprefix("http:").strip()
        env = {"BMS_GATEWAY_URL": url, "BMS_GATEWAY_TOKEN": token}
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(300):
                packs = (await client.get("/api/packs")).json()
                if all(p["parameters"] is not None for p in packs):
                    break
                await asyncio.sleep(0.1)
            assert [p["address"] for p in packs] == [1, 2] and all(p["parameters"] for p in packs)
        code, out, err = await cli(
            "admin", "params", "set", "all", "CELL_OV_Start=3.62", "--allow-inferred", "--json", env=env
        )
        doc = json.loads(out)
        assert code == 0, err
        assert doc["written"] == ["sim/1", "sim/2"]
        assert {i["outcome"] for p in doc["packs"] for i in p["items"]} == {"verified"}
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            pack = (await client.get("/api/packs/sim/2")).json()
        assert pack["parameters"]["values"]["CELL_OV_Start"]["value"] == 3.62
        code, out, _ = await cli("admin", "protocol", "--can", "sma", env=env)
        assert code == 0 and 'protocol = "sma"  # our inverter' in cfg.read_text()
        code, out, _ = await cli("admin", "audit", "--json", env=env)
        assert {e["action"] for e in json.loads(out)} >= {"parameters.write", "gateway.protocols"}
        assert (tmp_path / "state" / "audit.sqlite").exists()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
