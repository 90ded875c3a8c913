"""Polling schedules per pack, availability, protocol auto-detection, publishing into the model.

One `BusPoller` per bus (a `gateway.app.supervisor.Service`). For every pack it keeps coordinator-style
schedules: realtime data every `realtime_interval_s`, identity (version, barcode, SN) at start and
every `identity_interval_s`, the parameter tables at start, every `parameters_interval_s` and soon
after `request_parameters_refresh(key)` (call it after every write), the clock every
`clock_interval_s`. Requests go through the bus owner's queue, so the owner paces the wire.

Availability comes only from the time of the last successful realtime read: younger than
`stale_after_s` -> online, younger than `offline_after_s` -> stale (values kept, not trusted),
older -> offline. A separate watchdog re-evaluates it every second, so a pack whose bus vanished
turns stale on time even while requests are still timing out. Each transition is logged once.

With `pace_master_only` the realtime data of every configured pack comes from one whole-bank read
through the master pack (the first configured address). With `protocol = "auto"` the families in
`protocol.bms.registry` are probed at start until one answers.

`pause(address, reason)` stops every read addressed to one pack until `resume(address)` (a firmware
job uses it: a pack in its bootloader answers nothing else). The reason is in the pack's snapshot
(`PackSnapshot.paused`), so operators see why the pack turns stale; availability is not faked.

This module never writes to a transport itself and never decodes bytes; failures of a read
never update a snapshot (the previous good values stay, with their own timestamp).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.app.config import BusConfig
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import (
    Availability,
    ClockReading,
    LinkStats,
    ModelStore,
    PackIdentity,
    PackKey,
    PackSnapshot,
    ParameterSet,
    Telemetry,
)
from gateway.south.bus import BusOwner, LinkCounters
from gateway.south.drivers.base import BusClient, BusError, DeviceError, Driver, Unsupported
from protocol.bms.base import Frame
from protocol.bms.registry import families
from protocol.errors import RemoteProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCHDOG_PERIOD_S = 1.0
RETRY_AFTER_FAILURE_S = 30.0  # identity/parameters/clock retried this soon after a failed read

# A silent pack is probed on a backoff schedule, not every cycle (each miss holds the bus for a
# whole response timeout). After the k-th failed realtime read in a row the next one is due after
# realtime_interval_s for k <= PROBE_FREE_MISSES, then after max(realtime_interval_s, PROBE_BASE_S)
# * 2**(k - PROBE_FREE_MISSES - 1), at most PROBE_MAX_INTERVAL_S (never sooner than the interval);
# probes after PROBE_FREE_MISSES misses are sent without retries. One answer restores the schedule.
PROBE_FREE_MISSES = 2
PROBE_BASE_S = 5.0
PROBE_MAX_INTERVAL_S = 60.0


def probe_interval_s(misses: int, interval_s: float) -> float:
    """When the next realtime read of a pack is due after `misses` failed reads in a row."""
    if misses <= PROBE_FREE_MISSES:
        return interval_s
    backoff = max(interval_s, PROBE_BASE_S) * 2.0 ** (misses - PROBE_FREE_MISSES - 1)
    return max(interval_s, min(PROBE_MAX_INTERVAL_S, backoff))


class _NoRetries:
    """The bus owner seen through a probe of a silent pack: one attempt per request."""

    def __init__(self, owner: BusOwner) -> None:
        self.owner = owner

    async def transact(self, request: bytes, match: Callable[[Frame], bool], **kw: Any) -> Frame | None:
        return await self.owner.transact(request, match, **{**kw, "retries": 0})


def load_driver(family: str) -> Driver:
    """The driver of a BMS family, from `gateway.south.drivers.<family>` (`DRIVER` or Driver class)."""
    try:
        module = importlib.import_module(f"gateway.south.drivers.{family}")
    except ModuleNotFoundError:
        raise LookupError(f"no driver for BMS protocol {family!r}") from None
    candidate = getattr(module, "DRIVER", None)
    if candidate is None:
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Driver)
            and not inspect.isabstract(obj)
            and getattr(obj, "family", None) == family
        ]
        if len(classes) != 1:
            raise LookupError(f"gateway.south.drivers.{family} defines no single Driver for {family!r}")
        candidate = classes[0]
    driver = candidate() if inspect.isclass(candidate) else candidate
    if not isinstance(driver, Driver):
        raise LookupError(f"gateway.south.drivers.{family}.DRIVER is not a Driver")
    return driver


def available_families() -> list[str]:
    """Registered BMS families that also have a driver."""
    found = []
    for name in families():
        try:
            load_driver(name)
        except LookupError:
            continue
        found.append(name)
    return found


async def scan(
    owner: BusOwner, family_names: Iterable[str], addresses: Iterable[int]
) -> dict[str, list[int]]:
    """Probe every address with every family's driver; which family answers where."""
    addresses = list(addresses)
    found: dict[str, list[int]] = {}
    for name in family_names:
        driver = load_driver(name)
        owner.set_decoder_factory(driver.new_decoder)
        for addr in addresses:
            try:
                ok = await driver.probe(owner, addr)
            except (BusError, RemoteProtocolError):
                ok = False
            if ok:
                found.setdefault(name, []).append(addr)
    return found


def _link_signature(lc: LinkCounters) -> tuple[int, ...]:
    return (lc.requests, lc.responses, lc.timeouts, lc.checksum_errors, lc.device_errors)


@dataclass(slots=True)
class PackState:
    address: int
    name: str | None = None
    availability: Availability = Availability.UNKNOWN
    telemetry: Telemetry | None = None
    identity: PackIdentity = field(default_factory=PackIdentity)
    parameters: ParameterSet | None = None
    clock: ClockReading | None = None
    last_success_at: float | None = None  # wall clock of the last good realtime read
    last_poll_duration_s: float | None = None
    next_realtime: float = 0.0  # monotonic due times
    next_identity: float = 0.0
    next_parameters: float = 0.0
    next_clock: float = 0.0
    paused: str | None = None  # why reads of this pack are paused (see BusPoller.pause), or None
    misses: int = 0  # failed realtime reads in a row (probe backoff, see probe_interval_s)
    published_link: tuple[int, ...] = ()  # link counters in the last published snapshot


class BusPoller:
    """Schedules the reads of one bus's packs and publishes their snapshots (a Service)."""

    def __init__(
        self,
        cfg: BusConfig,
        owner: BusOwner,
        store: ModelStore,
        driver: Driver | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.name = f"poller:{cfg.name}"
        self.owner = owner
        self.store = store
        self.driver = driver
        self._mono = monotonic
        self._wall = wall
        self.packs: dict[int, PackState] = {
            a: PackState(a, name=cfg.names.get(str(a))) for a in cfg.addresses
        }
        self._wake = asyncio.Event()
        self._started_wall = wall()
        self.detected_family: str | None = driver.family if driver else None
        self._unsupported: set[tuple[int, str]] = set()

    @property
    def master(self) -> int:
        return self.cfg.addresses[0]

    # ---- public ---------------------------------------------------------------------------------

    def request_parameters_refresh(self, key: PackKey) -> None:
        """Re-read the pack's parameter tables at the next opportunity (after a write)."""
        if key[0] != self.cfg.name or key[1] not in self.packs:
            raise KeyError(f"no pack {key[1]} on bus {self.cfg.name!r}")
        self.packs[key[1]].next_parameters = 0.0
        self._wake.set()

    def pause(self, address: int, reason: str) -> None:
        """Stop every read addressed to the pack at `address` until `resume(address)`.

        A read already on the wire finishes (its result is used). With `pace_master_only`, pausing
        the master pauses the whole-bank read, and a paused pack ignores its part of a bank answer.
        Availability keeps following the last good read (the pack turns stale, then offline); the
        snapshot carries `reason` in `paused`. Pausing a paused pack replaces the reason.
        """
        st = self._state(address)
        if not reason.strip():
            raise ValueError("a pause needs a reason (it is shown to operators)")
        changed = st.paused != reason
        st.paused = reason
        if changed:
            log.info("bus %s/%d: polling paused: %s", self.cfg.name, address, reason)
            self.store.publish(self.snapshot(address), now=self._wall())

    def resume(self, address: int) -> None:
        """Poll the pack again, reading realtime data, identity, parameters and clock at once
        (reads the family does not support stay off). Resuming a pack that is not paused is a no-op."""
        st = self._state(address)
        if st.paused is None:
            return
        st.paused = None
        st.next_realtime = 0.0
        st.misses = 0
        for what in ("identity", "parameters", "clock"):
            if getattr(st, f"next_{what}") != math.inf:
                setattr(st, f"next_{what}", 0.0)
        log.info("bus %s/%d: polling resumed", self.cfg.name, address)
        self.store.publish(self.snapshot(address), now=self._wall())
        self._wake.set()

    def paused(self) -> dict[int, str]:
        """The paused packs of this bus: address -> reason."""
        return {a: st.paused for a, st in self.packs.items() if st.paused is not None}

    def set_identity(self, address: int, identity: PackIdentity) -> None:
        """Publish an identity read by someone else (e.g. the version after a firmware upgrade)
        at once, instead of waiting `identity_interval_s` for the next read."""
        st = self._state(address)
        st.identity = identity
        self.store.publish(self.snapshot(address), now=self._wall())

    def _state(self, address: int) -> PackState:
        try:
            return self.packs[address]
        except KeyError:
            raise KeyError(f"no pack {address} on bus {self.cfg.name!r}") from None

    def snapshot(self, address: int) -> PackSnapshot:
        st = self.packs[address]
        lc: LinkCounters = self.owner.pack_counters(address)
        st.published_link = _link_signature(lc)
        link = LinkStats(
            requests=lc.requests,
            responses=lc.responses,
            timeouts=lc.timeouts,
            checksum_errors=lc.checksum_errors,
            device_errors=lc.device_errors,
            last_success_at=st.last_success_at,
            last_poll_duration_s=st.last_poll_duration_s,
        )
        identity = st.identity
        if identity.protocol is None and self.driver is not None:
            identity = PackIdentity(
                version=identity.version,
                barcode=identity.barcode,
                serial=identity.serial,
                manufacturer=identity.manufacturer,
                model=identity.model,
                protocol=self.driver.family,
            )
        return PackSnapshot(
            bus=self.cfg.name,
            address=address,
            availability=st.availability,
            telemetry=st.telemetry,
            identity=identity,
            parameters=st.parameters,
            clock=st.clock,
            link=link,
            name=st.name,
            paused=st.paused,
        )

    def availability_of(self, st: PackState, now_wall: float) -> Availability:
        if st.last_success_at is None:
            if now_wall - self._started_wall >= self.cfg.offline_after_s:
                return Availability.OFFLINE
            return Availability.UNKNOWN
        age = now_wall - st.last_success_at
        if age < self.cfg.stale_after_s:
            return Availability.ONLINE
        if age < self.cfg.offline_after_s:
            return Availability.STALE
        return Availability.OFFLINE

    # ---- the service ----------------------------------------------------------------------------

    async def run(self, ready: ReadyCallback) -> None:
        self._started_wall = self._wall()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watchdog())
            if self.driver is None:
                ready()  # detection may take long on a dead bus; the gateway is usable meanwhile
                self.driver = await self._detect()
            else:
                ready()
            self.owner.set_decoder_factory(self.driver.new_decoder)
            await self._poll_forever()

    async def _detect(self) -> Driver:
        names = available_families()
        logged = False
        while True:
            for name in names:
                driver = load_driver(name)
                self.owner.set_decoder_factory(driver.new_decoder)
                for addr in self.cfg.addresses:
                    try:
                        if await driver.probe(self.owner, addr):
                            log.info("bus %s: detected protocol %s (address %d)", self.cfg.name, name, addr)
                            self.detected_family = name
                            return driver
                    except (BusError, RemoteProtocolError):
                        continue
            if not logged:
                log.warning(
                    "bus %s: no pack answered any of %s at %s; still trying",
                    self.cfg.name,
                    ", ".join(names),
                    self.cfg.addresses,
                )
                logged = True
            await asyncio.sleep(self.cfg.realtime_interval_s)

    async def _watchdog(self) -> None:
        while True:
            self._refresh_availability()
            await asyncio.sleep(WATCHDOG_PERIOD_S)

    def _refresh_availability(self) -> None:
        now = self._wall()
        changed = []
        for st in self.packs.values():
            new = self.availability_of(st, now)
            if new is not st.availability:
                self._log_transition(st, new)
                st.availability = new
                changed.append(self.snapshot(st.address))
            elif _link_signature(self.owner.pack_counters(st.address)) != st.published_link:
                changed.append(self.snapshot(st.address))  # failures show up in `link` while they happen
        if changed:
            self.store.publish(*changed, now=now)

    def _log_transition(self, st: PackState, new: Availability) -> None:
        label = f"{self.cfg.name}/{st.address}"
        if new is Availability.ONLINE:
            log.info("pack %s is online", label)
        elif new is Availability.STALE:
            log.warning("pack %s is stale (no good data for %.0f s)", label, self.cfg.stale_after_s)
        elif new is Availability.OFFLINE:
            log.warning("pack %s is offline", label)

    async def _poll_forever(self) -> None:
        while True:
            await self._poll_due()
            delay = max(0.0, self._next_due() - self._mono())
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _next_due(self) -> float:
        """The monotonic time of the earliest read that `_poll_due` would perform."""
        due = math.inf
        for st in self.packs.values():
            polled = st.address == self.master if self.cfg.pace_master_only else True
            polled = polled and st.paused is None
            if polled:
                due = min(due, st.next_realtime)
            if polled and st.last_success_at is not None:
                due = min(due, st.next_identity, st.next_parameters, st.next_clock)
        return due

    async def _poll_due(self) -> None:
        cfg = self.cfg
        if cfg.pace_master_only:
            master = self.packs[self.master]
            if master.paused is None and master.next_realtime <= self._mono():
                await self._bank_realtime()
        for st in self.packs.values():
            if st.paused is not None:
                continue
            now = self._mono()
            if not cfg.pace_master_only and st.next_realtime <= now:
                await self._realtime(st)
            reachable = not cfg.pace_master_only or st.address == self.master
            if not reachable or st.last_success_at is None or st.paused is not None:
                continue  # (paused while its realtime read was on the wire)
            if st.next_identity <= self._mono():
                await self._slow_read(st, "identity")
            if st.next_parameters <= self._mono():
                await self._slow_read(st, "parameters")
            if st.next_clock <= self._mono():
                await self._slow_read(st, "clock")

    async def _guard(self, address: int, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run one driver read; every failure is counted/logged and returns None."""
        try:
            return await call()
        except DeviceError as err:
            self.owner.note_device_error(address)
            log.debug("bus %s/%d: %s: device error %s", self.cfg.name, address, what, err)
        except RemoteProtocolError as err:
            self.owner.note_decode_error(address)
            log.debug("bus %s/%d: %s: undecodable answer: %s", self.cfg.name, address, what, err)
        except Unsupported as err:
            if (address, what) not in self._unsupported:
                self._unsupported.add((address, what))
                log.info("bus %s/%d: %s not supported: %s", self.cfg.name, address, what, err)
            raise
        except BusError as err:
            log.debug("bus %s/%d: %s failed: %s", self.cfg.name, address, what, err)
        except (ValueError, ArithmeticError, LookupError, TypeError) as err:
            # a driver that cannot make sense of a validated frame: count it, keep polling
            self.owner.note_decode_error(address)
            log.warning("bus %s/%d: %s: driver error: %r", self.cfg.name, address, what, err)
        return None

    async def _realtime(self, st: PackState) -> None:
        driver = self.driver
        assert driver is not None
        started = self._mono()
        st.next_realtime = started + self.cfg.realtime_interval_s
        bus: BusClient = self.owner if st.misses < PROBE_FREE_MISSES else _NoRetries(self.owner)
        try:
            telemetry = await self._guard(
                st.address, "realtime", lambda: driver.read_realtime(bus, st.address, self._wall())
            )
        except Unsupported:
            telemetry = None
        duration = self._mono() - started
        self.owner.note_poll(st.address, duration)
        st.last_poll_duration_s = duration
        if telemetry is not None:
            if st.misses > PROBE_FREE_MISSES:
                log.info("bus %s/%d: answers again after %d misses", self.cfg.name, st.address, st.misses)
            st.misses = 0
            self._accept(st, telemetry)
        else:
            st.misses += 1
            st.next_realtime = started + probe_interval_s(st.misses, self.cfg.realtime_interval_s)

    async def _bank_realtime(self) -> None:
        driver = self.driver
        assert driver is not None
        master = self.packs[self.master]
        master.next_realtime = self._mono() + self.cfg.realtime_interval_s
        started = self._mono()
        try:
            bank: Mapping[int, Telemetry] | None = await self._guard(
                self.master,
                "bank realtime",
                lambda: driver.read_bank_realtime(
                    self.owner, self.master, self._wall(), addresses=self.cfg.addresses
                ),
            )
        except Unsupported:
            bank = None
        duration = self._mono() - started
        self.owner.note_poll(self.master, duration)
        for addr, telemetry in (bank or {}).items():
            st = self.packs.get(addr)
            if st is None or st.paused is not None:
                continue
            st.last_poll_duration_s = duration
            self._accept(st, telemetry)

    def _accept(self, st: PackState, telemetry: Telemetry) -> None:
        now = self._wall()
        st.telemetry = telemetry
        st.last_success_at = now
        new = self.availability_of(st, now)
        if new is not st.availability:
            self._log_transition(st, new)
            st.availability = new
        self.store.publish(self.snapshot(st.address), now=now)

    async def _slow_read(self, st: PackState, what: str) -> None:
        driver = self.driver
        assert driver is not None
        interval = {
            "identity": self.cfg.identity_interval_s,
            "parameters": self.cfg.parameters_interval_s,
            "clock": self.cfg.clock_interval_s,
        }[what]
        addr = st.address
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "identity": lambda: driver.read_identity(self.owner, addr),
            "parameters": lambda: driver.read_parameters(self.owner, addr, self._wall()),
            "clock": lambda: driver.read_clock(self.owner, addr, self._wall()),
        }
        try:
            result = await self._guard(addr, what, calls[what])
        except Unsupported:
            setattr(st, f"next_{what}", math.inf)  # never again for this pack
            return
        if result is None:
            setattr(st, f"next_{what}", self._mono() + min(interval, RETRY_AFTER_FAILURE_S))
            return
        setattr(st, f"next_{what}", self._mono() + interval)
        if isinstance(result, PackIdentity):
            st.identity = result
        elif isinstance(result, ParameterSet):
            st.parameters = result
        elif isinstance(result, ClockReading):
            st.clock = result
        self.store.publish(self.snapshot(addr), now=self._wall())
