"""Issue 17 defect 12, as a process: a listener that cannot start (the Modbus port taken, the HTTP
port taken, a serial port locked by another program for the BMS bus or the inverter RS485 port)
stops `bms-gateway run` at start-up with one clear line on stderr and exit code 2, instead of a
restart loop with tracebacks (docs/runtime.md)."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BMS_GATEWAY = str(Path(sys.executable).with_name("bms-gateway"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


@pytest.fixture
def locked_tty() -> Iterator[str]:
    """A pseudo-terminal's device, locked as pyserial's exclusive open does (flock): "in use"."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield path
    finally:
        for f in (fd, slave, master):
            os.close(f)


def run_gateway(
    tmp_path: Path, extra: str, *, http_port: int | None = None
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port or free_port()}"\n' + extra
    )
    return subprocess.run(
        [BMS_GATEWAY, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "restarting" not in proc.stderr, proc.stderr
    final = [line for line in proc.stderr.splitlines() if line.startswith("bms-gateway: ")]
    assert len(final) == 1, proc.stderr
    for needle in needles:
        assert needle in final[0], final[0]


def test_modbus_port_in_use(tmp_path: Path, taken_port: int) -> None:
    proc = run_gateway(
        tmp_path,
        f'[modbus]\nenabled = true\nlisten = "127.0.0.1:{taken_port}"\n[simulator]\nenabled = true\n',
    )
    assert_one_clear_line(proc, "modbus.listen", str(taken_port), "address already in use")


def test_http_port_in_use(tmp_path: Path, taken_port: int) -> None:
    proc = run_gateway(
        tmp_path, "[modbus]\nenabled = false\n[simulator]\nenabled = true\n", http_port=taken_port
    )
    assert_one_clear_line(proc, "http.listen", "address already in use")


def test_bms_bus_serial_port_in_use(tmp_path: Path, locked_tty: str) -> None:
    extra = f'[modbus]\nenabled = false\n[[bus]]\nname = "b1"\nurl = "{locked_tty}"\nprotocol = "tianpower"\n'
    extra += "addresses = [1]\n"
    proc = run_gateway(tmp_path, extra)
    assert_one_clear_line(proc, "bus b1", locked_tty, "in use by another process")


def test_inverter_rs485_port_in_use(tmp_path: Path, locked_tty: str) -> None:
    extra = "[modbus]\nenabled = false\n[simulator]\nenabled = true\n"
    extra += f'[inverter_rs485]\nenabled = true\nurl = "{locked_tty}"\n'
    proc = run_gateway(tmp_path, extra)
    assert_one_clear_line(proc, "inverter_rs485.url", "in use by another process")
