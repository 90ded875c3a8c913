"""The history operations shared by the HTTP API and the CLI: pull (download jobs), list, export,
delete in the pack, storage interval and record start/end time.

Roles: `viewer` lists and exports stored records; `operator` starts/stops downloads and reads the
storage settings; `admin` writes the storage interval and record times and deletes the records in
a pack (with explicit confirmation). Every state-changing action is appended to the audit log.

`HistoryService` is also the gateway service that runs the download jobs (in its own TaskGroup);
jobs left `running` by a killed process are marked `stopped` at start and resume on request.

This module reaches packs only through the bus owner (`ctx.buses`) with the pack's driver.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.app import shared
from gateway.app.config import state_path
from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import PackKey
from gateway.ops.admin.packs import label
from gateway.ops.history.base import RecordsService
from gateway.ops.history.download import DownloadJob, JobBusy, Progress
from gateway.ops.history.errors import require
from gateway.ops.history.export import render
from gateway.ops.history.store import HistoryDB, RecordQuery, record_rows
from gateway.ops.security.audit import Actor, AuditLog
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import ApiError, Conflict, Invalid, NotFound, PackSilent
from gateway.south.drivers.base import BusError, HistoryDeleter, RecordTimes, StorageInterval, Unsupported

log = logging.getLogger(__name__)

MAX_LIST = 10_000  # rows per list request (exports are not limited)
DELETE_CONFIRMATION = "DELETE"  # what `confirm` must say for a delete in the pack


class NotStarted:
    """A pack of a bus pull whose download could not start (it does not answer, or another job runs
    on it): one final `failed` progress with the reason, so the pull lists it with the others."""

    def __init__(self, key: PackKey, err: ApiError | JobBusy, started_at: float) -> None:
        if isinstance(err, PackSilent):
            detail = f"not started, the pack does not answer: {err.message}"
        elif isinstance(err, JobBusy):
            detail = "not started: a download of this pack is already running"
        else:
            detail = f"not started: {err.message}"
        self.progress = Progress(
            label(key), "", "failed", 0, None, 0, 0, 0, 0, None, None, started_at, detail
        )

    async def updates(self) -> AsyncIterator[Progress]:
        yield self.progress


class PullSequence:
    """The downloads one `pull` started (one pack, or every pack of a bus one after another), so a
    client follows all of them over one request (`updates()`) instead of polling the job list. A
    pack of a bus whose download could not start is in it too, as `NotStarted` (failed)."""

    def __init__(self, keys: Sequence[PackKey]) -> None:
        self.keys = list(keys)
        self.jobs: list[DownloadJob | NotStarted] = []
        self.finished = False
        self._changed = asyncio.Event()

    def add(self, job: DownloadJob | NotStarted) -> None:
        self.jobs.append(job)
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    async def updates(self) -> AsyncIterator[Progress]:
        """Every progress of every job of the sequence, in order, until the last job has ended."""
        index = 0
        while True:
            if index < len(self.jobs):
                async for progress in self.jobs[index].updates():
                    yield progress
                index += 1
                continue
            if self.finished:
                return
            self._changed.clear()
            if index < len(self.jobs) or self.finished:
                continue
            await self._changed.wait()


class HistoryService(RecordsService):
    name = "history"

    def __init__(
        self, ctx: AppContext, db: HistoryDB, audit: AuditLog | None, *, wall: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self.db = db
        self.audit_log = audit
        self._wall = wall
        self.jobs: dict[str, DownloadJob] = {}
        self.sequences: dict[str, PullSequence] = {}  # the latest pull per target ("sim" or "sim/1")
        ctx.pack_jobs.register("history", self.running_on)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tg: asyncio.TaskGroup | None = None

    @classmethod
    def from_context(cls, ctx: AppContext) -> HistoryService:
        db = HistoryDB(state_path(ctx.config, ctx.config_path, ctx.config.history.db))
        return cls(ctx, db, shared.audit_log(ctx))

    # ---- the gateway service -------------------------------------------------------------------

    async def run(self, ready: ReadyCallback) -> None:
        interrupted = await asyncio.to_thread(self.db.mark_interrupted)
        if interrupted:
            log.info("history: %d download(s) interrupted by the last shutdown can be resumed", interrupted)
        try:
            await self._serve(ready)
        finally:
            for job in self.jobs.values():
                job.stop()

    # ---- plumbing --------------------------------------------------------------------------------

    def bus_packs(self, bus: str) -> list[PackKey]:
        keys = [k for k in self.ctx.pack_keys if k[0] == bus]
        if not keys:
            raise NotFound(f"no bus {bus!r}; configured: {', '.join(sorted(self.ctx.buses)) or 'none'}")
        return keys

    async def pack_serial(self, key: PackKey) -> str:
        """The pack's serial (records are keyed by it): from the snapshot, else read from the pack."""
        snap = self.ctx.store.view.pack(*key)
        ident = None if snap is None else snap.identity
        if ident is None or not (ident.serial or ident.barcode):
            try:
                ident = await self.driver(key).read_identity(self.ctx.bus_for(key), key[1])
            except BusError as err:
                raise PackSilent(f"pack {label(key)}: its identity could not be read ({err})") from None
        serial = ident.serial or ident.barcode
        if not serial:
            raise Conflict(
                f"pack {label(key)} reports no serial number or barcode; its records cannot be keyed"
            )
        return serial

    # ---- downloads -------------------------------------------------------------------------------

    async def pull(
        self, who: Actor, *, bus: str, address: int | None = None, resume: bool = True
    ) -> list[dict[str, Any]]:
        """Start a download of one pack, or of every pack of `bus` one after another."""
        request = {"bus": bus, "address": address, "resume": resume}
        keys: list[PackKey] = []
        try:
            require(who, Role.OPERATOR, "downloading history")
            keys = [self.pack(bus, address)] if address is not None else self.bus_packs(bus)
            for key in keys:
                self.driver(key)  # refuses undetected buses before anything starts
                job = self.jobs.get(label(key))
                if job is not None and not job.progress.finished:
                    raise Conflict(f"a history download of {label(key)} is already running; stop it first")
                other = self.ctx.pack_jobs.running(key, besides="history")
                if other is not None:
                    raise Conflict(f"{other}; long jobs on one pack are exclusive (wait for it to end)")
            first: DownloadJob | NotStarted
            try:
                first = await self._prepare(keys[0], resume)
            except JobBusy:
                raise Conflict(f"a history download of {label(keys[0])} is already running") from None
            except PackSilent as err:
                if address is not None:
                    raise  # one pack: 504; a bus: that pack is failed, the others are downloaded
                log.warning("history download of %s not started: %s", label(keys[0]), err)
                first = NotStarted(keys[0], err, self._wall())
        except ApiError as err:
            outcome = "failed" if isinstance(err, PackSilent) else "refused"
            await self.audit(who, "history.pull", keys, request, outcome=outcome, detail=err.message)
            raise
        await self.audit(who, "history.pull", keys, request, outcome="ok")
        sequence = PullSequence(keys)
        sequence.add(first)
        self.sequences[bus if address is None else f"{bus}/{address}"] = sequence
        self._spawn(self._run_sequence(first, keys[1:], resume, sequence))
        return [first.progress.as_dict()]

    async def _prepare(self, key: PackKey, resume: bool) -> DownloadJob:
        if label(key) in self.jobs and not self.jobs[label(key)].progress.finished:
            raise JobBusy(label(key))
        other = self.ctx.pack_jobs.running(key, besides="history")
        if other is not None:  # a later pack of a bus download: an upgrade started there meanwhile
            raise Conflict(f"{other}; long jobs on one pack are exclusive")
        serial = await self.pack_serial(key)
        job = DownloadJob(
            self.db,
            self.ctx.bus_for(key),
            self.driver(key),
            key[0],
            key[1],
            serial,
            resume=resume,
            record_retries=self.ctx.config.history.record_retries,
            record_timeout_s=self._record_timeout_s(key[0]),
        )
        self.jobs[label(key)] = job
        return job

    def _record_timeout_s(self, bus: str) -> float:
        """`[history] record_timeout_s`, but never shorter than one full bus transaction (response
        timeout x attempts) plus a second, so a slow but answering pack is not abandoned."""
        configured = self.ctx.config.history.record_timeout_s
        poller = self.ctx.pollers.get(bus)
        if poller is None:
            return configured
        return max(configured, poller.cfg.response_timeout_s * (poller.cfg.retries + 1) + 1.0)

    async def _run_sequence(
        self,
        first: DownloadJob | NotStarted,
        rest: Sequence[PackKey],
        resume: bool,
        sequence: PullSequence | None = None,
    ) -> None:
        job: DownloadJob | None = first if isinstance(first, DownloadJob) else None
        queue = list(rest)
        try:
            while job is not None or queue:
                if job is not None:
                    result = await job.run()
                    if result.state == "stopped" and job.progress.detail == "stopped by request":
                        return  # stopping one pack of a bus download stops the rest too
                job = None
                while queue and job is None:
                    key = queue.pop(0)
                    try:
                        job = await self._prepare(key, resume)
                    except (ApiError, JobBusy) as err:
                        log.warning("history download of %s not started: %s", label(key), err)
                        if sequence is not None:  # listed failed with the reason; the next pack goes on
                            sequence.add(NotStarted(key, err, self._wall()))
                if job is not None and sequence is not None:
                    sequence.add(job)
        finally:
            if sequence is not None:
                sequence.finish()

    def running_on(self, key: PackKey) -> str | None:
        """The download running on the pack, named for a refusal of another long job (or None)."""
        job = self.jobs.get(label(key))
        if job is None or job.progress.finished:
            return None
        return f"a history download of {label(key)} is running (record {job.progress.next_index})"

    def stop(self, bus: str, address: int | None = None) -> list[dict[str, Any]]:
        stopped = []
        for name, job in self.jobs.items():
            b, _, a = name.rpartition("/")
            if b == bus and (address is None or int(a) == address) and not job.progress.finished:
                job.stop()
                stopped.append(job.progress.as_dict())
        return stopped

    def progress(self, *, bus: str | None = None) -> list[Progress]:
        return [
            j.progress for n, j in sorted(self.jobs.items()) if bus is None or n.rpartition("/")[0] == bus
        ]

    async def status(self) -> dict[str, Any]:
        stored = await asyncio.to_thread(self.db.jobs)
        return {
            "running": [p.as_dict() for p in self.progress() if not p.finished],
            "jobs": [j.as_dict() for j in stored],
        }

    # ---- stored records --------------------------------------------------------------------------

    def query_of(
        self,
        *,
        bus: str | None = None,
        address: int | None = None,
        serial: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> RecordQuery:
        for name, value in (("since", since), ("until", until)):
            if value is not None and not math.isfinite(value):
                raise Invalid(f"{name} must be a finite number of epoch seconds, got {value}")
        if since is not None and until is not None and until <= since:
            raise Invalid(f"the time range is empty: until ({until}) must be after since ({since})")
        if not 0 <= offset <= 1_000_000_000 or (limit is not None and not 0 <= limit <= 1_000_000_000):
            raise Invalid("limit and offset must be within 0..1000000000")
        return RecordQuery(serial, bus, address, since, until, event, limit, offset)

    async def list(self, who: Actor, q: RecordQuery) -> dict[str, Any]:
        require(who, Role.VIEWER, "reading history records")
        limited = RecordQuery(
            q.pack_serial,
            q.bus,
            q.address,
            q.since,
            q.until,
            q.event,
            min(q.limit or MAX_LIST, MAX_LIST),
            q.offset,
        )
        rows = await asyncio.to_thread(self.db.query, limited)
        total = await asyncio.to_thread(self.db.count, q)
        return {"total": total, "records": [r.as_dict() for r in rows]}

    async def export(self, who: Actor, q: RecordQuery, fmt: str) -> bytes:
        require(who, Role.VIEWER, "exporting history records")
        if fmt not in ("csv", "xlsx"):
            raise Invalid(f"export format must be csv or xlsx, got {fmt!r}")
        rows = await asyncio.to_thread(self.db.query, q)
        header, table = record_rows(rows)
        return await asyncio.to_thread(render, fmt, header, table, sheet="history")

    # ---- settings in the pack --------------------------------------------------------------------

    def _storage(self, key: PackKey, what: str) -> StorageInterval:
        driver = self.driver(key)
        if not isinstance(driver, StorageInterval):
            raise Conflict(f"{driver.family}: {what} is not available for this BMS family")
        return driver

    def _record_times(self, key: PackKey, what: str) -> RecordTimes:
        driver = self.driver(key)
        if not isinstance(driver, RecordTimes):
            raise Conflict(f"{driver.family}: {what} is not available for this BMS family")
        return driver

    async def _call(self, key: PackKey, fn: Any, *args: Any) -> Any:
        try:
            return await fn(self.ctx.bus_for(key), key[1], *args)
        except Unsupported as err:
            raise Conflict(str(err)) from None
        except BusError as err:
            raise PackSilent(f"pack {label(key)}: {err}") from None

    async def read_interval(self, who: Actor, bus: str, address: int) -> dict[str, Any]:
        require(who, Role.OPERATOR, "reading the storage interval")
        key = self.pack(bus, address)
        fn = self._storage(key, "the history storage interval").read_storage_interval
        minutes = await self._call(key, fn)
        return {"pack": label(key), "interval_min": minutes}

    async def write_interval(self, who: Actor, bus: str, address: int, minutes: int) -> dict[str, Any]:
        key = self.pack(bus, address)
        request = {"interval_min": minutes}
        try:
            require(who, Role.ADMIN, "writing the storage interval")
            if not 1 <= minutes <= 0xFFFF:
                raise Invalid(f"storage interval {minutes} min is outside 1..65535 min")
            read = self._storage(key, "the history storage interval").read_storage_interval
            write = self._storage(key, "writing the history storage interval").write_storage_interval
        except ApiError as err:
            await self.audit(who, "history.interval", [key], request, outcome="refused", detail=err.message)
            raise
        before = await self._call_quiet(key, read)
        intents = await self.intend(who, "history.interval", key, request, before)
        try:
            await self._call(key, write, minutes)
            after = await self._call(key, read)
        except ApiError as err:
            await self.audit(
                who,
                "history.interval",
                [key],
                request,
                outcome="failed",
                before=before,
                detail=err.message,
                intents=intents,
            )
            raise
        outcome = "ok" if after == minutes else "mismatch"
        await self.audit(
            who,
            "history.interval",
            [key],
            request,
            outcome=outcome,
            before=before,
            after=after,
            intents=intents,
        )
        return {"pack": label(key), "before_min": before, "interval_min": after, "outcome": outcome}

    async def _call_quiet(self, key: PackKey, fn: Any) -> Any:
        try:
            return await self._call(key, fn)
        except ApiError:
            return None

    async def read_record_times(self, who: Actor, bus: str, address: int) -> dict[str, Any]:
        require(who, Role.OPERATOR, "reading the record start/end time")
        key = self.pack(bus, address)
        fn = self._record_times(key, "the record start/end time").read_record_times
        start, end = await self._call(key, fn)
        return {"pack": label(key), "start": start.isoformat(), "end": end.isoformat()}

    async def write_record_time(
        self, who: Actor, bus: str, address: int, which: str, when: str
    ) -> dict[str, Any]:
        key = self.pack(bus, address)
        request = {"which": which, "when": when}
        try:
            require(who, Role.ADMIN, "writing the record start/end time")
            if which not in ("start", "end"):
                raise Invalid(f"which must be 'start' or 'end', got {which!r}")
            try:
                moment = datetime.fromisoformat(when).replace(tzinfo=None, microsecond=0)
            except ValueError:
                raise Invalid(f"time {when!r} is not ISO 8601 (e.g. 2024-05-09T14:20:51)") from None
            if not 2000 <= moment.year <= 2099:
                raise Invalid(f"year {moment.year} is outside 2000..2099 (the pack stores two digits)")
            read = self._record_times(key, "the record start/end time").read_record_times
            write = self._record_times(key, "writing the record start/end time").write_record_time
        except ApiError as err:
            await self.audit(
                who, "history.record_time", [key], request, outcome="refused", detail=err.message
            )
            raise
        before = await self._call_quiet(key, read)
        before_json = None if before is None else [t.isoformat() for t in before]
        intents = await self.intend(who, "history.record_time", key, request, before_json)
        try:
            await self._call(key, write, which, moment)
            start, end = await self._call(key, read)
        except ApiError as err:
            await self.audit(
                who,
                "history.record_time",
                [key],
                request,
                outcome="failed",
                detail=err.message,
                intents=intents,
            )
            raise
        got = start if which == "start" else end
        outcome = "ok" if got == moment else "mismatch"
        await self.audit(
            who,
            "history.record_time",
            [key],
            request,
            outcome=outcome,
            before=before_json,
            after=[start.isoformat(), end.isoformat()],
            intents=intents,
        )
        return {"pack": label(key), "start": start.isoformat(), "end": end.isoformat(), "outcome": outcome}

    async def delete_in_pack(self, who: Actor, bus: str, address: int, confirm: str | None) -> dict[str, Any]:
        """The vendor tool's "Delete Record": only with `confirm == "DELETE"`, and only where the
        family has a documented command for it (none is publicly documented today)."""
        key = self.pack(bus, address)
        request = {"confirm": confirm}
        try:
            require(who, Role.ADMIN, "deleting the records stored in a pack")
            if confirm != DELETE_CONFIRMATION:
                raise Invalid(
                    f"deleting the records stored in pack {label(key)} cannot be undone; "
                    f'repeat the request with confirm = "{DELETE_CONFIRMATION}"'
                )
            driver = self.driver(key)
            if not isinstance(driver, HistoryDeleter):
                raise Conflict(
                    f"{driver.family}: deleting the records stored in the pack is not supported: no wire "
                    "command for the vendor tool's Delete Record is publicly documented, and the gateway "
                    "does not guess one (records downloaded into the gateway are kept)"
                )
            fn = driver.delete_history
        except ApiError as err:
            await self.audit(who, "history.delete", [key], request, outcome="refused", detail=err.message)
            raise
        intents = await self.intend(who, "history.delete", key, request)
        try:
            await self._call(key, fn)
        except ApiError as err:
            await self.audit(
                who, "history.delete", [key], request, outcome="failed", detail=err.message, intents=intents
            )
            raise
        await self.audit(who, "history.delete", [key], request, outcome="ok", intents=intents)
        return {"pack": label(key), "outcome": "ok"}


__all__ = ["DELETE_CONFIRMATION", "HistoryService"]
