"""systemd integration without a dependency: sd_notify READY/STATUS/STOPPING/WATCHDOG over the
unix datagram socket named in $NOTIFY_SOCKET, and a watchdog service for `Type=notify` units with
`WatchdogSec=`.

Outside systemd (no $NOTIFY_SOCKET) every call is a cheap no-op returning False. A notification
that cannot be sent is logged at debug level and never raises: systemd integration must not be a
reason for the gateway to stop.

This module must never block: a datagram send to a local socket does not wait for a reader.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from gateway.app.supervisor import ReadyCallback

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message (e.g. "READY=1\\nSTATUS=polling 3 packs"); True when sent."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(message.encode())
    except OSError as err:
        log.debug("sd_notify to %r failed: %s", env.get("NOTIFY_SOCKET"), err)
        return False
    return True


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the gateway is up (call once every service reported ready)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    return notify(f"STATUS={text}", env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a graceful shutdown has begun."""
    return notify("STOPPING=1", env)


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd expects (WatchdogSec), or None when no watchdog applies to us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class WatchdogService:
    """Pings the systemd watchdog at half its period while `healthy()` says the gateway works.

    When `healthy()` returns False the pings stop and systemd restarts the unit after WatchdogSec.
    Without a watchdog in the environment the service reports ready and just waits.
    """

    name = "systemd-watchdog"

    def __init__(
        self, healthy: Callable[[], bool] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.healthy = healthy
        self.env = env
        self.pings = 0
        self.skipped = 0

    async def run(self, ready_cb: ReadyCallback) -> None:
        interval = watchdog_interval_s(self.env)
        ready_cb()
        if interval is None:
            await asyncio.Event().wait()  # nothing to do; run until cancelled
            return
        while True:
            if self.healthy is None or self.healthy():
                if notify("WATCHDOG=1", self.env):
                    self.pings += 1
            else:
                self.skipped += 1
                log.warning("gateway unhealthy: not feeding the systemd watchdog")
            await asyncio.sleep(interval / 2)
