"""A real `bms-gateway run` process for the process-level (e2e) tests: a config on the built-in
simulator, a token made by `bms-gateway token create`, the endpoints read from the process's own
start-up lines, and a bounded stop (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO

BASE_CONFIG = """\
state_dir = "state"

[http]
listen = "127.0.0.1:0"

[modbus]
enabled = false

[simulator]
enabled = true
packs = {packs}
profile = "idle"

[admin]
allow_inferred_writes = true
"""


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    config: Path
    endpoints: dict[str, str]
    token: str

    @property
    def url(self) -> str:
        return self.endpoints["http"]

    @property
    def pid(self) -> int:
        return self.proc.pid


def cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def make_token(config: Path, role: str = "admin") -> str:
    done = cli("token", "create", "--role", role, "--config", str(config))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def start(config: Path, *, wait_for: tuple[str, ...] = ("http",), timeout_s: float = 30.0) -> GatewayProcess:
    """`bms-gateway run --config config`, returned once the endpoints named in `wait_for` are listed."""
    token = make_token(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    endpoints: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not all(k in endpoints for k in wait_for):
            assert time.monotonic() < deadline, f"the gateway did not list {wait_for} in {timeout_s} s"
            line = proc.stdout.readline()
            assert line, "the gateway exited early"
            name, sep, value = line.partition(":")
            if sep and value.strip() and " " not in name:
                endpoints[name.strip()] = value.strip()
    except BaseException:
        stop(GatewayProcess(proc, config, endpoints, token))
        raise
    return GatewayProcess(proc, config, endpoints, token)


def stop(gw: GatewayProcess, *, timeout_s: float = 20.0) -> int:
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            gw.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(5)
    with contextlib.suppress(Exception):
        assert gw.proc.stdout is not None
        gw.proc.stdout.close()
    return gw.proc.returncode


@contextlib.contextmanager
def running(config: Path, **kw: object) -> Iterator[GatewayProcess]:
    gw = start(config, **kw)  # type: ignore[arg-type]
    try:
        yield gw
    finally:
        stop(gw)


def write_config(tmp: Path, extra: str = "", *, packs: int = 2) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(BASE_CONFIG.format(packs=packs) + extra)
    return path
