"""The append-only audit log of every admin action (SQLite, WAL).

Each entry: time, token id and role, client address, the packs concerned, what was asked, the
values before and after, and the outcome. Append-only is enforced by the database itself
(triggers refuse UPDATE and DELETE), not only by this module's API.

Writes to a pack are audited twice: the *intent* before the first byte goes to the pack
(`Intent.before_first_byte`, outcome "intent"), and the *outcome* after (`record(..., intents=)`,
which closes the intents it lists). An intent that no outcome closes is shown as "in_progress"
while the process that wrote it runs, and as "interrupted" after (the process was killed during the
write): every change that may have reached a pack is in the log. When the intent cannot be
written, nothing is sent (`AuditUnavailable`).

Writes are synchronous and short (one INSERT); callers on the event loop run them in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.ops.security.auth import Principal
from gateway.ops.security.sqlitefile import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    token_id TEXT NOT NULL,
    role TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    packs TEXT NOT NULL,
    request TEXT NOT NULL,
    before TEXT,
    after TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    closes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    token_id: str
    role: str
    client: str
    action: str
    packs: list[str]
    request: Any
    before: Any
    after: Any
    outcome: str  # ok | refused | failed | partial | dry_run | in_progress | interrupted | ...
    detail: str
    closes: list[int] = field(default_factory=list)  # the intent entries this outcome closes


INTENT = "intent"  # the stored outcome of an intent entry (shown as in_progress / interrupted)
STARTED = "started"  # a job's first entry (firmware), closed by the job's result entry
OPENING = frozenset({INTENT, STARTED})  # entries an outcome closes


class AuditUnavailable(Exception):
    """The intent of a write could not be recorded: the write must not start."""


@dataclass
class Intent:
    """An audited write in flight: one intent entry per pack, each written before the first byte
    goes to that pack; the outcome entry lists `ids` in `closes` (see the module docstring)."""

    audit: AuditLog
    who: Actor
    action: str
    request: Any
    ids: list[int] = field(default_factory=list)

    async def before_first_byte(self, packs: Sequence[str], before: Any = None) -> int:
        """Record the intent (durably, before anything is sent); AuditUnavailable when impossible."""
        try:
            entry_id = await asyncio.to_thread(
                self.audit.append,
                token_id=self.who.principal.token_id,
                role=self.who.principal.role.label,
                client=self.who.client,
                action=self.action,
                packs=packs,
                request=self.request,
                before=before,
                outcome=INTENT,
                detail="written before the first byte to the pack; the outcome entry closes it",
            )
        except Exception as err:
            raise AuditUnavailable(f"the audit log could not record the intent: {err}") from None
        self.ids.append(entry_id)
        return entry_id


class Actor(Protocol):
    """Who asked (the admin channel's `Caller`; any object with a `principal` and a `client`)."""

    @property
    def principal(self) -> Principal: ...

    @property
    def client(self) -> str: ...


class AuditLog(SqliteFile):
    SCHEMA = _SCHEMA

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._open: set[int] = set()  # intents written by this process and not closed yet
        with self._lock:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}
            if "closes" not in columns:  # a log written before intents existed
                self._db.execute("ALTER TABLE audit ADD COLUMN closes TEXT NOT NULL DEFAULT '[]'")

    async def record(
        self,
        who: Actor,
        action: str,
        packs: Sequence[str],
        request: Any,
        *,
        outcome: str,
        before: Any = None,
        after: Any = None,
        detail: str = "",
        intents: Sequence[int] = (),
        log: logging.Logger,
    ) -> int | None:
        """`append` from the event loop (in a thread); a failure is logged to `log`, never raised:
        the audit must never turn an action's result into a crash. `intents`: the intent entries
        this outcome closes."""
        try:
            return await asyncio.to_thread(
                self.append,
                token_id=who.principal.token_id,
                role=who.principal.role.label,
                client=who.client,
                action=action,
                packs=packs,
                request=request,
                before=before,
                after=after,
                outcome=outcome,
                detail=detail[:2000],
                closes=intents,
            )
        except Exception:
            log.exception("audit append failed for %s", action)
            return None

    def intent(self, who: Actor, action: str, request: Any) -> Intent:
        """A new write in flight (its intents are recorded by `Intent.before_first_byte`)."""
        return Intent(self, who, action, request)

    def append(
        self,
        *,
        token_id: str,
        role: str,
        client: str,
        action: str,
        packs: Sequence[str] = (),
        request: Any = None,
        before: Any = None,
        after: Any = None,
        outcome: str,
        detail: str = "",
        at: float | None = None,
        closes: Sequence[int] = (),
    ) -> int:
        row = (
            time.time() if at is None else at,
            token_id,
            role,
            client,
            action,
            json.dumps(list(packs)),
            json.dumps(request, default=str),
            None if before is None else json.dumps(before, default=str),
            None if after is None else json.dumps(after, default=str),
            outcome,
            detail,
            json.dumps([int(i) for i in closes]),
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit (at, token_id, role, client, action, packs, request, before, after,"
                " outcome, detail, closes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            entry_id = int(cur.lastrowid or 0)
            if outcome in OPENING:
                self._open.add(entry_id)
            self._open.difference_update(closes)
            return entry_id

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        token_id: str | None = None,
        limit: int = 500,
    ) -> list[AuditEntry]:
        where, args = [], []
        for clause, value in (
            ("at >= ?", since),
            ("at < ?", until),
            ("action = ?", action),
            ("token_id = ?", token_id),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        closed = (
            "EXISTS (SELECT 1 FROM audit o, json_each(o.closes) j"
            " WHERE o.id > audit.id AND j.value = audit.id)"
        )
        # an intent closed by its outcome is not shown: the outcome entry stands for both
        where.append(f"NOT (outcome = '{INTENT}' AND {closed})")
        sql = "SELECT id, at, token_id, role, client, action, packs, request, before, after, outcome, detail,"
        sql += f" closes, {closed} FROM audit WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(1, min(limit, 10000)))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()

        def load(v: str | None) -> Any:
            return None if v is None else json.loads(v)

        return [
            AuditEntry(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                json.loads(r[6]),
                load(r[7]),
                load(r[8]),
                load(r[9]),
                self._shown_outcome(r[0], r[10], bool(r[13])),
                r[11],
                json.loads(r[12]),
            )
            for r in rows
        ]

    def _shown_outcome(self, entry_id: int, outcome: str, closed: bool) -> str:
        """An open intent: "in_progress" while this process runs the write, else "interrupted"; a
        job's "started" entry that no result closed and no running process holds: "interrupted"."""
        if outcome not in OPENING or closed:
            return outcome
        if entry_id in self._open:
            return "in_progress" if outcome == INTENT else outcome
        return "interrupted"

    def interrupted(self) -> list[AuditEntry]:
        """Every write whose outcome was never recorded (the process ended during the write)."""
        return [e for e in self.query(limit=10000) if e.outcome == "interrupted"]
