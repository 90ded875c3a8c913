"""The history database: records downloaded from the packs, and the state of every download job.

SQLite in WAL mode, one connection guarded by a lock (callers on the event loop use
`asyncio.to_thread`). A record is keyed by (pack serial, SHA-256 of its bytes as read): downloading
the same records twice stores them once (`INSERT OR IGNORE`), and each batch of records is committed
together with the job's position, so a process killed mid-download loses nothing that was stored
and resumes from the stored position.

This module never talks to a bus and never blocks on anything but its own database file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.ops.security.sqlitefile import SqliteFile
from gateway.south.drivers.base import HistoryRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pack_record (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pack_serial TEXT NOT NULL,
    record_key TEXT NOT NULL,
    bus TEXT NOT NULL,
    address INTEGER NOT NULL,
    family TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    event TEXT NOT NULL,
    event_code INTEGER NOT NULL,
    cells_v TEXT NOT NULL,
    temperatures_c TEXT NOT NULL,
    current_a REAL NOT NULL,
    voltage_v REAL NOT NULL,
    soc_pct REAL,
    raw BLOB NOT NULL,
    downloaded_at REAL NOT NULL,
    UNIQUE (pack_serial, record_key)
);
CREATE INDEX IF NOT EXISTS pack_record_time ON pack_record(pack_serial, recorded_at);
CREATE INDEX IF NOT EXISTS pack_record_event ON pack_record(event);
CREATE TABLE IF NOT EXISTS download_job (
    pack TEXT PRIMARY KEY,
    pack_serial TEXT NOT NULL,
    family TEXT NOT NULL,
    state TEXT NOT NULL,
    next_index INTEGER NOT NULL,
    count INTEGER,
    stored INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

# Export columns, in order (CSV header and XLSX first row); cells and temperatures follow as
# CELL01.. and T01.. columns sized to the widest record in the export.
RECORD_COLUMNS = (
    "id",
    "pack_serial",
    "bus",
    "address",
    "time_utc",
    "recorded_at",
    "event",
    "event_code",
    "voltage_v",
    "current_a",
    "soc_pct",
)


def record_key(raw: bytes) -> str:
    """The identity of a record within its pack: the hash of the bytes the pack sent (which hold its
    time, event code and values). Two byte-identical records of one pack count as one."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    id: int
    pack_serial: str
    bus: str
    address: int
    family: str
    recorded_at: float
    event: str
    event_code: int
    cell_voltages_v: tuple[float, ...]
    temperatures_c: tuple[float, ...]
    current_a: float
    voltage_v: float
    soc_pct: float | None
    raw: bytes
    downloaded_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pack_serial": self.pack_serial,
            "bus": self.bus,
            "address": self.address,
            "family": self.family,
            "recorded_at": self.recorded_at,
            "event": self.event,
            "event_code": self.event_code,
            "cell_voltages_v": list(self.cell_voltages_v),
            "temperatures_c": list(self.temperatures_c),
            "current_a": self.current_a,
            "voltage_v": self.voltage_v,
            "soc_pct": self.soc_pct,
            "raw": self.raw.hex(),
            "downloaded_at": self.downloaded_at,
        }


@dataclass(frozen=True, slots=True)
class JobState:
    """A download job as stored: where it stands and how it ended (or that it did not)."""

    pack: str  # "BUS/ADDRESS"
    pack_serial: str
    family: str
    state: str  # running | stopped | failed | done
    next_index: int  # the first record index not yet stored (resume point)
    count: int | None  # records the pack reported (None: the family reports no count)
    stored: int  # new records stored by this job
    duplicates: int  # records read that were already stored
    started_at: float
    updated_at: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "pack_serial": self.pack_serial,
            "family": self.family,
            "state": self.state,
            "next_index": self.next_index,
            "count": self.count,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class RecordQuery:
    pack_serial: str | None = None
    bus: str | None = None
    address: int | None = None
    since: float | None = None  # recorded_at >= since
    until: float | None = None  # recorded_at < until
    event: str | None = None  # exact event name, case-insensitive
    limit: int | None = None
    offset: int = 0


class HistoryDB(SqliteFile):
    """The SQLite file of downloaded records and download jobs (thread-safe, synchronous)."""

    SCHEMA = _SCHEMA

    # ---- records ---------------------------------------------------------------------------------

    def store_batch(
        self,
        *,
        pack: str,
        pack_serial: str,
        family: str,
        records: Sequence[HistoryRecord],
        next_index: int,
        count: int | None,
        state: str = "running",
        detail: str = "",
        now: float | None = None,
        count_duplicates: bool = True,
    ) -> tuple[int, int]:
        """Insert `records` and move the job of `pack` to `next_index`, in one transaction.

        Returns (new records stored, duplicates skipped); `count_duplicates=False` leaves the job's
        duplicate counter alone (a record read only to find where known records start)."""
        at = time.time() if now is None else now
        bus, _, address = pack.rpartition("/")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = 0
                for r in records:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO pack_record (pack_serial, record_key, bus, address, family,"
                        " recorded_at, event, event_code, cells_v, temperatures_c, current_a, voltage_v,"
                        " soc_pct, raw, downloaded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            pack_serial,
                            record_key(r.raw),
                            bus,
                            int(address),
                            family,
                            r.recorded_at,
                            r.event,
                            r.event_code,
                            json.dumps(list(r.cell_voltages_v)),
                            json.dumps(list(r.temperatures_c)),
                            r.current_a,
                            r.voltage_v,
                            r.soc_pct,
                            r.raw,
                            at,
                        ),
                    )
                    new += cur.rowcount
                dup = len(records) - new
                self._db.execute(
                    "UPDATE download_job SET next_index=?, count=?, stored=stored+?, duplicates=duplicates+?,"
                    " state=?, updated_at=?, detail=? WHERE pack=?",
                    (next_index, count, new, dup if count_duplicates else 0, state, at, detail, pack),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new, dup

    def query(self, q: RecordQuery) -> list[StoredRecord]:
        sql, args = self._where(q)
        sql = (
            "SELECT id, pack_serial, bus, address, family, recorded_at, event, event_code, cells_v,"
            " temperatures_c, current_a, voltage_v, soc_pct, raw, downloaded_at FROM pack_record" + sql
        )
        sql += " ORDER BY pack_serial, recorded_at, id"
        if q.limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [max(0, q.limit), max(0, q.offset)]
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            StoredRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                tuple(json.loads(r[8])),
                tuple(json.loads(r[9])),
                r[10],
                r[11],
                r[12],
                bytes(r[13]),
                r[14],
            )
            for r in rows
        ]

    def count(self, q: RecordQuery | None = None) -> int:
        sql, args = self._where(q or RecordQuery())
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM pack_record" + sql, args).fetchone()
        return int(n)

    def events(self) -> list[tuple[str, int]]:
        """Every event name stored, with its number of records."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event, COUNT(*) FROM pack_record GROUP BY event ORDER BY event"
            ).fetchall()
        return [(str(e), int(n)) for e, n in rows]

    @staticmethod
    def _where(q: RecordQuery) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("pack_serial = ?", q.pack_serial),
            ("bus = ?", q.bus),
            ("address = ?", q.address),
            ("recorded_at >= ?", q.since),
            ("recorded_at < ?", q.until),
            ("lower(event) = lower(?)", q.event),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        return (" WHERE " + " AND ".join(where) if where else ""), args

    # ---- jobs ------------------------------------------------------------------------------------

    def job(self, pack: str) -> JobState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT pack, pack_serial, family, state, next_index, count, stored, duplicates, started_at,"
                " updated_at, detail FROM download_job WHERE pack=?",
                (pack,),
            ).fetchone()
        return None if row is None else JobState(*row)

    def jobs(self) -> list[JobState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pack, pack_serial, family, state, next_index, count, stored, duplicates, started_at,"
                " updated_at, detail FROM download_job ORDER BY pack"
            ).fetchall()
        return [JobState(*r) for r in rows]

    def start_job(
        self, *, pack: str, pack_serial: str, family: str, next_index: int, count: int | None, now: float
    ) -> None:
        """Create (or restart) the job row of `pack`; a resumed job keeps its counters."""
        with self._lock:
            self._db.execute(
                "INSERT INTO download_job (pack, pack_serial, family, state, next_index, count, stored,"
                " duplicates, started_at, updated_at, detail) VALUES (?,?,?,?,?,?,0,0,?,?,'')"
                " ON CONFLICT(pack) DO UPDATE SET pack_serial=excluded.pack_serial, family=excluded.family,"
                " state='running', next_index=excluded.next_index, count=excluded.count,"
                " updated_at=excluded.updated_at, detail=''",
                (pack, pack_serial, family, "running", next_index, count, now, now),
            )

    def reset_job(self, pack: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM download_job WHERE pack=?", (pack,))

    def set_job_state(self, pack: str, state: str, detail: str = "", now: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE download_job SET state=?, detail=?, updated_at=? WHERE pack=?",
                (state, detail, time.time() if now is None else now, pack),
            )

    def mark_interrupted(self) -> int:
        """At start-up: jobs left `running` by a killed process become `stopped` (resumable)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE download_job SET state='stopped', detail='interrupted (process ended)'"
                " WHERE state='running'"
            )
        return cur.rowcount


def record_rows(records: Iterable[StoredRecord]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows for CSV/XLSX exports: the fixed columns, then CELL01.., then T01.."""
    items = list(records)
    cells = max((len(r.cell_voltages_v) for r in items), default=0)
    temps = max((len(r.temperatures_c) for r in items), default=0)
    header = (
        list(RECORD_COLUMNS)
        + [f"CELL{i + 1:02d}_V" for i in range(cells)]
        + [f"T{i + 1:02d}_C" for i in range(temps)]
    )
    rows: list[list[Any]] = []
    for r in items:
        row: list[Any] = [
            r.id,
            r.pack_serial,
            r.bus,
            r.address,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.recorded_at)),
            round(r.recorded_at, 3),  # a spreadsheet keeps 15 significant digits
            r.event,
            r.event_code,
            r.voltage_v,
            r.current_a,
            r.soc_pct,
        ]
        row += list(r.cell_voltages_v) + [None] * (cells - len(r.cell_voltages_v))
        row += list(r.temperatures_c) + [None] * (temps - len(r.temperatures_c))
        rows.append(row)
    return header, rows
