"""History download jobs: every record a pack stores, through the bus owner, into the history DB.

A `DownloadJob` reads one pack's records in order (index 0 = newest) with `Priority.BACKGROUND`:
the bus owner serves every poll first, so the other packs keep being polled while a download
streams at whatever speed the wire leaves (no fixed per-record delay like the vendor tool's
400 ms). Records are committed in small batches together with the job's position, so a stop, a
silent pack or a killed process leaves a job that resumes at the first record not stored; records
read twice (a resume, or new records shifting the pack's newest-first indexes) are stored once.

Progress: records read of the count the pack reported, rate, ETA; `updates()` streams it (SSE).

Resuming is a property of the driver, never a timeout: the job asks `driver.history_reach(N)`
what reaching record N costs (PACE reads records by index: nothing; Tianpower packs only stream
records in sequence and a count read rewinds, so N records are re-read and skipped) and then calls
`driver.history_advance` once per wire exchange, each under the per-exchange timeout
(`record_timeout_s`) with its retries. So a resume at record 400 takes 400 short exchanges and a
progress line ("reaching record 400: 120 of 400 exchanges"), where one read of record 400 under
one timeout used to fail for any resume point past a few records. PACE reports no count (the job
reads until the pack's end-of-data answer).

This module never writes to a transport directly and never holds the database lock across an await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from gateway.ops.history.store import HistoryDB
from gateway.south.drivers.base import (
    BusClient,
    BusError,
    Driver,
    HistoryReach,
    HistoryRecord,
    NoResponse,
    NotSent,
    Unsupported,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_RECORDS = 64  # records per commit (at most this many are re-read after a kill)
BATCH_INTERVAL_S = 1.0  # ... or this long, whichever comes first
MAX_RECORDS_WITHOUT_COUNT = 100_000  # PACE reports no count: a bound for a pack that never ends
MAX_REREADS = 2  # full re-reads of a stream that ended before the count the pack reported
CATCH_UP_MAX = 256  # records read after the pass for those stored meanwhile; the rest wait for the next


class JobBusy(Exception):
    """A download of this pack is already running."""


@dataclass(frozen=True, slots=True)
class Progress:
    pack: str
    pack_serial: str
    state: str  # starting | running | stopped | failed | done
    next_index: int  # first record not stored yet (the resume point)
    count: int | None  # records the pack reported (None: not reported by the family)
    read: int  # records read in this run
    stored: int  # new records stored (whole job)
    duplicates: int  # records read that were already in the database (whole job)
    resumed_from: int  # index this run started at
    rate_per_s: float | None  # records per second in this run
    eta_s: float | None
    started_at: float
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("stopped", "failed", "done")

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "pack_serial": self.pack_serial,
            "state": self.state,
            "next_index": self.next_index,
            "count": self.count,
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "resumed_from": self.resumed_from,
            "rate_per_s": self.rate_per_s,
            "eta_s": self.eta_s,
            "started_at": self.started_at,
            "detail": self.detail,
        }


class DownloadJob:
    """One pack's download. `await job.run()` returns the final `Progress`; `stop()` ends it cleanly."""

    def __init__(
        self,
        db: HistoryDB,
        bus: BusClient,
        driver: Driver,
        bus_name: str,
        address: int,
        pack_serial: str,
        *,
        resume: bool = True,
        record_retries: int = 3,
        record_timeout_s: float = 10.0,
        batch_records: int = BATCH_RECORDS,
        batch_interval_s: float = BATCH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.bus = bus
        self.driver = driver
        self.address = address
        self.pack = f"{bus_name}/{address}"
        self.pack_serial = pack_serial
        self.resume = resume
        self.record_retries = record_retries
        self.record_timeout_s = record_timeout_s
        self.batch_records = max(1, batch_records)
        self.batch_interval_s = batch_interval_s
        self._clock = clock
        self._wall = wall
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self.reach: HistoryReach | None = None  # the plan to reach the resume point (None: from 0)
        self.reach_exchanges = 0  # exchanges it took
        self._t0 = clock()
        self.progress = Progress(self.pack, pack_serial, "starting", 0, None, 0, 0, 0, 0, None, None, wall())

    # ---- control and observation -----------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def updates(self) -> AsyncIterator[Progress]:
        """The current progress, then every change until the job has finished."""
        while True:
            self._changed.clear()
            current = self.progress
            yield current
            if current.finished:
                return
            await self._changed.wait()

    def _set(self, **changes: Any) -> None:
        p = replace(self.progress, **changes)
        elapsed = self._clock() - self._t0
        rate = p.read / elapsed if p.read and elapsed > 0 else None
        eta = None
        if rate and p.count is not None:
            eta = max(0, p.count - p.next_index) / rate
        self.progress = replace(p, rate_per_s=rate, eta_s=eta)
        self._changed.set()

    # ---- the job ---------------------------------------------------------------------------------

    async def run(self) -> Progress:
        try:
            return await self._run()
        except asyncio.CancelledError:
            self._finish("stopped", "cancelled")
            raise

    async def _run(self) -> Progress:
        try:
            count: int | None = await self.driver.history_count(self.bus, self.address)
        except Unsupported:
            count = None  # PACE: no count; read until end-of-data
        except BusError as err:
            return self._fail_before_start(f"the record count could not be read: {err}")
        start = 0
        previous = await asyncio.to_thread(self.db.job, self.pack)
        if (
            self.resume
            and previous is not None
            and previous.state != "done"
            and previous.pack_serial == self.pack_serial
        ):
            start = previous.next_index
        now = self._wall()
        await asyncio.to_thread(
            self.db.start_job,
            pack=self.pack,
            pack_serial=self.pack_serial,
            family=self.driver.family,
            next_index=start,
            count=count,
            now=now,
        )
        prev_stored = previous.stored if previous and start else 0
        prev_dup = previous.duplicates if previous and start else 0
        self._t0 = self._clock()
        self._set(
            state="running",
            next_index=start,
            count=count,
            resumed_from=start,
            stored=prev_stored,
            duplicates=prev_dup,
            started_at=now,
        )
        limit = count if count is not None else MAX_RECORDS_WITHOUT_COUNT
        state, detail = await self._reach(start) if start else ("running", "")
        if state == "running":
            state, detail, index = await self._pass(start, limit, count)
        else:
            index = start
            await self._commit([], start, count, state=state, detail=detail)
        rereads = 0
        while state == "done" and count is not None and index < count and rereads < MAX_REREADS:
            # The pack ended its stream early: a reply was lost on the wire after the pack had
            # moved its read cursor (Tianpower streams cannot seek), so a record was skipped.
            # Read the stream again from the newest record; only the missing ones are stored.
            rereads += 1
            log.info(
                "history %s: stream ended after %d of %d records; reading it again", self.pack, index, count
            )
            try:
                count = await self.driver.history_count(self.bus, self.address)
            except BusError as err:
                state, detail = "failed", f"the record count could not be read again: {err}"
                break
            limit = count
            state, detail, index = await self._pass(0, limit, count)
        newer_left = 0
        if state == "done":
            try:
                newer_left = await self._catch_up(index, count)
            except BusError as err:
                log.info(
                    "history %s: newer records not read (%s); the next download gets them", self.pack, err
                )
            detail = f"{self.progress.stored} records stored, {self.progress.duplicates} already present"
            if newer_left:
                detail += (
                    f"; the pack stored newer records while this download ran ({newer_left}"
                    f"{'+' if count is None else ''} not read): the next download gets them"
                )
            if count is not None and index < count:
                detail += f"; the pack's stream ended after {index} of the {count} records it reported"
            await asyncio.to_thread(self.db.set_job_state, self.pack, "done", detail, self._wall())
        self._set(state=state, detail=detail)
        return self.progress

    async def _reach(self, index: int) -> tuple[str, str]:
        """Make record `index` the next to read, one wire exchange at a time (each under the
        per-exchange timeout and retries); ("running", "") once there, else the state to end in."""
        plan: HistoryReach = self.driver.history_reach(self.address, index)
        self.reach = plan
        if plan.exchanges == 0:
            return "running", ""
        log.info(
            "history %s: reaching record %d (%s, about %d exchanges)",
            self.pack,
            index,
            plan.method,
            plan.exchanges,
        )
        bound = plan.exchanges * 2 + 16  # frames may carry fewer records than the estimate assumed
        for step in range(bound):
            if self._stop.is_set():
                return "stopped", "stopped by request"
            self._set(
                detail=f"reaching record {index} ({plan.method}): {step} of about {plan.exchanges} exchanges"
            )
            try:
                there = await self._exchange(
                    lambda: self.driver.history_advance(self.bus, self.address, index)
                )
            except BusError as err:
                return "failed", f"reaching record {index}: {err}; resume continues at record {index}"
            if there:
                self.reach_exchanges = step + 1
                self._set(detail="")
                return "running", ""
        return (
            "failed",
            f"record {index} not reached after {bound} exchanges; resume continues at record {index}",
        )

    async def _exchange(self, call: Callable[[], Awaitable[T]]) -> T:
        """One wire exchange under the per-exchange timeout, retried."""
        for attempt in range(self.record_retries + 1):
            try:
                async with asyncio.timeout(self.record_timeout_s):
                    return await call()
            except (NoResponse, NotSent, TimeoutError):
                if attempt >= self.record_retries:
                    raise NoResponse(f"no answer after {attempt + 1} attempts") from None
                log.debug("history %s: no answer, retry %d", self.pack, attempt + 1)
        raise AssertionError("not reached: the last attempt raises")

    async def _pass(self, start: int, limit: int, count: int | None) -> tuple[str, str, int]:
        """Read records start.. until end-of-data, `limit`, a stop or a silent pack; commit them."""
        batch: list[HistoryRecord] = []
        batch_at = self._clock()
        index = start
        state, detail = "done", ""
        while True:
            if self._stop.is_set():
                state, detail = "stopped", "stopped by request"
                break
            if index >= limit:
                break
            try:
                record = await self._read(index)
            except BusError as err:
                state, detail = "failed", f"record {index}: {err}; resume continues at record {index}"
                break
            if record is None:
                break
            batch.append(record)
            index += 1
            self._set(read=self.progress.read + 1)
            if len(batch) >= self.batch_records or self._clock() - batch_at >= self.batch_interval_s:
                await self._commit(batch, index, count)
                batch = []
                batch_at = self._clock()
        await self._commit(batch, index, count, state=state, detail=detail)
        return state, detail, index

    async def _catch_up(self, next_index: int, count: int | None) -> int:
        """Records the pack stored after this job (or its first run) started sit at the newest end
        (index 0 up) and shift the older ones: read from index 0 until a record already stored.

        Bounded, so a pack that keeps recording (as fast as it is read) cannot keep the job running:
        with a count (Tianpower) at most the records added since the count read at the start, else at
        most CATCH_UP_MAX. Returns how many newer records were left for the next download (at least
        that many without a count)."""
        budget = CATCH_UP_MAX
        if count is not None and not self.progress.resumed_from:  # a resume also looks for records
            # stored between its first run and this one: those are not in the difference of counts
            try:
                now_count = await self.driver.history_count(self.bus, self.address)
            except Unsupported:
                now_count = count
            budget = min(CATCH_UP_MAX, max(0, now_count - count) + 1)  # +1: the first stored one
        for index in range(budget):
            if self._stop.is_set():
                return 0
            record = await self._read(index)
            if record is None:
                return 0
            new, _dup = await asyncio.to_thread(
                self.db.store_batch,
                pack=self.pack,
                pack_serial=self.pack_serial,
                family=self.driver.family,
                records=[record],
                next_index=next_index,
                count=count,
                now=self._wall(),
                count_duplicates=False,
            )
            if not new:
                return 0
            self._set(read=self.progress.read + 1, stored=self.progress.stored + new)
        if count is not None:
            try:
                now_count = await self.driver.history_count(self.bus, self.address)
                return max(1, now_count - count - budget + 1)
            except Unsupported:
                return 0
        return 1  # without a count: at least one newer record is still unread

    async def _read(self, index: int) -> HistoryRecord | None:
        try:
            return await self._exchange(lambda: self.driver.read_history(self.bus, self.address, index))
        except NoResponse as err:
            raise NoResponse(f"no record: {err}") from None

    async def _commit(
        self,
        batch: list[HistoryRecord],
        next_index: int,
        count: int | None,
        *,
        state: str = "running",
        detail: str = "",
    ) -> None:
        new, dup = await asyncio.to_thread(
            self.db.store_batch,
            pack=self.pack,
            pack_serial=self.pack_serial,
            family=self.driver.family,
            records=batch,
            next_index=next_index,
            count=count,
            state=state,
            detail=detail,
            now=self._wall(),
        )
        self._set(
            next_index=next_index,
            stored=self.progress.stored + new,
            duplicates=self.progress.duplicates + dup,
        )

    def _fail_before_start(self, detail: str) -> Progress:
        self._set(state="failed", detail=detail)
        return self.progress

    def _finish(self, state: str, detail: str) -> None:
        with contextlib.suppress(Exception):
            self.db.set_job_state(self.pack, state, detail, self._wall())
        self._set(state=state, detail=detail)
