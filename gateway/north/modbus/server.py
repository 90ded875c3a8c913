"""The Modbus/TCP server: our own asyncio implementation over the sans-I/O codec in `protocol.modbus`.

Per connection: an MBAP decoder; every complete request in a chunk is answered, in order, in one
write (pipelining works); a malformed MBAP header closes that connection only. Connection limits
(in all and per client IP), an idle timeout, a frame deadline and a per-client-IP request budget
(token bucket: when it is empty the connection is paused, never answered with an error) keep one
client from starving the others; a client that does not read its answers is not read either
(transport flow control), so memory stays bounded.

Slow clients (slowloris): a request must be complete `frame_timeout_s` after its first byte, or
the connection is closed (a byte now and then no longer keeps a slot). When a new client finds
the server full (`max_connections`, or `max_connections_per_client` for its address), the oldest
connection that is *incomplete* (part of a request buffered) or *idle* (no complete request for
`yield_after_idle_s`) — among the address's own connections when the per-address cap is the
limit — is closed and yields its slot; only when none qualifies is the new client refused.

Units: the SunSpec bank unit (`sunspec_unit`, also answering on 0 and 255), the native map unit,
and optionally one SunSpec unit per pack (`per_pack_unit_base + address`). Any other unit id gets
0x0A; a unit whose data is offline gets 0x0B (the native unit always answers). FC 3 and 4 read
the same registers; 6, 16 and 23 write (writes off by default; allowlisted clients only; they
become caps in `gateway.core.controls`, see `gateway.north.modbus.writes`).

The register images are built on demand: a new model view, a decision serving other limits, or
`REFRESH_S` passing (the 802 heartbeat counts seconds, written caps expire) only marks them stale;
the next request (or reader of `units`/`view`) rebuilds them from the newest view, then they are
swapped in with one assignment: a request is always answered from one build, never from data
older than the newest view, and a gateway nobody reads spends nothing on images. An accepted
write rebuilds at once.

Hot path (docs/performance.md): a read's whole answer after the transaction id depends only on the
request's other ten bytes and the current build, so answers are memoised per build
(`ModbusServer.answers`, dropped with the build it came from, bounded). A chunk made of whole
12-byte requests that all hit it is answered without decoding anything (one slice, one lookup,
one concatenation each, one write per chunk); everything else takes the general path (MBAP
decoder, `handle_pdu`). Both paths count the same statistics and obey the same request budget.
This module must never talk to a pack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway import __version__
from gateway.app.config import ConfigError, ModbusConfig, listen_error
from gateway.app.supervisor import ReadyCallback
from gateway.core.controls import Controls
from gateway.core.model import ModelStore, ModelView, PackKey
from gateway.core.policy.decisions import DecisionStore
from gateway.core.policy.engine import ChargeDecision
from gateway.north.modbus.native import NativeBuilder
from gateway.north.modbus.stats import ModbusStats
from gateway.north.modbus.sunspec import BuildInput, SunSpecBuilder
from gateway.north.modbus.units import MapSettings, UnitView
from gateway.north.modbus.writes import ControlRegisters, WriteApplier

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service
from mappings.modbus import load_native_map, load_sunspec_map, load_sunspec_models
from protocol.errors import RemoteProtocolError
from protocol.modbus.mbap import Adu, MbapDecoder, encode_adu
from protocol.modbus.pdu import ExceptionCode, ModbusError, exception_response, handle_pdu

log = logging.getLogger("gateway.north.modbus")

BANK_ALIASES = (0, 255)  # unit ids that also reach the SunSpec bank unit
REFRESH_S = 1.0  # a build older than this is stale: time-driven values (802 Hb, cap expiry)
MAX_MEMO_ANSWERS = 512  # distinct read requests memoised per image build (bounded memory)
READ_FUNCTIONS = (3, 4)
_MEMO_KEY = struct.Struct(">HHB")  # protocol id 0, length 6, unit id: the key's first five bytes


def settings_from_config(cfg: ModbusConfig) -> MapSettings:
    return MapSettings(
        manufacturer=cfg.manufacturer,
        model_name=cfg.model_name,
        serial=cfg.serial,
        version=__version__,
        rated_current_a=cfg.rated_current_a,
        nominal_cell_voltage_v=cfg.nominal_cell_voltage_v,
        cells_per_pack=cfg.cells_per_pack,
        cell_temperature_from_sensors=cfg.cell_temperature_from_sensors,
        writes_enabled=cfg.writes,
    )


def served_decision(d: ChargeDecision | None) -> tuple[object, ...] | None:
    """The part of a charge decision the register images show (802 AChaMax/ADisChaMax, native)."""
    if d is None:
        return None
    return (
        d.has_data,
        d.charge_voltage_v,
        d.discharge_voltage_v,
        d.charge_current_a,
        d.discharge_current_a,
        d.charge_enabled,
        d.discharge_enabled,
    )


class _Memo:
    """A memoised read answer (from byte 2 on) and the requests it answered not yet counted (its
    key, request bytes 2..11, carries the unit id at 4 and the function code at 5)."""

    __slots__ = ("hits", "tail")

    def __init__(self, tail: bytes) -> None:
        self.tail = tail
        self.hits = 0


class TokenBucket:
    """Request budget of one client IP; times are the event loop's clock (`loop.time()`)."""

    __slots__ = ("burst", "rate", "tokens", "updated", "users")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now
        self.users = 0  # open connections sharing this bucket

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


@dataclass(slots=True)
class _Bank:
    """`RegisterBank` for one request: reads the newest build, routes writes to the applier."""

    server: ModbusServer
    unit_id: int
    client: str

    def _unit(self) -> UnitView:
        unit = self.server.units.get(self.unit_id)
        if unit is None:  # pragma: no cover - units never disappear between two lines
            raise ModbusError(ExceptionCode.GATEWAY_PATH_UNAVAILABLE)
        return unit

    def read(self, address: int, count: int) -> bytes:
        return self._unit().image.read(address, count)

    def write(self, address: int, values: Sequence[int]) -> None:
        self.server.write(self._unit(), address, list(values), self.client)


class ModbusServer:
    """The Modbus/TCP service (`name = "modbus"`)."""

    name = "modbus"

    def __init__(
        self,
        config: ModbusConfig,
        store: ModelStore,
        controls: Controls,
        *,
        clock: Callable[[], float] = time.time,
        register_endpoint: Callable[[str, str], None] | None = None,
        decisions: DecisionStore | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.controls = controls
        self.clock = clock
        self.started_at = clock()
        self.stats = ModbusStats()
        self.settings = settings_from_config(config)
        models = load_sunspec_models()
        self.sunspec = SunSpecBuilder(models, load_sunspec_map(models))
        self.native = NativeBuilder(load_native_map())
        self.registers = ControlRegisters()
        self.applier = WriteApplier(controls, self.registers, self.settings, config.cap_timeout_s)
        self._units: dict[int, UnitView] = {}
        # request bytes 2..11 of a read -> its answer from byte 2 on, for the current build only
        self.answers: dict[bytes, _Memo] = {}
        self.stats.settle = self._settle
        self.port: int | None = None
        self._register_endpoint = register_endpoint
        self.decisions = decisions
        self._cells: dict[PackKey, int] = {}
        self._view: ModelView = store.view
        self._pending_view: ModelView | None = None  # newer than `_view`: built on the next read
        self._stale = True  # the next reader rebuilds
        self._built_decision: tuple[object, ...] | None = None  # the served part of its decision
        self._expiry: asyncio.TimerHandle | None = None  # marks the build stale after REFRESH_S
        self._pack_keys: frozenset[PackKey] = frozenset()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._logged_errors: set[str] = set()
        self._check_units(store.view)
        if len(store.view.packs) > self.native.map.max_packs:
            log.warning(
                "modbus: %d packs configured; the native map shows the first %d (SunSpec shows all)",
                len(store.view.packs),
                self.native.map.max_packs,
            )
        self.rebuild(store.view)

    @property
    def view(self) -> ModelView:
        """The model view the current images are built from (rebuilt first when stale)."""
        if self._stale:
            self.rebuild()
        return self._view

    @property
    def units(self) -> dict[int, UnitView]:
        """Every unit's image by unit id (rebuilt first when stale)."""
        if self._stale:
            self.rebuild()
        return self._units

    def _settle(self) -> None:
        """Count the requests answered from memoised answers (see `ModbusStats`)."""
        by_function, by_unit = self.stats.by_function, self.stats.by_unit
        for key, memo in self.answers.items():
            if memo.hits:
                by_unit[key[4]] += memo.hits
                by_function[key[5]] += memo.hits
                memo.hits = 0

    def _drop_memo(self) -> None:
        self._settle()
        self.answers.clear()  # in place: every connection holds this dict

    def mark_stale(self) -> None:
        """The images no longer show the newest data: the next reader rebuilds them."""
        self._stale = True
        self._drop_memo()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # ------------------------------------------------------------------ units and images

    def pack_unit_ids(self, view: ModelView) -> dict[int, PackKey]:
        base = self.config.per_pack_unit_base
        if base is None:
            return {}
        return {base + key[1]: key for key in sorted(view.packs)}

    def _check_units(self, view: ModelView) -> None:
        taken = {self.config.sunspec_unit: "sunspec_unit", self.config.native_unit: "native_unit"}
        taken.update({a: "the bank alias" for a in BANK_ALIASES})
        seen: dict[int, PackKey] = {}
        base = self.config.per_pack_unit_base
        for key in sorted(view.packs) if base is not None else []:
            uid = (base or 0) + key[1]
            if uid in taken:
                raise ConfigError(
                    f"modbus: pack {key[0]}/{key[1]} would get unit {uid}, used by {taken[uid]}"
                )
            if uid in seen:
                raise ConfigError(
                    f"modbus: packs {seen[uid][0]}/{seen[uid][1]} and {key[0]}/{key[1]} would share unit"
                    f" {uid} (per_pack_unit_base + address must be unique across buses)"
                )
            if uid > 247:
                raise ConfigError(f"modbus: pack unit {uid} above 247")
            seen[uid] = key

    def rebuild(self, view: ModelView | None = None) -> None:
        """Build every unit's image from `view` (default: the last one) and swap them in at once."""
        if view is None:
            view = self._pending_view or self._view
        self._pending_view = None
        self._view = view
        now = self.clock()
        self._stale = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        with contextlib.suppress(RuntimeError):  # no running loop (built at construction)
            self._expiry = asyncio.get_running_loop().call_later(REFRESH_S, self.mark_stale)
        if view.packs.keys() != self._pack_keys:
            self._pack_keys = frozenset(view.packs)
            self.sunspec.forget(set(self._pack_keys))
            self.native.forget(set(self._pack_keys))
        for key, pack in view.packs.items():
            if pack.telemetry is not None:
                n = len(pack.telemetry.cell_voltages_v)
                if n > self._cells.get(key, self.config.cells_per_pack):
                    self._cells[key] = n
        b = BuildInput(
            view=view,
            controls=self.controls.state(now),
            controls_raw=self.controls.raw(),
            registers=self.registers,
            settings=self.settings,
            now=now,
            started_at=self.started_at,
            cells=dict(self._cells),
            default_timeout_s=self.config.cap_timeout_s,
            decision=self.decisions.latest if self.decisions is not None else None,
        )
        self._built_decision = served_decision(b.decision)
        units: dict[int, UnitView] = {}
        bank = self.sunspec.bank_unit(self.config.sunspec_unit, b, writable=True)
        for uid in (self.config.sunspec_unit, *BANK_ALIASES):
            units[uid] = bank
        units[self.config.native_unit] = self.native.unit(self.config.native_unit, b, writable=True)
        for uid, key in self.pack_unit_ids(view).items():
            pack = view.packs[key]
            number = sorted(view.packs).index(key) + 1
            units[uid] = self.sunspec.pack_unit(uid, number, pack, b)
        self._units = units  # the atomic swap
        self._drop_memo()  # memoised answers belong to the build they were read from
        self.stats.image_builds += 1
        for err in (*self.sunspec.errors, *self.native.errors):
            self.stats.encode_errors += 1
            if err.point not in self._logged_errors:
                self._logged_errors.add(err.point)
                log.warning(
                    "modbus: value of %s not representable, served as not implemented: %s",
                    err.point,
                    err.message,
                )
        self.sunspec.errors.clear()
        self.native.errors.clear()

    # ------------------------------------------------------------------ requests

    def write(self, unit: UnitView, address: int, values: list[int], client: str) -> None:
        if not self.config.writes:
            raise ModbusError(ExceptionCode.ILLEGAL_FUNCTION, "writes are disabled ([modbus] writes = false)")
        if client not in self.config.write_allowlist:
            log.warning("modbus: write from %s refused (not in write_allowlist)", client)
            raise ModbusError(ExceptionCode.ILLEGAL_FUNCTION, f"client {client} may not write")
        now = self.clock()
        items = self.applier.validate(unit, address, values)
        self.applier.apply(unit, address, items, client, self._view, now)
        self.stats.writes_accepted += 1
        self.rebuild()

    def handle(self, adu: Adu, client: str) -> bytes:
        """The response ADU for one request ADU."""
        stats = self.stats
        function = adu.pdu[0]
        stats.by_function[function] += 1
        stats.by_unit[adu.unit_id] += 1
        unit = self.units.get(adu.unit_id)
        if unit is None:
            code: ExceptionCode | None = ExceptionCode.GATEWAY_PATH_UNAVAILABLE
            pdu = exception_response(function, ExceptionCode.GATEWAY_PATH_UNAVAILABLE)
        elif not unit.online:
            code = ExceptionCode.GATEWAY_TARGET_FAILED
            pdu = exception_response(function, ExceptionCode.GATEWAY_TARGET_FAILED)
        else:
            handled = handle_pdu(adu.pdu, _Bank(self, adu.unit_id, client))
            code, pdu = handled.exception, handled.response
        if code is not None:
            stats.exceptions_by_code[int(code)] += 1
        answer = encode_adu(adu.transaction_id, adu.unit_id, pdu)
        if code is None and function in READ_FUNCTIONS and len(adu.pdu) == 5:
            answers = self.answers
            if len(answers) < MAX_MEMO_ANSWERS:
                key = _MEMO_KEY.pack(0, 6, adu.unit_id) + adu.pdu
                if key not in answers:  # (a memo already there holds uncounted hits)
                    answers[key] = _Memo(answer[2:])
        return answer

    def admit(self, client: str, now: float) -> str | None:
        """Make room for a new connection from `client`: None when admitted (an idle or incomplete
        connection may have yielded its slot), else which limit refused it."""
        cfg = self.config
        own = [c for c in self._connections if c.client == client]
        for pool, cap, what in (
            (
                own,
                cfg.max_connections_per_client,
                f"max_connections_per_client={cfg.max_connections_per_client}",
            ),
            (list(self._connections), cfg.max_connections, f"max_connections={cfg.max_connections}"),
        ):
            if len(pool) < cap:
                continue
            victims = [
                c
                for c in pool
                if not c.closed and (c.incomplete() or now - c.last_request >= cfg.yield_after_idle_s)
            ]
            if not victims:
                return what
            victim = min(victims, key=lambda c: (not c.incomplete(), c.last_request))
            victim.yield_slot()
            self.forget(victim)
            own = [c for c in own if c is not victim]
        return None

    def forget(self, conn: _Connection) -> None:
        """A connection leaves the books (once: on close, or when it yields its slot)."""
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        self.stats.connections = len(self._connections)
        if conn.bucket is not None:
            conn.bucket.users -= 1
            if conn.bucket.users <= 0:
                self._buckets.pop(conn.client, None)

    def bucket(self, client: str, now: float) -> TokenBucket:
        """The shared budget of `client` (`now`: the loop's clock)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.config.request_rate_per_s, self.config.request_burst, now)
            self._buckets[client] = bucket
        return bucket

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen (default: `[modbus] listen`); returns the bound port."""
        if host is None or port is None:
            h, _, p = self.config.listen.rpartition(":")
            host = h.strip("[]") if host is None else host
            port = int(p) if port is None else port
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        except OSError as err:  # no restart can fix a taken port: stop the start (exit 2)
            raise listen_error("modbus.listen", f"{host}:{port}", err) from None
        self.port = self._server.sockets[0].getsockname()[1]
        if self._register_endpoint is not None:
            self._register_endpoint("modbus", f"modbus-tcp://{host}:{self.port}")
        log.info(
            "modbus: listening on %s:%d (SunSpec unit %d, native unit %d)",
            host,
            self.port,
            self.config.sunspec_unit,
            self.config.native_unit,
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def follow(self) -> None:
        """Rebuild on every new model view until cancelled."""
        async for view in self.store.subscribe():
            if view is not self._view and view is not self._pending_view:
                self._pending_view = view
                self.mark_stale()

    async def follow_decisions(self) -> None:
        """Rebuild when the charge policy publishes new limits (802 AChaMax/ADisChaMax, native).

        The policy re-evaluates every second; a decision serving the same values as the current
        build changes nothing here (time-driven values go stale after `REFRESH_S` anyway).
        """
        if self.decisions is None:
            return
        async for decision in self.decisions.subscribe():
            if served_decision(decision) != self._built_decision:
                self.mark_stale()

    async def run(self, ready: ReadyCallback) -> None:
        await self.start()
        self.mark_stale()  # the first reader builds on this loop (arming the REFRESH_S expiry)
        try:
            ready()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.follow())
                tg.create_task(self.follow_decisions())
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
            await self.stop()

    @classmethod
    def from_context(cls, ctx: AppContext) -> ModbusServer:
        """The server over `ctx` (limits from `ctx.decisions`); shares its counters as `ctx.modbus_stats`."""
        server = cls(
            ctx.config.modbus,
            ctx.store,
            ctx.controls,
            register_endpoint=ctx.register_endpoint,
            decisions=ctx.decisions,
        )
        ctx.modbus_stats = server.stats

        def router() -> APIRouter:
            # FastAPI comes with the HTTP stack, imported once Modbus already answers (wiring)
            from gateway.north.modbus.http import modbus_router

            return modbus_router(server)

        ctx.http_router_factories.append(router)
        return server


def install(ctx: AppContext) -> list[Service]:
    """The Modbus/TCP server when `[modbus] enabled`."""
    return [ModbusServer.from_context(ctx)] if ctx.config.modbus.enabled else []


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_frame_timer",
        "_idle",
        "_loop",
        "_paused",
        "_resume",
        "answers",
        "bucket",
        "client",
        "closed",
        "decoder",
        "frame_started",
        "last_activity",
        "last_request",
        "pending",
        "server",
        "transport",
    )

    def __init__(self, server: ModbusServer) -> None:
        self.server = server
        self.answers = server.answers  # the server's memo (cleared in place, never replaced)
        self._loop = asyncio.get_running_loop()
        self.decoder = MbapDecoder()
        self.transport: asyncio.Transport | None = None
        self.client = "?"
        self.bucket: TokenBucket | None = None
        self.pending: Adu | None = None
        self.closed = False
        self.last_activity = 0.0
        self.last_request = 0.0  # when the last complete request arrived (or the connection opened)
        self.frame_started: float | None = None  # first byte of the incomplete request buffered
        self._idle: asyncio.TimerHandle | None = None
        self._frame_timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._paused: set[str] = set()  # why reading is paused: "budget", "write" (slow reader)

    # asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        server = self.server
        stats = server.stats
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        limit = server.admit(self.client, self._loop.time())
        if limit is not None:
            stats.connections_rejected += 1
            log.warning("modbus: connection from %s refused (%s)", self.client, limit)
            self.closed = True
            self.transport.abort()
            return
        server._connections.add(self)
        stats.connections = len(server._connections)
        stats.connections_total += 1
        self.bucket = server.bucket(self.client, self._loop.time())
        self.bucket.users += 1
        self.last_activity = self.last_request = self._loop.time()
        self._idle = self._loop.call_later(server.config.idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.closed = True
        for handle in (self._idle, self._resume, self._frame_timer):
            if handle is not None:
                handle.cancel()

    def data_received(self, data: bytes) -> None:
        # The hot path, most requests of a polling client: the chunk is one whole request whose
        # answer is memoised, nothing is buffered, pending or paused (`frame_started` is None
        # whenever nothing is buffered or pending; a pending request pauses reading), and the
        # client's budget has a token. When the bucket was refilled at this loop time already
        # (uvloop's clock moves once per loop turn) `TokenBucket.take` would add nothing: the
        # token is taken inline. Every counter is an attribute; no allocation but the answer.
        if len(data) == 12 and self.frame_started is None and not self._paused and not self.closed:
            memo = self.answers.get(data[2:])
            bucket = self.bucket
            if memo is not None and bucket is not None:
                now = self._loop.time()
                if bucket.updated == now and bucket.tokens >= 1.0:
                    bucket.tokens -= 1.0
                    taken = True
                else:
                    taken = bucket.take(now)
                if taken:
                    memo.hits += 1
                    self.last_request = now  # (activity too: `_check_idle` reads both)
                    self.transport.write(data[:2] + memo.tail)  # type: ignore[union-attr]
                    return
        self._received(data)

    def _received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = now = self._loop.time()
        # (one whole memoised request was answered by `data_received` if it could be: budget spent,
        # a miss, or a request already buffered go the general way)
        if len(data) > 12 and not self._paused and self.pending is None and not self.decoder.buffered:
            data = self._answer_memoised(data, now)  # several whole requests in one chunk
            if not data:
                return
        if self.frame_started is None and self.decoder.buffered == 0 and data:
            self.frame_started = now  # the first byte of a new request
            self._arm_frame_timer(self._loop, self.server.config.frame_timeout_s)
        try:
            self.decoder.feed(data)
        except RemoteProtocolError:
            return
        self._process()

    def incomplete(self) -> bool:
        """Part of a request is buffered (not a request waiting for the budget)."""
        return self.frame_started is not None and self.pending is None

    def _arm_frame_timer(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
        self._frame_timer = loop.call_later(delay_s, self._check_frame)

    def _check_frame(self) -> None:
        self._frame_timer = None
        if self.closed or self.transport is None or self.frame_started is None:
            return
        loop = asyncio.get_running_loop()
        if self._paused:  # our own pause (budget, slow reader): not the client's delay
            self._arm_frame_timer(loop, self.server.config.frame_timeout_s)
            return
        late = loop.time() - self.frame_started
        timeout = self.server.config.frame_timeout_s
        if late >= timeout:
            self.server.stats.frames_timed_out += 1
            log.info("modbus: closing connection from %s: request incomplete after %.1f s", self.client, late)
            self.closed = True
            self.transport.abort()
        else:
            self._arm_frame_timer(loop, timeout - late)

    def yield_slot(self) -> None:
        """Close to admit a new client (this connection was idle or incomplete)."""
        self.server.stats.connections_yielded += 1
        log.info("modbus: connection from %s yields its slot to a new client", self.client)
        self.abort()

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests (bounded memory)."""
        self._pause("write")

    def resume_writing(self) -> None:
        self._unpause("write")
        self._process()

    # internals ----------------------------------------------------------

    def _answer_memoised(self, data: bytes, now: float) -> bytes:
        """Answer the leading whole requests whose answers are memoised; the bytes left over.

        Stops at the first request that is not memoised (or when the budget is spent): that one and
        everything after it go through the decoder, so answers stay in request order.
        """
        server = self.server
        answers = server.answers
        bucket = self.bucket
        transport = self.transport
        if bucket is None or transport is None:
            return data
        end = len(data)
        out: list[bytes] = []
        offset = 0
        while end - offset >= 12:
            memo = answers.get(data[offset + 2 : offset + 12])
            if memo is None or not bucket.take(now):
                break
            memo.hits += 1
            out.append(data[offset : offset + 2])
            out.append(memo.tail)
            offset += 12
        if out:
            transport.write(b"".join(out))
            self.last_request = now
        return data[offset:]

    def _pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused.add(reason)

    def _unpause(self, reason: str) -> None:
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _process(self) -> None:
        transport = self.transport
        if transport is None or self.closed or self.bucket is None or self._paused:
            return
        out: list[bytes] = []
        bad = False
        now = self._loop.time()
        while True:
            adu = self.pending
            self.pending = None
            if adu is None:
                try:
                    adu = self.decoder.next_adu()
                except RemoteProtocolError as err:
                    self.server.stats.malformed_frames += 1
                    log.info("modbus: closing connection from %s: %s", self.client, err)
                    bad = True
                    break
                if adu is None:
                    break
            if not self.bucket.take(now):
                self.pending = adu
                self.server.stats.throttled += 1
                self._pause("budget")
                loop = asyncio.get_running_loop()
                self._resume = loop.call_later(self.bucket.wait_s(), self._continue)
                break
            out.append(self.server.handle(adu, self.client))
        if out:
            self.last_request = now
            # what is left is the start of the next request (it arrived in the last chunk)
            self.frame_started = now if self.decoder.buffered else None
            if self.frame_started is not None:
                self._arm_frame_timer(self._loop, self.server.config.frame_timeout_s)
        elif self.pending is None and not self.decoder.buffered:
            self.frame_started = None
        if out:
            transport.write(b"".join(out))
        if bad:
            self.closed = True
            transport.close()

    def _continue(self) -> None:
        self._resume = None
        if self.closed or self.transport is None:
            return
        self._unpause("budget")
        self._process()

    def _check_idle(self) -> None:
        if self.closed or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - max(self.last_activity, self.last_request)
        timeout = self.server.config.idle_timeout_s
        if idle_for >= timeout:
            self.server.stats.connections_idle_closed += 1
            log.info("modbus: closing idle connection from %s", self.client)
            self.closed = True
            self.transport.close()
        else:
            self._idle = loop.call_later(timeout - idle_for, self._check_idle)
