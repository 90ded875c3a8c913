"""A served gateway as a person runs it: `bms-gateway simulate` (a PACE pack on TCP), then
`bms-gateway run` on its built-in Tianpower simulator plus that PACE bus, a factory token from
`bms-gateway token create`, and `cli(...)` to type `bms-gateway ...` commands against it.

Processes only (no in-process objects): what a test sees is what a person at a shell sees. Every
process is bound to 127.0.0.1 on a free port and stopped (terminate, then kill) when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).with_name("bms-gateway")
TZ = "Europe/Berlin"  # human output prints local times with their zone: a fixed zone to assert on

CONFIG = """\
state_dir = "state"

[http]
listen = "127.0.0.1:0"

[modbus]
enabled = false

[simulator]
enabled = true
packs = 3
profile = "idle"
pacing = false
{simulator_extra}

[[bus]]
name = "pace"
url = "socket://127.0.0.1:{pace_port}"
protocol = "pace"
addresses = [1]
request_gap_s = 0.01

[can]
protocol = "pylon"  # our inverter

[admin]
allow_inferred_writes = true
rate_limit_per_minute = {rate}
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Served:
    cwd: Path
    config: Path
    url: str = ""
    token: str = ""
    token_id: str = ""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BMS_GATEWAY_URL": self.url,
            "BMS_GATEWAY_TOKEN": self.token,
            "TZ": TZ,
            "COLUMNS": "200",
        }

    def new_token(self, role: str = "factory") -> None:
        """Use a new token from now on (each token has its own rate limit budget)."""
        created = self.cli(f"bms-gateway token create --role {role} --config {self.config} --label tests")
        assert created.code == 0, created
        self.token = created.out.strip().splitlines()[-1]
        self.token_id = self.token.split("_")[1]

    def cli(self, line: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> Result:
        """Run one command line as typed at a shell (`bms-gateway ...`), in the served directory."""
        argv = shlex.split(line)
        assert argv[0] == "bms-gateway", line
        done = subprocess.run(
            [str(BIN), *argv[1:]],
            cwd=self.cwd,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)


def _start(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )


def _read_until(proc: subprocess.Popen[str], prefix: str, deadline_s: float = 60.0) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + deadline_s
    seen = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process exited before printing {prefix!r}:\n{''.join(seen)}")
        seen.append(line)
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    raise AssertionError(f"no {prefix!r} line within {deadline_s} s:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def served_gateway(
    tmp: Path, *, rate: int = 120, simulator_extra: str = "", extra_config: str = ""
) -> Iterator[Served]:
    """The gateway process on its simulator (3 Tianpower packs `sim/1..3`) and a PACE pack `pace/1`."""
    env = {**os.environ, "TZ": TZ}
    served = Served(cwd=tmp, config=tmp / "gateway.toml")
    try:
        pace = _start(
            [
                str(BIN),
                "simulate",
                "--protocol",
                "pace",
                "--packs",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--no-pacing",
            ],
            tmp,
            env,
        )
        served.procs.append(pace)
        pace_port = int(_read_until(pace, "listening:").rpartition(":")[2])
        served.config.write_text(
            CONFIG.format(pace_port=pace_port, rate=rate, simulator_extra=simulator_extra) + extra_config
        )
        created = served.cli(
            f"bms-gateway token create --role factory --config {served.config} --label tests"
        )
        assert created.code == 0, created
        served.token = created.out.strip().splitlines()[-1]
        served.token_id = served.token.split("_")[1]
        gw = _start([str(BIN), "run", "--config", str(served.config)], tmp, env)
        served.procs.append(gw)
        served.url = _read_until(gw, "http:")
        _wait_for_packs(served)
        yield served
    finally:
        for proc in reversed(served.procs):
            _stop(proc)


def _wait_for_packs(served: Served, deadline_s: float = 60.0) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    packs: list[dict[str, object]] = []
    while time.monotonic() < end:
        packs = httpx.get(f"{served.url}/api/packs", timeout=5).json()
        if len(packs) == 4 and all(p["parameters"] is not None and p["online"] for p in packs):
            return
        time.sleep(0.2)
    raise AssertionError(f"packs not all read within {deadline_s} s: {packs}")
