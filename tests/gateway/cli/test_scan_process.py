"""Issue 17 defect 8, as processes: `bms-gateway scan` of a bus a running `bms-gateway run` polls
goes through the gateway's bus owner (role-checked, audited) instead of opening the bus a second
time, or says that the bus is in use (exit 4); a serial port locked by another program is reported
the same way. The API route itself is checked in-process too (roles, audit, the bus's protocol)."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.ops.security.auth import Role
from tests.support import REPO
from tests.support.admin_support import admin_stack

BMS_GATEWAY = [sys.executable, "-m", "gateway.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(*args: str, ready: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*BMS_GATEWAY, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for _ in range(200):  # bounded: the ready line comes within a few lines
        line = proc.stdout.readline()
        assert line, f"{args[0]} exited early"
        if line.startswith(ready):
            return proc, line[len(ready) :].strip()
    raise AssertionError(f"{args[0]} never printed {ready!r}")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BMS_GATEWAY_")}
    return subprocess.run(
        [*BMS_GATEWAY, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def polled_bus(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(bus URL, gateway URL, config) of a `bms-gateway run` polling 3 packs of a `simulate` process."""
    port = free_port()
    sim, _ = start(
        "simulate",
        "--packs",
        "3",
        "--listen",
        f"127.0.0.1:{port}",
        "--no-pacing",
        "--turnaround",
        "0",
        ready="listen",
    )
    bus = f"socket://127.0.0.1:{port}"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[http]\nlisten = "127.0.0.1:0"\n[modbus]\nenabled = false\n'
        f'[[bus]]\nname = "b1"\nurl = "{bus}"\nprotocol = "tianpower"\naddresses = [1, 2, 3]\n'
        "realtime_interval_s = 0.2\n"
    )
    try:
        gw, url = start("run", "--config", str(cfg), ready="http:")
        try:
            yield bus, url, cfg
        finally:
            stop(gw)
    finally:
        stop(sim)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=20)  # drains and closes the pipe


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_scan_of_a_polled_bus_goes_through_the_gateway(polled_bus: tuple[str, str, Path]) -> None:
    bus, url, cfg = polled_bus
    # without a token: the bus is in use, said clearly; the bus is not opened a second time
    refused = cli("scan", bus, "--gateway", url, "--addresses", "1-5", "--timeout", "0.3")
    assert refused.returncode == 4, refused
    assert "bus 'b1' of the gateway" in refused.stderr and "--token" in refused.stderr
    assert "Traceback" not in refused.stderr
    operator = (
        cli("token", "create", "--role", "operator", "--config", str(cfg)).stdout.strip().splitlines()[-1]
    )
    admin = cli("token", "create", "--role", "admin", "--config", str(cfg)).stdout.strip().splitlines()[-1]
    requests_before = _bus_requests(url, admin)
    for _ in range(3):  # one run in three missed a pack when scan opened the bus a second time
        done = cli(
            "scan",
            bus,
            "--addresses",
            "1-5",
            "--timeout",
            "0.3",
            env={"BMS_GATEWAY_URL": url, "BMS_GATEWAY_TOKEN": operator},
        )
        assert done.returncode == 0, done
        assert "scanned through the gateway" in done.stdout and "tianpower: addresses 1, 2, 3" in done.stdout
        assert 'url = "' + bus + '"' in done.stdout  # the configuration snippet
    assert _bus_requests(url, admin) >= requests_before + 15  # the probes went through its bus owner
    audit = httpx.get(
        f"{url}/api/audit", params={"action": "bus.scan"}, headers={"Authorization": f"Bearer {admin}"}
    )
    entries = audit.json()
    assert [e["outcome"] for e in entries] == ["ok"] * 3 and entries[0]["role"] == "operator"


def _bus_requests(url: str, token: str) -> int:
    doc = httpx.get(f"{url}/api/system", headers={"Authorization": f"Bearer {token}"}).json()
    return int(doc["gateway"]["buses"]["b1"]["counters"]["requests"])


@pytest.mark.e2e
def test_scan_of_a_locked_serial_port_says_it_is_in_use() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the gateway's exclusive open does
    try:
        done = cli("scan", path, "--gateway", f"http://127.0.0.1:{free_port()}", "--timeout", "0.1")
    finally:
        for f in (fd, slave, master):
            os.close(f)
    assert done.returncode == 4, done
    assert "in use by another process" in done.stderr and "Traceback" not in done.stderr


async def test_scan_route_roles_audit_and_protocol(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=3) as stack:
        body = {"addresses": [1, 2, 3, 4], "timeout_s": 0.2}
        r = await stack.client.post("/api/buses/sim/scan", json=body, headers=stack.auth(Role.VIEWER))
        assert r.status_code == 403
        before = stack.bus_requests
        r = await stack.client.post("/api/buses/sim/scan", json=body, headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 200, r.text
        assert r.json()["found"] == {"tianpower": [1, 2, 3]} and r.json()["bus_requests"] == 4
        assert stack.bus_requests == before + 4
        r = await stack.client.post("/api/buses/nope/scan", json=body, headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 404
        bad = {"addresses": [1], "timeout_s": 60}
        r = await stack.client.post("/api/buses/sim/scan", json=bad, headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 422
        entries = stack.admin.audit_log.query(action="bus.scan")
        assert sorted(e.outcome for e in entries) == ["ok", "refused"]
