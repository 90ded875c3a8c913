"""The service interface every long-running part of the gateway implements, and its live status.

A service (bus owner, poller, HTTP, Modbus server, CAN, RS485 inverter port, MQTT, ...) is an
object with a `name` and an `async run(ready)` coroutine that runs until it is cancelled and calls
`ready()` once it is able to do its job (socket bound, bus opened, first connection attempted).
The supervisor in `gateway.app.wiring` starts every service in one TaskGroup, restarts a crashing one with
backoff, and stops the start when a service raises `gateway.app.config.ConfigError`.

This module must never start tasks or perform I/O itself; it only describes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

ReadyCallback = Callable[[], None]


@runtime_checkable
class Service(Protocol):
    """What the supervisor runs.

    `run` must keep running until cancelled (returning early counts as a stop and is restarted
    like a crash). It calls `ready()` once, as soon as the service is usable; calling it again
    after a restart is expected. Raise `gateway.app.config.ConfigError` for problems that no restart
    can fix (a bad listen address, an unknown protocol name): the supervisor then stops the start.
    """

    name: str

    async def run(self, ready: ReadyCallback) -> None: ...


class ServiceState(enum.StrEnum):
    STARTING = "starting"  # run() started, ready() not called yet
    READY = "ready"
    FAILED = "failed"  # crashed; waiting for the restart backoff
    STOPPED = "stopped"  # cancelled during shutdown


@dataclass(slots=True)
class ServiceStatus:
    """Live status of one supervised service (mutated by the supervisor only)."""

    name: str
    state: ServiceState = ServiceState.STARTING
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    ready_at: float | None = None  # wall clock of the last ready() call

    def mark_ready(self, now: float | None = None) -> None:
        self.state = ServiceState.READY
        self.ready_at = time.time() if now is None else now

    def mark_failed(self, error: BaseException, now: float | None = None) -> None:
        self.state = ServiceState.FAILED
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_error_at = time.time() if now is None else now

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "ready_at": self.ready_at,
        }
