"""The inverter-facing RS485 port: the gateway answers an inverter's polls as a battery.

`Rs485InverterService` opens `[inverter_rs485] url` (a serial device at the configured baud rate, 8N1,
or `socket://host:port` of an RS485-to-Ethernet converter, to which the gateway connects), feeds what
the inverter sends to the selected sans-I/O responder (`pylon-rs485` or `byd-modbus`, switchable at run
time with `set_protocol`) and writes back the answers. It is a responder only: it never talks first.

Every answer is built from the latest model view and charge decision (`BankView`, see
`build_bank_view`); when the data is stale the responders give their protocol's blocking answer, never
silence. Inverter presence is supervised (no valid poll for `presence_timeout_s` → "missing", logged
once per transition and exported in `stats()`); the link is reopened with backoff when it drops.

This module must never send anything to a pack and never decide a limit (the policy does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.app.config import ConfigError, InverterRs485Config
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import ModelStore, ModelView, PackKey, PackSnapshot, TempRole
from gateway.core.policy.engine import ChargeDecision, stops, warns
from gateway.io.transport import (
    Backoff,
    Connection,
    PortInUse,
    SerialSettings,
    TransportError,
    open_connection,
)
from mappings.flags import load_outputs
from protocol.inverter.rs485 import registry
from protocol.inverter.rs485.base import (
    BankView,
    Identity,
    Limits,
    ModuleView,
    Rs485Responder,
    SystemParameters,
)
from protocol.inverter.rs485.byd_modbus import HEARTBEAT_REGISTER, BydModbusResponder

if TYPE_CHECKING:
    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service

log = logging.getLogger(__name__)


@runtime_checkable
class DecisionSource(Protocol):
    """Where the latest charge decision comes from (`gateway.core.policy.service.DecisionStore`)."""

    @property
    def latest(self) -> ChargeDecision | None: ...

    @property
    def version(self) -> int: ...


MAX_ENERGY_STEP_S = 60.0  # a longer gap between views is not integrated (no invented energy)


# --------------------------------------------------------------------------------------------
# Model + decision -> neutral bank view


_VERSION = re.compile(r"[Vv](\d+(?:\.\d+){0,4})")


def version_numbers(text: str | None) -> tuple[int, ...]:
    """The numbers of the last `V1.2.3`-style group in a firmware string (empty when none)."""
    if not text:
        return ()
    matches = _VERSION.findall(text)
    if not matches:
        return ()
    return tuple(int(n) for n in matches[-1].split("."))[:5]


def module_view(position: int, pack: PackSnapshot) -> ModuleView:
    """One pack as one emulated module (board temperature falls back to the MOS sensor)."""
    t = pack.telemetry
    serial = pack.identity.serial or pack.identity.barcode or f"{pack.bus}-{pack.address}"
    if t is None:
        return ModuleView(position=position, fresh=False, pack=pack.key, serial=serial)
    board, mos = t.board_temperature, t.mos_temperature
    return ModuleView(
        position=position,
        fresh=pack.online,
        pack=pack.key,
        cell_voltages_v=t.cell_voltages_v,
        board_temperature_c=None if board is None else board.value_c,
        cell_temperatures_c=tuple(x.value_c for x in t.temperature(TempRole.CELL)),
        mos_temperature_c=None if mos is None else mos.value_c,
        voltage_v=t.voltage_v,
        current_a=t.current_a,
        soc_pct=t.soc_pct,
        soh_pct=t.soh_pct,
        remaining_capacity_ah=t.remaining_capacity_ah,
        full_capacity_ah=t.full_capacity_ah,
        cycles=t.cycles,
        charge_mos_on=t.charge_mos_on,
        discharge_mos_on=t.discharge_mos_on,
        heater_on=t.heater_on,
        protections=stops(t.flags),
        alarms=warns(t.flags),
        serial=serial,
        software_version=version_numbers(pack.identity.version),
    )


def limits_of(decision: ChargeDecision | None, view: ModelView, parameters: SystemParameters) -> Limits:
    """The decision as neutral limits; without a usable decision: blocked, voltages kept non-zero."""
    if decision is not None:
        return Limits(
            charge_voltage_v=decision.charge_voltage_v,
            discharge_voltage_v=decision.discharge_voltage_v,
            charge_current_a=decision.charge_current_a,
            discharge_current_a=decision.discharge_current_a,
            charge_enabled=decision.charge_enabled,
            discharge_enabled=decision.discharge_enabled,
            force_charge_1=decision.force_charge_1,
            force_charge_2=decision.force_charge_2,
            full_charge_request=decision.full_charge_request,
            stale=decision.stale or not decision.has_data,
        )
    voltage = view.bank.voltage_v
    return Limits(
        charge_voltage_v=voltage if voltage else parameters.module_high_voltage_v,
        discharge_voltage_v=parameters.module_under_voltage_v,
        charge_current_a=0.0,
        discharge_current_a=0.0,
        charge_enabled=False,
        discharge_enabled=False,
        stale=True,
    )


def parameters_of(decision: ChargeDecision | None) -> SystemParameters:
    """Static 0x47 limits: LFP per-cell defaults times the bank's cell count (16 when unknown)."""
    base = SystemParameters()
    cells = (decision.bank.cells_per_pack if decision is not None else None) or 16
    return SystemParameters(
        module_high_voltage_v=round(base.cell_high_voltage_v * cells, 3),
        module_low_voltage_v=round(base.cell_low_voltage_v * cells, 3),
        module_under_voltage_v=round(base.cell_under_voltage_v * cells, 3),
    )


ModuleMemo = dict[tuple[int, PackKey], tuple[PackSnapshot, ModuleView]]


def build_bank_view(
    view: ModelView,
    decision: ChargeDecision | None,
    identity: Identity | None = None,
    energy_wh: tuple[float, float] | None = None,
    memo: ModuleMemo | None = None,
) -> BankView:
    """The neutral view the responders answer from (packs in (bus, address) order, master first):
    one module per pack, and the model's bank (`view.bank`) for the answers about the whole battery.

    `memo` (owned by the caller) keeps each module view for as long as its pack's snapshot is the
    same object (snapshots are immutable; the model store keeps the object of a pack not polled).
    """
    parameters = parameters_of(decision)
    if memo is None:
        modules = tuple(module_view(i, p) for i, p in enumerate(view.ordered(), start=1))
    else:
        fresh: ModuleMemo = {}
        for i, p in enumerate(view.ordered(), start=1):
            hit = memo.get((i, p.key))
            fresh[(i, p.key)] = hit if hit is not None and hit[0] is p else (p, module_view(i, p))
        memo.clear()
        memo.update(fresh)
        modules = tuple(m for _, m in fresh.values())
    return BankView(
        modules=modules,
        limits=limits_of(decision, view, parameters),
        bank=view.bank,
        alarms=decision.warnings if decision is not None else frozenset(),
        protections=decision.alarms if decision is not None else frozenset(),
        identity=identity or Identity(),
        parameters=parameters,
        energy_charged_wh=energy_wh[0] if energy_wh else None,
        energy_discharged_wh=energy_wh[1] if energy_wh else None,
        flag_outputs=load_outputs(),
    )


class EnergyCounter:
    """Charged/discharged energy integrated from the bank power of successive views (since start)."""

    def __init__(self) -> None:
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self._last: tuple[float, float] | None = None  # (computed_at, power_w)

    def update(self, view: ModelView) -> None:
        bank = view.bank
        if not bank.has_data or bank.power_w is None:
            self._last = None
            return
        now, power = bank.computed_at, bank.power_w
        if self._last is not None:
            dt = now - self._last[0]
            if 0 < dt <= MAX_ENERGY_STEP_S:
                p0, p1 = self._last[1], power
                parts: tuple[float, ...]
                if p0 * p1 < 0:  # the power crossed zero: split the segment where it did
                    t0 = dt * p0 / (p0 - p1)
                    parts = ((p0 * t0 / 2), (p1 * (dt - t0) / 2))
                else:
                    parts = ((p0 + p1) / 2 * dt,)
                for ws in parts:
                    if ws >= 0:
                        self.charged_wh += ws / 3600.0
                    else:
                        self.discharged_wh -= ws / 3600.0
        self._last = (now, power)


# --------------------------------------------------------------------------------------------
# The service


@dataclass(frozen=True, slots=True)
class Rs485Stats:
    """A consistent copy of the port's counters (for metrics and the HTTP status)."""

    protocol: str
    url: str
    connected: bool
    connects: int
    connect_failures: int
    disconnects: int
    bytes_in: int
    bytes_out: int
    requests: int
    answered: int
    valid_polls: int
    outcomes: Mapping[str, int]  # "ok", "checksum", "lchksum", "ignored", "exception_02", ...
    commands: Mapping[str, int]  # by protocol command ("0x42", "fc3", ...)
    discarded_bytes: int
    inverter_present: bool | None  # None until the first valid poll
    last_valid_poll_at: float | None  # wall clock
    turn_off_requests: int
    heartbeat_ok: bool | None  # BYD register 401 supervision (None: not written yet / not BYD)
    protocol_switches: int

    @property
    def errors(self) -> int:
        """Requests for us that were answered with an error (or dropped as corrupt)."""
        return sum(n for name, n in self.outcomes.items() if name not in NON_ERROR_OUTCOMES)


NON_ERROR_OUTCOMES = frozenset({"ok", "ignored", "broadcast"})


@dataclass(slots=True)
class _Counters:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    answered: int = 0
    valid_polls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    discarded_before: int = 0  # bytes discarded by responders replaced since start
    protocol_switches: int = 0


def make_responder(protocol: str, config: InverterRs485Config) -> Rs485Responder:
    """The responder of `protocol` from the registry, configured by `config`."""
    try:
        return registry.create(protocol, config)
    except KeyError as err:
        raise ConfigError(f"inverter_rs485.protocol: {err.args[0]}") from None


class Rs485InverterService:
    """Answers the inverter on the RS485 port (see the module docstring)."""

    name = "inverter_rs485"

    def __init__(
        self,
        config: InverterRs485Config,
        store: ModelStore,
        decisions: DecisionSource | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.decisions = decisions
        self._monotonic = monotonic
        self._wall = wall
        self._backoff = backoff or Backoff(initial_s=0.5, max_s=30.0)
        self.protocol: str = config.protocol
        self._responder = make_responder(self.protocol, config)
        self._identity = Identity(
            battery_name=config.battery_name, manufacturer=config.manufacturer, byd_serial=config.byd_serial
        )
        self._energy = EnergyCounter()
        self._energy_version = -1
        self._cached: tuple[int, int, BankView] | None = None
        self._modules: ModuleMemo = {}  # module views per unchanged pack snapshot
        self._counters = _Counters()
        self._connected = False
        self._started_at: float | None = None  # monotonic, for presence supervision
        self._last_valid_poll: float | None = None  # monotonic
        self._last_valid_poll_wall: float | None = None
        self._present: bool | None = None
        self._turn_offs_before = 0
        self._turn_offs_logged = 0
        self._heartbeat_ok: bool | None = None

    @classmethod
    def from_context(cls, ctx: AppContext) -> Rs485InverterService:
        """The service for `ctx`, answering with `ctx.decisions`; shared as `ctx.rs485` (metrics, admin)."""
        service = cls(ctx.config.inverter_rs485, ctx.store, ctx.decisions)
        ctx.rs485 = service
        return service

    def _decisions(self) -> DecisionSource | None:
        return self.decisions

    # --- run-time control ------------------------------------------------------------------

    def set_protocol(self, protocol: str) -> None:
        """Switch the protocol spoken on the port (takes effect for the next bytes received)."""
        if protocol not in registry.PROTOCOLS:
            raise ValueError(registry.PROTOCOLS.unknown(protocol).args[0])
        if protocol == self.protocol:
            return
        old = self._responder
        self._counters.discarded_before += old.discarded_bytes
        self._turn_offs_before += getattr(old, "turn_off_requests", 0)
        self._responder = make_responder(protocol, self.config)
        self._turn_offs_logged = 0
        log.info("inverter RS485 protocol changed from %s to %s", self.protocol, protocol)
        self.protocol = protocol
        self._counters.protocol_switches += 1

    @property
    def responder(self) -> Rs485Responder:
        return self._responder

    def bank_view(self) -> BankView:
        """The view answers are built from (cached per model and decision version)."""
        view = self.store.view
        source = self._decisions()
        decision = source.latest if source is not None else None
        dversion = source.version if source is not None else -1
        self.update_energy()
        if self._cached is not None and self._cached[:2] == (view.version, dversion):
            return self._cached[2]
        bank = build_bank_view(
            view,
            decision,
            self._identity,
            (self._energy.charged_wh, self._energy.discharged_wh),
            self._modules,
        )
        self._cached = (view.version, dversion, bank)
        return bank

    def update_energy(self) -> None:
        """Integrate the bank power of the newest model view into the energy totals (BYD 314-321)."""
        view = self.store.view
        if view.version != self._energy_version:
            self._energy.update(view)
            self._energy_version = view.version

    # --- supervision -----------------------------------------------------------------------

    def check_presence(self) -> bool | None:
        """Update and return the inverter presence (None while never polled and not yet timed out)."""
        now = self._monotonic()
        since = self._last_valid_poll if self._last_valid_poll is not None else self._started_at
        if since is None:
            return self._present
        present: bool | None = now - since < self.config.presence_timeout_s
        if self._last_valid_poll is None and present:
            present = None  # still waiting for the first poll
        if present != self._present:
            if present is True:
                log.info("inverter on %s is polling (%s)", self.config.url, self.protocol)
            elif present is False:
                log.warning(
                    "inverter on %s missing: no valid %s poll for %.0f s",
                    self.config.url,
                    self.protocol,
                    self.config.presence_timeout_s,
                )
            self._present = present
        self._check_heartbeat(now)
        return present

    def _check_heartbeat(self, now: float) -> None:
        """Log BYD heartbeat (register 401) transitions once each."""
        responder = self._responder
        ok = responder.heartbeat(now).ok if isinstance(responder, BydModbusResponder) else None
        if ok != self._heartbeat_ok and ok is not None:
            if ok:
                log.info("inverter heartbeat (register %d) is being written", HEARTBEAT_REGISTER)
            else:
                log.warning(
                    "inverter heartbeat lost: register %d unchanged for %.0f s",
                    HEARTBEAT_REGISTER,
                    self.config.byd_heartbeat_timeout_s,
                )
        self._heartbeat_ok = ok

    def stats(self) -> Rs485Stats:
        self.check_presence()
        c = self._counters
        responder = self._responder
        heartbeat = None
        if isinstance(responder, BydModbusResponder):
            heartbeat = responder.heartbeat(self._monotonic()).ok
        return Rs485Stats(
            protocol=self.protocol,
            url=self.config.url,
            connected=self._connected,
            connects=c.connects,
            connect_failures=c.connect_failures,
            disconnects=c.disconnects,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            requests=c.requests,
            answered=c.answered,
            valid_polls=c.valid_polls,
            outcomes=MappingProxyType(dict(c.outcomes)),
            commands=MappingProxyType(dict(c.commands)),
            discarded_bytes=c.discarded_before + responder.discarded_bytes,
            inverter_present=self._present,
            last_valid_poll_at=self._last_valid_poll_wall,
            turn_off_requests=self._turn_offs_before + getattr(responder, "turn_off_requests", 0),
            heartbeat_ok=heartbeat,
            protocol_switches=c.protocol_switches,
        )

    # --- the byte path -----------------------------------------------------------------------

    def handle_bytes(self, data: bytes) -> bytes:
        """Feed received bytes; returns everything to send back (possibly empty)."""
        self._counters.bytes_in += len(data)
        responder = self._responder
        responder.feed(data)
        now = self._monotonic()
        out = bytearray()
        for ex in responder.process(self.bank_view(), now):
            c = self._counters
            c.requests += 1
            c.outcomes[ex.outcome] += 1
            if ex.command is not None:
                c.commands[responder.command_label(ex.command)] += 1
            if ex.outcome not in NON_ERROR_OUTCOMES:
                log.debug("inverter request answered with %s: %s", ex.outcome, ex.detail)
            if ex.valid_poll:
                c.valid_polls += 1
                self._last_valid_poll = now
                self._last_valid_poll_wall = self._wall()
            if ex.response is not None:
                c.answered += 1
                out += ex.response
        if self._turn_off_seen(responder):
            log.warning("inverter sent a turn-off request; acknowledged, no pack is switched off")
        self.check_presence()
        return bytes(out)

    def _turn_off_seen(self, responder: Rs485Responder) -> bool:
        count = getattr(responder, "turn_off_requests", 0)
        seen = count > self._turn_offs_logged
        self._turn_offs_logged = count
        return seen

    async def _serve(self, conn: Connection) -> None:
        while True:
            data = await conn.read(self.config.idle_gap_s)
            if not data:
                self._responder.line_idle()
                self.check_presence()
                self.update_energy()
                continue
            reply = self.handle_bytes(data)
            if reply:
                await conn.write(reply)
                self._counters.bytes_out += len(reply)

    async def run(self, ready: ReadyCallback) -> None:
        if self.protocol not in registry.PROTOCOLS:
            raise ConfigError(f"inverter_rs485.protocol: unknown protocol {self.protocol!r}")
        self._started_at = self._monotonic()
        settings = SerialSettings(baudrate=self.config.baudrate)
        announced = False
        while True:
            try:
                conn = await open_connection(self.config.url, settings)
            except PortInUse as err:
                if not self._counters.connects:  # at start-up: stop the start (exit 2), no restart loop
                    raise ConfigError(f"inverter_rs485.url: {err}") from None
                self._counters.connect_failures += 1
                await self._sleep_supervised(self._backoff.next_delay())
                continue
            except TransportError as err:
                self._counters.connect_failures += 1
                delay = self._backoff.next_delay()
                log.warning("inverter RS485 port %s: %s; retrying in %.1f s", self.config.url, err, delay)
                if not announced:
                    ready()
                    announced = True
                await self._sleep_supervised(delay)
                continue
            self._backoff.reset()
            self._counters.connects += 1
            self._connected = True
            log.info("inverter RS485 port %s open (%s)", conn.description, self.protocol)
            if not announced:
                ready()
                announced = True
            try:
                await self._serve(conn)
            except TransportError as err:
                self._counters.disconnects += 1
                log.warning("inverter RS485 port %s lost: %s", self.config.url, err)
            finally:
                self._connected = False
                self._responder.line_idle()
                with contextlib.suppress(TransportError):
                    await conn.close()
            await self._sleep_supervised(self._backoff.next_delay())

    async def _sleep_supervised(self, delay: float) -> None:
        """Sleep while keeping presence supervision running."""
        deadline = self._monotonic() + delay
        while (left := deadline - self._monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            self.check_presence()


def install(ctx: AppContext) -> list[Service]:
    """The inverter RS485 port when `[inverter_rs485] enabled`."""
    return [Rs485InverterService.from_context(ctx)] if ctx.config.inverter_rs485.enabled else []
