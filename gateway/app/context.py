"""`AppContext`: everything a service (adapter) may use, built once by `gateway.app.wiring`.

Adapters (Modbus server, CAN, RS485 inverter port, metrics, MQTT, admin API, history) receive the
context in their installer (`install(ctx) -> list[Service]`) and read the model from `ctx.store`,
put caps into `ctx.controls`, send commands to packs only through `ctx.buses[name]` (the bus
owner's queue) with the driver of `ctx.pollers[name].driver`, and may add HTTP routes by appending
to `ctx.http_routers` before the HTTP service starts.

What services share is a typed field here, never a lookup by string: the stores every service needs
(`decisions`, `pack_jobs`, `audit_log`, `auth`) are built once, before any installer runs;
the fields naming a service (`modbus_stats`, `can`, `rs485`, `mqtt`, `admin`) are set by that
service's installer and typed by what the others use of it (structural `Protocol`s below), so this
module imports no adapter.

This module must never open a transport, start a task or read a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.app.config import Config
from gateway.app.supervisor import Service, ServiceState, ServiceStatus
from gateway.core.controls import Controls
from gateway.core.model import ModelStore, PackKey
from gateway.core.policy.decisions import DecisionStore
from gateway.ops.pack_jobs import PackJobs

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.core.policy.engine import ChargeDecision
    from gateway.north.modbus.stats import ModbusStats
    from gateway.ops.security.audit import AuditLog
    from gateway.ops.security.auth import RateLimiter, TokenStore
    from gateway.south.bus import BusOwner
    from gateway.south.drivers.base import Driver
    from gateway.south.poller import BusPoller
    from protocol.inverter.can.base import InverterProtocol, OptionValue


# --- what a service shares with the others (structural: no import of the adapter) -----------------


class CanCounters(Protocol):
    """What metrics read of `gateway.north.can.service.CanStats`."""

    @property
    def protocol(self) -> str: ...
    @property
    def frames_sent(self) -> int: ...
    @property
    def frames_received(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    @property
    def error_frames(self) -> int: ...
    @property
    def keepalive(self) -> object: ...  # a `KeepaliveState` (str enum)
    def as_dict(self) -> dict[str, object]: ...


class CanPort(Protocol):
    """The running inverter CAN service (`gateway.north.can.service.CanService`)."""

    @property
    def stats(self) -> CanCounters: ...
    @property
    def protocol(self) -> InverterProtocol: ...
    def current_state(self, now: float) -> ChargeDecision | None: ...
    def set_protocol(self, name: str, options: Mapping[str, OptionValue] | None = None) -> None: ...


class Rs485Counters(Protocol):
    """What metrics read of `gateway.north.rs485.service.Rs485Stats`."""

    @property
    def protocol(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def inverter_present(self) -> bool | None: ...


class Rs485Port(Protocol):
    """The running inverter RS485 port (`gateway.north.rs485.service.Rs485InverterService`)."""

    @property
    def protocol(self) -> str: ...
    def stats(self) -> Rs485Counters: ...
    def set_protocol(self, protocol: str) -> None: ...


class MqttCounters(Protocol):
    """The MQTT client's health (`gateway.north.metrics.collector.MqttHealth`)."""

    @property
    def connected(self) -> bool: ...
    @property
    def published(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def buffered(self) -> int: ...


class MqttPort(Protocol):
    """The running MQTT service (`gateway.north.mqtt.publisher.MqttService`)."""

    def health(self) -> MqttCounters: ...


class AdminPort(Protocol):
    """The admin service (`gateway.ops.admin.service.AdminService`); MQTT commands narrow it with
    isinstance to call its operations."""

    @property
    def audit_log(self) -> AuditLog: ...


@dataclass(frozen=True, slots=True)
class AdminAuth:
    """The token store and rate limiter every authenticated route and MQTT command checks."""

    tokens: TokenStore
    limiter: RateLimiter


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
    # routers of adapters that start before the HTTP stack is imported (Modbus): made by the HTTP
    # app when it is built, so that FastAPI is not imported before those adapters serve
    http_router_factories: list[Callable[[], APIRouter]] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)  # what listens where ("http" -> "http://...")
    # shared stores, built once by gateway.app.wiring before the services that read them
    decisions: DecisionStore = field(default_factory=DecisionStore)  # the policy's latest decision
    audit_log: AuditLog | None = None  # `[admin] audit_db`: every operation appends to it
    auth: AdminAuth | None = None  # `[admin] tokens_file` + rate limit
    pack_jobs: PackJobs = field(default_factory=PackJobs)  # which long job runs on which pack
    # services others read, set by their installers (None: not enabled / not installed)
    simulator_service: Service | None = None  # serves `simulator` on TCP (gateway.app.wiring)
    modbus_stats: ModbusStats | None = None
    can: CanPort | None = None
    rs485: Rs485Port | None = None
    mqtt: MqttPort | None = None
    admin: AdminPort | None = None
    # the records services (gateway.ops.history.service.HistoryService,
    # gateway.ops.firmware.manager.FirmwareService): narrow with isinstance to call their operations
    history: Service | None = None
    firmware: Service | None = None

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
