"""sd_notify over a real unix datagram socket, and the watchdog service."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import systemd


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, {"NOTIFY_SOCKET": str(path)}
    finally:
        sock.close()


def test_ready_status_and_stopping_arrive(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = notify_socket
    assert systemd.ready("polling 3 packs", env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=polling 3 packs"
    assert systemd.status("degraded", env)
    assert sock.recv(4096) == b"STATUS=degraded"
    assert systemd.stopping(env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"bmsgw-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    assert not systemd.ready(env={})
    assert systemd.watchdog_interval_s({}) is None
    # a socket that is gone is logged, never raised
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing")})


def test_watchdog_interval() -> None:
    base = {"NOTIFY_SOCKET": "/run/x"}
    assert systemd.watchdog_interval_s({**base, "WATCHDOG_USEC": "30000000"}) == 30.0
    pid = str(os.getpid())
    assert systemd.watchdog_interval_s({**base, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}) == 2.0
    assert systemd.watchdog_interval_s({**base, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval_s({**base, "WATCHDOG_USEC": "junk"}) is None
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "2000000"}) is None


async def test_watchdog_pings_while_healthy(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = notify_socket
    healthy = [True]
    refused = asyncio.Event()

    def check() -> bool:
        if not healthy[0] and service.skipped >= 1:
            refused.set()  # a second unhealthy check: the first one was already skipped
        return healthy[0]

    service = systemd.WatchdogService(check, {**env, "WATCHDOG_USEC": "40000"})
    ready: list[bool] = []
    task = asyncio.ensure_future(service.run(lambda: ready.append(True)))
    try:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, sock.recv, 64) == b"WATCHDOG=1"
        assert await loop.run_in_executor(None, sock.recv, 64) == b"WATCHDOG=1"
        healthy[0] = False
        await asyncio.wait_for(refused.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ready == [True] and service.pings >= 2
