"""The append-only audit log of every admin action (SQLite, WAL).

Each entry: time, token id and role, client address, the packs concerned, what was asked, the
values before and after, and the outcome. Append-only is enforced by the database itself
(triggers refuse UPDATE and DELETE), not only by this module's API.

Writes are synchronous and short (one INSERT); callers on the event loop run them in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    detail TEXT NOT NULL DEFAULT ''
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
    outcome: str  # ok | refused | failed | partial | dry_run
    detail: str


class Actor(Protocol):
    """Who asked (the admin channel's `Caller`, the records operations' `Who`)."""

    @property
    def principal(self) -> Principal: ...

    @property
    def client(self) -> str: ...


class AuditLog(SqliteFile):
    SCHEMA = _SCHEMA

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
        log: logging.Logger,
    ) -> None:
        """`append` from the event loop (in a thread); a failure is logged to `log`, never raised:
        the audit must never turn an action's result into a crash."""
        try:
            await asyncio.to_thread(
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
            )
        except Exception:
            log.exception("audit append failed for %s", action)

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
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit (at, token_id, role, client, action, packs, request, before, after,"
                " outcome, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

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
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
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
                r[10],
                r[11],
            )
            for r in rows
        ]
