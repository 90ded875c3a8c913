"""Real-time recording of every pack's snapshot (the vendor tool's "Record" and "Multi Packs" pages).

`Recorder` samples `ctx.store.view` every `[recording] interval_s` (default 1 s) and writes one row
per configured pack into its own SQLite file (WAL). Honesty rules: a pack that is not online is
recorded with its availability and *no values* (NULL, exported as empty cells); every row with values
also carries `measured_at`, the time the pack was actually read, so a value repeated between two
polls is recognisable as such. Retention deletes samples older than `max_age_days` and the oldest
samples while the database holds more than `max_size_mb`.

Recording never slows polling: sampling is a few attribute reads on the event loop, the INSERT runs
in a worker thread, and a write that overruns the interval makes the recorder skip ticks (counted)
instead of queueing. The cost of each sample is measured (`RecorderStats`).

This module never talks to a bus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.app.supervisor import ReadyCallback
from gateway.core.model import Availability, ModelView, TempRole
from gateway.ops.security.sqlitefile import SqliteFile

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sample (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    bus TEXT NOT NULL,
    address INTEGER NOT NULL,
    availability TEXT NOT NULL,
    measured_at REAL,
    voltage_v REAL,
    current_a REAL,
    power_w REAL,
    soc_pct REAL,
    soh_pct REAL,
    remaining_capacity_ah REAL,
    cell_max_v REAL,
    cell_min_v REAL,
    cell_diff_v REAL,
    temp_max_c REAL,
    temp_min_c REAL,
    mos_temp_c REAL,
    cells_v TEXT,
    temperatures_c TEXT,
    protections TEXT,
    alarms TEXT
);
CREATE INDEX IF NOT EXISTS sample_at ON sample(at);
CREATE INDEX IF NOT EXISTS sample_pack_at ON sample(bus, address, at);
"""

VALUE_FIELDS = (
    "voltage_v",
    "current_a",
    "power_w",
    "soc_pct",
    "soh_pct",
    "remaining_capacity_ah",
    "cell_max_v",
    "cell_min_v",
    "cell_diff_v",
    "temp_max_c",
    "temp_min_c",
    "mos_temp_c",
)
_COLUMNS = (
    "at",
    "bus",
    "address",
    "availability",
    "measured_at",
    *VALUE_FIELDS,
    "cells_v",
    "temperatures_c",
    "protections",
    "alarms",
)
RETENTION_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    bus: str
    address: int
    availability: str
    measured_at: float | None
    values: dict[str, float | None]  # VALUE_FIELDS; all None unless the pack was online
    cells_v: tuple[float, ...] | None
    temperatures_c: tuple[float, ...] | None
    protections: tuple[str, ...] | None
    alarms: tuple[str, ...] | None

    def row(self) -> tuple[Any, ...]:
        def js(v: Sequence[Any] | None) -> str | None:
            return None if v is None else json.dumps(list(v))

        return (
            self.at,
            self.bus,
            self.address,
            self.availability,
            self.measured_at,
            *(self.values.get(f) for f in VALUE_FIELDS),
            js(self.cells_v),
            js(self.temperatures_c),
            js(self.protections),
            js(self.alarms),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "pack": f"{self.bus}/{self.address}",
            "availability": self.availability,
            "measured_at": self.measured_at,
            **self.values,
            "cells_v": None if self.cells_v is None else list(self.cells_v),
            "temperatures_c": None if self.temperatures_c is None else list(self.temperatures_c),
            "protections": None if self.protections is None else list(self.protections),
            "alarms": None if self.alarms is None else list(self.alarms),
        }


def sample_view(view: ModelView, at: float) -> list[Sample]:
    """One sample per pack of `view`; values only for packs that are online."""
    out: list[Sample] = []
    for snap in view.ordered():
        t = snap.telemetry
        if snap.availability is not Availability.ONLINE or t is None:
            out.append(
                Sample(
                    at,
                    snap.bus,
                    snap.address,
                    snap.availability.value,
                    None,
                    dict.fromkeys(VALUE_FIELDS),
                    None,
                    None,
                    None,
                    None,
                )
            )
            continue
        mos = t.temperature(TempRole.MOS)
        values: dict[str, float | None] = {
            "voltage_v": t.voltage_v,
            "current_a": t.current_a,
            "power_w": t.power_w,
            "soc_pct": t.soc_pct,
            "soh_pct": t.soh_pct,
            "remaining_capacity_ah": t.remaining_capacity_ah,
            "cell_max_v": t.cell_max_v,
            "cell_min_v": t.cell_min_v,
            "cell_diff_v": t.cell_diff_v,
            "temp_max_c": t.temp_max_c,
            "temp_min_c": t.temp_min_c,
            "mos_temp_c": mos[0].value_c if mos else None,
        }
        out.append(
            Sample(
                at,
                snap.bus,
                snap.address,
                snap.availability.value,
                t.measured_at,
                values,
                t.cell_voltages_v,
                tuple(x.value_c for x in t.temperatures),
                tuple(sorted(t.protections)),
                tuple(sorted(t.alarms)),
            )
        )
    return out


class RecordingDB(SqliteFile):
    """The recording SQLite file (thread-safe, synchronous; callers on the loop use a thread)."""

    SCHEMA = _SCHEMA

    def insert(self, samples: Iterable[Sample]) -> int:
        rows = [s.row() for s in samples]
        marks = ",".join("?" * len(_COLUMNS))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(f"INSERT INTO sample ({','.join(_COLUMNS)}) VALUES ({marks})", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        packs: Sequence[tuple[str, int]] | None = None,
        limit: int | None = None,
    ) -> list[Sample]:
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        if packs:
            where.append("(" + " OR ".join("(bus = ? AND address = ?)" for _ in packs) + ")")
            for b, a in packs:
                args += [b, a]
        sql = f"SELECT {','.join(_COLUMNS)} FROM sample"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at, bus, address"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(0, limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_sample_of(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM sample").fetchone()
        return int(n)

    def used_bytes(self) -> int:
        with self._lock:
            (pages,) = self._db.execute("PRAGMA page_count").fetchone()
            (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
            (size,) = self._db.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * size)

    def enforce_retention(self, *, now: float, max_age_s: float, max_bytes: int) -> int:
        """Delete samples older than `max_age_s`, then the oldest while above `max_bytes`."""
        deleted = 0
        with self._lock:
            deleted += self._db.execute("DELETE FROM sample WHERE at < ?", (now - max_age_s,)).rowcount
        for _ in range(20):  # bounded: each pass deletes a share of the rows
            used = self.used_bytes()
            if used <= max_bytes:
                break
            with self._lock:
                (rows,) = self._db.execute("SELECT COUNT(*) FROM sample").fetchone()
                if not rows:
                    break
                share = max(1, int(rows * min(1.0, (used - 0.9 * max_bytes) / used)))
                deleted += self._db.execute(
                    "DELETE FROM sample WHERE id IN (SELECT id FROM sample ORDER BY id LIMIT ?)", (share,)
                ).rowcount
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return deleted


def _sample_of(r: Sequence[Any]) -> Sample:
    def load(v: str | None) -> tuple[Any, ...] | None:
        return None if v is None else tuple(json.loads(v))

    n = len(VALUE_FIELDS)
    return Sample(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        dict(zip(VALUE_FIELDS, r[5 : 5 + n], strict=True)),
        load(r[5 + n]),
        load(r[6 + n]),
        load(r[7 + n]),
        load(r[8 + n]),
    )


def samples_table(samples: Sequence[Sample]) -> tuple[list[str], list[list[Any]]]:
    """Long-format export: one row per pack and sample; empty cells where nothing was measured."""
    cells = max((len(s.cells_v or ()) for s in samples), default=0)
    temps = max((len(s.temperatures_c or ()) for s in samples), default=0)
    header = ["time_utc", "at", "pack", "availability", "measured_at", *VALUE_FIELDS]
    header += [f"CELL{i + 1:02d}_V" for i in range(cells)] + [f"T{i + 1:02d}_C" for i in range(temps)]
    header += ["protections", "alarms"]
    rows: list[list[Any]] = []
    for s in samples:
        c = list(s.cells_v or ())
        t = list(s.temperatures_c or ())
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.at)),
                round(s.at, 3),  # milliseconds: a spreadsheet keeps 15 significant digits
                f"{s.bus}/{s.address}",
                s.availability,
                None if s.measured_at is None else round(s.measured_at, 3),
                *(s.values.get(f) for f in VALUE_FIELDS),
                *(c + [None] * (cells - len(c))),
                *(t + [None] * (temps - len(t))),
                None if s.protections is None else " ".join(s.protections),
                None if s.alarms is None else " ".join(s.alarms),
            ]
        )
    return header, rows


def compare(samples: Sequence[Sample], value: str) -> dict[str, Any]:
    """The Multi Packs view over time: one row per sample time, one column per pack (None = no data)."""
    if value not in VALUE_FIELDS:
        raise ValueError(f"value must be one of {', '.join(VALUE_FIELDS)}, got {value!r}")
    packs = sorted({(s.bus, s.address) for s in samples})
    names = [f"{b}/{a}" for b, a in packs]
    by_at: dict[float, dict[str, float | None]] = {}
    for s in samples:
        by_at.setdefault(s.at, {})[f"{s.bus}/{s.address}"] = s.values.get(value)
    rows = [{"at": at, "values": [vals.get(n) for n in names]} for at, vals in sorted(by_at.items())]
    return {"value": value, "packs": names, "rows": rows}


@dataclass(slots=True)
class RecorderStats:
    samples: int = 0  # ticks recorded
    rows: int = 0
    skipped_ticks: int = 0  # ticks lost because a write overran the interval
    sample_cost_s_total: float = 0.0  # event-loop time spent building samples
    sample_cost_s_max: float = 0.0
    write_cost_s_total: float = 0.0  # worker-thread time spent writing
    write_cost_s_max: float = 0.0
    retention_deleted: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "rows": self.rows,
            "skipped_ticks": self.skipped_ticks,
            "sample_cost_s_avg": self.sample_cost_s_total / n,
            "sample_cost_s_max": self.sample_cost_s_max,
            "write_cost_s_avg": self.write_cost_s_total / n,
            "write_cost_s_max": self.write_cost_s_max,
            "retention_deleted": self.retention_deleted,
            "last_error": self.last_error,
        }


MIN_INTERVAL_S = 0.1  # the bounds of `[recording] interval_s`
MAX_INTERVAL_S = 3600.0


class Recorder:
    """The recording service (`name = "recording"`)."""

    name = "recording"

    def __init__(
        self,
        view: Callable[[], ModelView],
        db: RecordingDB,
        *,
        interval_s: float = 1.0,
        max_age_s: float = 30 * 86400.0,
        max_bytes: int = 500 * 1024 * 1024,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._view = view
        self.db = db
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._wall = wall
        self._clock = clock
        self.stats = RecorderStats()
        self._interval_changed = asyncio.Event()

    @classmethod
    def from_context(cls, ctx: Any) -> Recorder:
        from gateway.app.config import state_path

        rc = ctx.config.recording
        rec = cls(
            lambda: ctx.store.view,
            RecordingDB(state_path(ctx.config, ctx.config_path, rc.db)),
            interval_s=rc.interval_s,
            max_age_s=rc.max_age_days * 86400.0,
            max_bytes=int(rc.max_size_mb * 1024 * 1024),
        )
        ctx.extras["recorder"] = rec
        return rec

    def set_interval(self, interval_s: float) -> float:
        """Change the sampling interval at run time (takes effect at once); returns the old one.
        Not persisted: `[recording] interval_s` in the configuration file is the value after a restart."""
        if not (MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S):
            raise ValueError(
                f"interval_s must be between {MIN_INTERVAL_S:g} and {MAX_INTERVAL_S:g} s, got {interval_s:g}"
            )
        before, self.interval_s = self.interval_s, float(interval_s)
        self._interval_changed.set()
        return before

    async def tick(self) -> int:
        """Record one sample of every pack now; returns the rows written."""
        t0 = self._clock()
        samples = sample_view(self._view(), self._wall())
        cost = self._clock() - t0
        self.stats.sample_cost_s_total += cost
        self.stats.sample_cost_s_max = max(self.stats.sample_cost_s_max, cost)
        t1 = self._clock()
        n = await asyncio.to_thread(self.db.insert, samples)
        wcost = self._clock() - t1
        self.stats.write_cost_s_total += wcost
        self.stats.write_cost_s_max = max(self.stats.write_cost_s_max, wcost)
        self.stats.samples += 1
        self.stats.rows += n
        return n

    async def retention(self) -> int:
        deleted = await asyncio.to_thread(
            self.db.enforce_retention, now=self._wall(), max_age_s=self.max_age_s, max_bytes=self.max_bytes
        )
        self.stats.retention_deleted += deleted
        return deleted

    async def run(self, ready: ReadyCallback) -> None:
        loop = asyncio.get_running_loop()
        ready()
        next_at = loop.time()
        retention_at = loop.time()
        while True:
            try:
                await self.tick()
                if loop.time() >= retention_at:
                    await self.retention()
                    retention_at = loop.time() + RETENTION_EVERY_S
            except (sqlite3.Error, OSError) as err:
                self.stats.last_error = str(err)
                log.warning("recording: %s", err)
            next_at += self.interval_s
            now = loop.time()
            if now > next_at:  # the write overran: skip the lost ticks instead of bunching them
                missed = int((now - next_at) // self.interval_s) + 1
                self.stats.skipped_ticks += missed
                next_at += missed * self.interval_s
            self._interval_changed.clear()
            try:  # a new interval wakes the loop: the next sample is one new interval from now
                await asyncio.wait_for(self._interval_changed.wait(), max(0.0, next_at - now))
                next_at = loop.time() + self.interval_s
                await asyncio.sleep(self.interval_s)
            except TimeoutError:
                pass
