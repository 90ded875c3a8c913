"""The bus owner: the only code that writes to an RS485 bus.

One `BusOwner` per bus runs one task (`run`) that owns the connection. Drivers call `transact`
(the `gateway.south.drivers.base.BusClient` protocol); requests wait in a bounded priority queue
(`Priority`: firmware and admin above polling) and are served one at a time:

1. wait for the inter-frame gap since the last bus activity, reading (and counting) whatever
   arrives meanwhile: late answers to an earlier request never reach the next one;
2. write the request; read until a validated frame satisfies the caller's `match` or the response
   timeout expires; retry up to the configured count;
3. end the request with exactly one outcome: the frame, `NotSent` (link down, queue full,
   shutting down, protocol unknown) or `NoResponse`. `DeviceError` is raised by the driver when
   the frame carries an error code.

Only frames the family decoder validated are ever returned; checksum errors, timeouts, echoes of
our own request and frames from unexpected addresses are counted per bus and per pack. The link is
reopened with exponential backoff and jitter, and stale input is flushed after every (re)connect.

This module never interprets a frame's payload (that is the driver's job) and never touches the
model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.app.config import ConfigError
from gateway.app.supervisor import ReadyCallback
from gateway.south.drivers.base import NoResponse, NotSent, Priority
from gateway.south.transport import (
    Backoff,
    Connection,
    PortInUse,
    SerialSettings,
    TransportError,
    open_connection,
)
from protocol.bms.base import Frame, FrameDecoder
from protocol.errors import RemoteProtocolError

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Adaptive inter-frame gap (per pack): the configured gap is what the wire needs (3.5 character
# times, 4 ms at 9600 baud). A pack that misses an answer or garbles one gets a longer gap before
# its next request (doubled, at least ADAPTIVE_GAP_STEP_S, at most ADAPTIVE_GAP_MAX_S: the vendor
# tool's fixed 400 ms); after ADAPTIVE_GAP_DECAY_AFTER answers in a row it is halved back towards
# the configured gap. Healthy packs never pay for a slow one.
ADAPTIVE_GAP_STEP_S = 0.02
ADAPTIVE_GAP_MAX_S = 0.4
ADAPTIVE_GAP_DECAY_AFTER = 16


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram (Prometheus style: `counts[i]` = observations <= buckets[i])."""

    buckets: tuple[float, ...] = DURATION_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))
    count: int = 0
    sum: float = 0.0
    last: float | None = None

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.last = value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


@dataclass(slots=True)
class LinkCounters:
    """What happened on a link (per bus, and per pack for the requests addressed to it)."""

    requests: int = 0  # transactions submitted
    frames_sent: int = 0  # writes including retries
    frames_received: int = 0  # frames that passed validation (any address)
    responses: int = 0  # transactions answered with a matching frame
    checksum_errors: int = 0  # RemoteProtocolError from the decoder (bad checksum/length/chars)
    timeouts: int = 0  # attempts without a matching frame within the response timeout
    retries: int = 0
    no_response: int = 0  # transactions that ended in NoResponse
    not_sent: int = 0  # transactions that ended in NotSent
    echoes: int = 0  # our own request read back (2-wire adapters with local echo)
    unexpected_address: int = 0  # a valid frame from an address other than the polled one
    unexpected_frames: int = 0  # a valid frame from the right address that did not answer the request
    late_frames: int = 0  # valid frames arriving between transactions (answers after a timeout)
    device_errors: int = 0  # reported by drivers/poller (the pack answered with an error code)
    decode_errors: int = 0  # reported by drivers/poller (valid frame, payload not decodable)
    bytes_sent: int = 0
    bytes_received: int = 0
    last_success_at: float | None = None  # wall clock of the last matching frame
    poll_duration_s: Histogram = field(default_factory=Histogram)  # reported by the poller
    preempted: int = 0  # poll retries given up because a firmware/admin request was waiting
    gap_s: float | None = None  # per pack: the adaptive inter-frame gap now in use (None: the bus's)
    gap_increases: int = 0  # per pack: times the adaptive gap was lengthened


@dataclass(slots=True)
class BusCounters(LinkCounters):
    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    flushed_bytes: int = 0  # stale input discarded after a connect
    queue_full: int = 0
    queue_depth: int = 0
    last_error: str | None = None


@dataclass(eq=False, slots=True)
class _Request:
    data: bytes
    match: Callable[[Frame], bool]
    timeout_s: float
    expect_response: bool
    address: int | None
    future: asyncio.Future[Frame | None]
    enqueued_at: float
    priority: int = int(Priority.POLL)
    retries: int | None = None  # None: the bus's `retries`


Opener = Callable[[], Awaitable[Connection]]


class BusOwner:
    """Owns one bus; implements `BusClient.transact` for drivers (see the module docstring)."""

    def __init__(
        self,
        name: str,
        opener: Opener,
        decoder_factory: Callable[[], FrameDecoder] | None = None,
        *,
        gap_s: float = 0.004,
        response_timeout_s: float = 1.0,
        retries: int = 1,
        queue_size: int = 64,
        backoff: Backoff | None = None,
        flush_after_connect_s: float = 0.1,
    ) -> None:
        self.name = name
        self._opener = opener
        self._decoder_factory = decoder_factory
        self._decoder: FrameDecoder | None = decoder_factory() if decoder_factory else None
        self.gap_s = gap_s
        self.response_timeout_s = response_timeout_s
        self.retries = retries
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Request]] = asyncio.PriorityQueue(queue_size)
        self._seq = itertools.count()
        self._backoff = backoff or Backoff()
        self._flush_after_connect_s = flush_after_connect_s
        self._conn: Connection | None = None
        self._accepting = True  # False while the link is down between attempts, or shutting down
        self._last_activity = 0.0  # monotonic time of the end of the last bus activity
        self.counters = BusCounters()
        self._packs: dict[int, LinkCounters] = {}
        self.settings: SerialSettings | None = None  # the line settings, for a bus opened by URL
        self._streak: dict[int, int] = {}  # answers in a row per pack (adaptive gap decay)
        self._waiting: collections.Counter[int] = collections.Counter()  # queued requests by priority

    @classmethod
    def from_url(
        cls,
        name: str,
        url: str,
        settings: SerialSettings,
        decoder_factory: Callable[[], FrameDecoder] | None = None,
        **kwargs: float | int | Backoff | None,
    ) -> BusOwner:
        async def opener() -> Connection:
            return await open_connection(url, settings)

        owner = cls(name, opener, decoder_factory, **kwargs)  # type: ignore[arg-type]
        owner.settings = settings
        return owner

    # ---- counters -----------------------------------------------------------------------------

    def pack_counters(self, address: int) -> LinkCounters:
        counters = self._packs.get(address)
        if counters is None:
            counters = self._packs[address] = LinkCounters()
        return counters

    @property
    def pack_addresses(self) -> list[int]:
        return sorted(self._packs)

    def _count(self, address: int | None, name: str, n: int = 1) -> None:
        setattr(self.counters, name, getattr(self.counters, name) + n)
        if address is not None:
            pc = self.pack_counters(address)
            setattr(pc, name, getattr(pc, name) + n)

    def note_device_error(self, address: int) -> None:
        self._count(address, "device_errors")

    def note_decode_error(self, address: int) -> None:
        self._count(address, "decode_errors")

    def note_poll(self, address: int, duration_s: float) -> None:
        self.counters.poll_duration_s.observe(duration_s)
        self.pack_counters(address).poll_duration_s.observe(duration_s)

    # ---- the adaptive gap -------------------------------------------------------------------------

    def gap_for(self, address: int | None) -> float:
        """The quiet time before a request to `address`: the bus's gap, or longer for a pack that
        showed it needs more (see ADAPTIVE_GAP_*)."""
        if address is None:
            return self.gap_s
        adaptive = self.pack_counters(address).gap_s
        return self.gap_s if adaptive is None else max(self.gap_s, adaptive)

    def _gap_failure(self, address: int | None) -> None:
        if address is None:
            return
        pc = self.pack_counters(address)
        self._streak[address] = 0
        longer = min(ADAPTIVE_GAP_MAX_S, max(self.gap_for(address) * 2, ADAPTIVE_GAP_STEP_S))
        if longer > self.gap_for(address):
            pc.gap_s = longer
            pc.gap_increases += 1
            log.debug("bus %s: address %d: inter-frame gap now %.3f s", self.name, address, longer)

    def _gap_success(self, address: int | None) -> None:
        if address is None:
            return
        pc = self.pack_counters(address)
        if pc.gap_s is None:
            return
        streak = self._streak.get(address, 0) + 1
        if streak < ADAPTIVE_GAP_DECAY_AFTER:
            self._streak[address] = streak
            return
        self._streak[address] = 0
        shorter = pc.gap_s / 2
        pc.gap_s = None if shorter <= self.gap_s else shorter

    # ---- the decoder (auto-detection swaps it) ----------------------------------------------------

    def set_decoder_factory(self, factory: Callable[[], FrameDecoder]) -> None:
        self._decoder_factory = factory
        self._decoder = factory()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # ---- BusClient ---------------------------------------------------------------------------

    async def transact(
        self,
        request: bytes,
        match: Callable[[Frame], bool],
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        expect_response: bool = True,
        address: int | None = None,
        retries: int | None = None,
    ) -> Frame | None:
        """`BusClient.transact`; `retries` overrides the bus's retry count for this request (the
        poller probes a silent pack without retries)."""
        self._count(address, "requests")
        if not self._accepting:
            self._count(address, "not_sent")
            why = self.counters.last_error or "not connected"
            raise NotSent(f"bus {self.name}: link down ({why})")
        if self._decoder is None:
            self._count(address, "not_sent")
            raise NotSent(f"bus {self.name}: protocol not known yet")
        loop = asyncio.get_running_loop()
        req = _Request(
            data=bytes(request),
            match=match,
            timeout_s=self.response_timeout_s if timeout_s is None else timeout_s,
            expect_response=expect_response,
            address=address,
            future=loop.create_future(),
            enqueued_at=time.monotonic(),
            priority=int(priority),
            retries=retries,
        )
        try:
            self._queue.put_nowait((int(priority), next(self._seq), req))
        except asyncio.QueueFull:
            self._count(address, "not_sent")
            self.counters.queue_full += 1
            raise NotSent(f"bus {self.name}: request queue full") from None
        self._waiting[req.priority] += 1
        self.counters.queue_depth = self._queue.qsize()
        return await req.future

    # ---- the owner task ------------------------------------------------------------------------

    async def run(self, ready: ReadyCallback) -> None:
        """Connect, serve requests one at a time, reconnect with backoff; runs until cancelled."""
        announced = False
        self._accepting = True
        try:
            while True:
                if self._conn is None:
                    ok = await self._connect()
                    if not announced:
                        ready()
                        announced = True
                    if not ok:
                        self._accepting = False
                        self._fail_queued("link down")
                        await asyncio.sleep(self._backoff.next_delay())
                        self._accepting = True  # let requests queue for the next attempt
                        continue
                _, _, req = await self._queue.get()
                self._waiting[req.priority] -= 1
                self.counters.queue_depth = self._queue.qsize()
                if req.future.done():  # the caller gave up (cancelled) while queued
                    continue
                await self._serve(req)
        finally:
            self._accepting = False
            self._fail_queued("shutting down")
            await self._disconnect(None)

    async def _connect(self) -> bool:
        try:
            conn = await self._opener()
        except PortInUse as err:
            if self.counters.connects == 0:  # at start-up: no retry can fix it, stop the start (exit 2)
                raise ConfigError(f"bus {self.name}: {err}") from None
            self.counters.connect_failures += 1
            self.counters.last_error = str(err)
            return False
        except TransportError as err:
            self.counters.connect_failures += 1
            self.counters.last_error = str(err)
            if self._backoff.failures == 0:
                log.warning("bus %s: cannot open: %s (retrying with backoff)", self.name, err)
            return False
        self._conn = conn
        self.counters.connects += 1
        self.counters.connected = True
        self.counters.last_error = None
        if self._backoff.failures:
            log.info("bus %s: link up again after %d failed attempts", self.name, self._backoff.failures)
        self._backoff.reset()
        self._accepting = True
        try:
            self.counters.flushed_bytes += await conn.flush_input(max_s=self._flush_after_connect_s)
        except TransportError as err:
            await self._disconnect(err)
            return False
        if self._decoder is not None:
            self._decoder.clear()
        self._last_activity = time.monotonic()
        return True

    async def _disconnect(self, err: BaseException | None) -> None:
        conn, self._conn = self._conn, None
        self.counters.connected = False
        if conn is None:
            return
        if err is not None:
            self.counters.disconnects += 1
            self.counters.last_error = str(err)
            log.warning("bus %s: link lost: %s (reconnecting)", self.name, err)
        with contextlib.suppress(Exception):
            await conn.close()

    def _fail_queued(self, why: str) -> None:
        while True:
            try:
                _, _, req = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if not req.future.done():
                self._count(req.address, "not_sent")
                req.future.set_exception(NotSent(f"bus {self.name}: {why}"))
        self.counters.queue_depth = 0
        self._waiting.clear()

    def _decode(self, data: bytes, address: int | None) -> list[Frame]:
        """Feed bytes to the decoder; count errors; return the validated frames."""
        assert self._decoder is not None
        self.counters.bytes_received += len(data)
        if address is not None:
            self.pack_counters(address).bytes_received += len(data)
        self._decoder.feed(data)
        frames: list[Frame] = []
        for item in self._decoder.frames():
            if isinstance(item, RemoteProtocolError):
                self._count(address, "checksum_errors")
                log.debug("bus %s: invalid frame dropped: %s", self.name, item)
            else:
                self.counters.frames_received += 1
                frames.append(item)
        return frames

    async def _quiet_until(self, deadline: float) -> None:
        """Wait for the inter-frame gap; whatever arrives meanwhile is counted and discarded."""
        assert self._conn is not None
        while (remaining := deadline - time.monotonic()) > 0:
            data = await self._conn.read(remaining)
            if data:
                self._last_activity = time.monotonic()
                for _ in self._decode(data, None):
                    self.counters.late_frames += 1
        if self._decoder is not None and self._decoder.buffered:
            self._decoder.clear()

    async def _serve(self, req: _Request) -> None:
        addr = req.address
        started = time.monotonic()
        sent_once = False
        retries = self.retries if req.retries is None else req.retries
        tries = 0
        try:
            for attempt in range(retries + 1):
                if attempt and self._higher_waiting(req):
                    # pre-emption between requests: a firmware/admin request waits; the poll's
                    # retry gives way (the poller asks again on its schedule)
                    self._count(addr, "preempted")
                    break
                if attempt:
                    self._count(addr, "retries")
                await self._quiet_until(self._last_activity + self.gap_for(addr))
                assert self._conn is not None
                await self._conn.write(req.data)
                sent_once = True
                tries += 1
                self._count(addr, "frames_sent")
                self._count(addr, "bytes_sent", len(req.data))
                self._last_activity = time.monotonic()
                if not req.expect_response:
                    self._finish(req, None)
                    return
                frame = await self._await_answer(req)
                self._last_activity = time.monotonic()
                if frame is not None:
                    self._gap_success(addr)
                    self._count(addr, "responses")
                    now = time.time()
                    self.counters.last_success_at = now
                    if addr is not None:
                        self.pack_counters(addr).last_success_at = now
                    self._finish(req, frame)
                    return
                self._count(addr, "timeouts")
                self._gap_failure(addr)
            self._count(addr, "no_response")
            self._fail(req, NoResponse(f"bus {self.name}: no valid answer{_at(addr)} after {tries} tries"))
        except TransportError as err:
            await self._disconnect(err)
            if sent_once:
                self._count(addr, "no_response")
                self._fail(req, NoResponse(f"bus {self.name}: link lost waiting for the answer{_at(addr)}"))
            else:
                self._count(addr, "not_sent")
                self._fail(req, NotSent(f"bus {self.name}: link lost: {err}"))
        finally:
            log.debug("bus %s: request%s took %.3f s", self.name, _at(addr), time.monotonic() - started)

    def _higher_waiting(self, req: _Request) -> bool:
        """A firmware or admin request waits while a poll or background request would retry."""
        if req.priority <= Priority.ADMIN:
            return False
        return any(n > 0 for p, n in self._waiting.items() if p <= Priority.ADMIN)

    async def _await_answer(self, req: _Request) -> Frame | None:
        assert self._conn is not None
        deadline = time.monotonic() + req.timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            data = await self._conn.read(remaining)
            if not data:
                continue
            for frame in self._decode(data, req.address):
                if frame.raw == req.data or frame.is_request:
                    self._count(req.address, "echoes")
                    continue
                if req.address is not None and frame.address != req.address:
                    self._count(req.address, "unexpected_address")
                    continue
                try:
                    matched = req.match(frame)
                except Exception:  # a driver's matcher must not kill the bus owner
                    log.exception("bus %s: match function failed", self.name)
                    matched = False
                if matched:
                    return frame
                self._count(req.address, "unexpected_frames")
        return None

    def _finish(self, req: _Request, frame: Frame | None) -> None:
        if not req.future.done():
            req.future.set_result(frame)

    def _fail(self, req: _Request, err: Exception) -> None:
        if not req.future.done():
            req.future.set_exception(err)


def _at(address: int | None) -> str:
    return "" if address is None else f" from address {address}"
