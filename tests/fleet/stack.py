"""Real processes for the fleet tests: a throw-away certificate authority (openssl), Mosquitto brokers
rendered from the templates in deploy/mosquitto/, Prometheus servers, the simulator and the gateway.

Everything binds to 127.0.0.1 on free ports, lives under the test's tmp_path and is stopped by the
context managers that started it (bounded waits, then SIGKILL). A tool that is not installed makes the
test skip with the command that installs it (`.ci/run` installs them all).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GATEWAY = Path(sys.executable).with_name("bms-gateway")


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package}; .ci/run installs it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, limit_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {limit_s} s")


def render(template: Path, values: Mapping[str, str]) -> str:
    """Substitute @NAME@ placeholders, as the sed line in the template's header does."""
    text = template.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    assert "@" not in "".join(line for line in text.splitlines() if not line.startswith("#")), text
    return text


# --- certificates ---


@dataclass(frozen=True, slots=True)
class Pki:
    dir: Path

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"


def make_pki(where: Path, clients: list[str]) -> Pki:
    """A CA, a server certificate for 127.0.0.1 ("central") and one client certificate per name."""
    openssl = need("openssl", "openssl")
    where.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=where, check=True, capture_output=True, timeout=30)

    run(
        "req",
        "-x509",
        *key,
        "-days",
        "2",
        "-subj",
        "/CN=bms-gateway test fleet CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    for name, cn, ext in [("central", "127.0.0.1", ["-extfile", "san.ext"])] + [(c, c, []) for c in clients]:
        run("req", *key, "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            *ext,
        )
    return Pki(where)


# --- processes ---


@contextlib.contextmanager
def running(
    args: list[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose output goes to `log`; terminated (then killed) on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, limit_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Mosquitto:
    """A broker process that can be stopped and started again on the same port and data."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = need("mosquitto", "mosquitto")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def brokers(*items: Mosquitto) -> Iterator[None]:
    try:
        for b in items:
            b.start()
        yield
    finally:
        for b in reversed(items):
            b.stop()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    url: str  # of the HTTP listener


def gateway_config(tmp: Path, sim_port: int, extra: str) -> GatewayConfig:
    """A gateway on a simulated bus (a `bms-gateway simulate` process), HTTP on a free port."""
    path = tmp / "gateway.toml"
    http_port = free_port()
    path.write_text(
        f"""
log_level = "info"
state_dir = "{tmp / "state"}"

[http]
listen = "127.0.0.1:{http_port}"

[modbus]
enabled = false

[[bus]]
name = "b1"
url = "socket://127.0.0.1:{sim_port}"
protocol = "tianpower"
addresses = [1, 2]
request_gap_s = 0.02
response_timeout_s = 0.3
retries = 0
realtime_interval_s = 0.5
stale_after_s = 1.5
offline_after_s = 3.0
{extra}
""",
        encoding="utf-8",
    )
    return GatewayConfig(path, f"http://127.0.0.1:{http_port}")


@contextlib.contextmanager
def simulator(tmp: Path, *args: str) -> Iterator[int]:
    """`bms-gateway simulate` on a free port; yields the port."""
    port = free_port()
    cmd = [str(GATEWAY), "simulate", "--packs", "2", "--listen", f"127.0.0.1:{port}", "--no-pacing", *args]
    with running(cmd, log=tmp / "simulate.log") as proc:
        wait_port(port, proc=proc)
        yield port


@contextlib.contextmanager
def gateway(config: GatewayConfig, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`bms-gateway run` until /readyz answers 200."""
    import httpx

    with running([str(GATEWAY), "run", "--config", str(config.path)], log=tmp / "gateway.log") as proc:
        url = config.url
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited {proc.returncode}: {(tmp / 'gateway.log').read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    "gateway not ready in 30 s: " + (tmp / "gateway.log").read_text()[-3000:]
                )
            time.sleep(0.1)
        yield proc
