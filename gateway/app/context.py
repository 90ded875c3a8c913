"""`AppContext`: everything a service (adapter) may use, built once by `gateway.app.wiring`.

Adapters (Modbus server, CAN, RS485 inverter port, metrics, MQTT, admin API, history) receive the
context in their constructor and read the model from `ctx.store`, put caps into `ctx.controls`,
send commands to packs only through `ctx.buses[name]` (the bus owner's queue) with the driver of
`ctx.pollers[name].driver`, and may add HTTP routes by appending to `ctx.http_routers` before the
HTTP service starts.

This module must never open a transport, start a task or read a file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.app.config import Config
from gateway.app.supervisor import ServiceState, ServiceStatus
from gateway.core.controls import Controls
from gateway.core.model import ModelStore, PackKey

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.south.bus import BusOwner
    from gateway.south.drivers.base import Driver
    from gateway.south.poller import BusPoller


@dataclass(slots=True)
class AppContext:
    config: Config
    config_path: Path | None
    store: ModelStore
    controls: Controls = field(default_factory=Controls)
    buses: dict[str, BusOwner] = field(default_factory=dict)  # by bus name; each has `.counters`
    pollers: dict[str, BusPoller] = field(default_factory=dict)  # by bus name
    simulator: Any | None = None  # simulator.Simulator when running on the built-in simulator
    started_at: float = field(default_factory=time.time)
    services: dict[str, ServiceStatus] = field(default_factory=dict)  # filled by the supervisor
    http_routers: list[APIRouter] = field(default_factory=list)  # extra routers mounted by the HTTP app
    endpoints: dict[str, str] = field(default_factory=dict)  # what listens where ("http" -> "http://...")
    extras: dict[str, Any] = field(default_factory=dict)  # objects adapters share (e.g. "decisions")

    @property
    def pack_keys(self) -> list[PackKey]:
        return sorted(self.store.view.packs)

    def bus_for(self, key: PackKey) -> BusOwner:
        """The bus owner of a pack (KeyError with a clear message when unknown)."""
        try:
            return self.buses[key[0]]
        except KeyError:
            raise KeyError(f"unknown bus {key[0]!r}; configured: {', '.join(sorted(self.buses))}") from None

    def poller_for(self, key: PackKey) -> BusPoller:
        try:
            return self.pollers[key[0]]
        except KeyError:
            raise KeyError(f"unknown bus {key[0]!r}; configured: {', '.join(sorted(self.pollers))}") from None

    def driver_for(self, key: PackKey) -> Driver | None:
        """The driver speaking to the pack's bus (None while `protocol = "auto"` is still detecting)."""
        return self.poller_for(key).driver

    def request_parameters_refresh(self, key: PackKey) -> None:
        """Ask the poller to re-read a pack's parameter tables soon (call after every write)."""
        self.poller_for(key).request_parameters_refresh(key)

    def register_endpoint(self, name: str, where: str) -> None:
        self.endpoints[name] = where

    @property
    def all_ready(self) -> bool:
        return bool(self.services) and all(s.state is ServiceState.READY for s in self.services.values())
