"""Plumbing shared by the records operations (history downloads, firmware upgrades): audit entries
and the tasks a service spawns (pack names and lookup come from `gateway.ops.admin.packs`).

It never touches a bus itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import PackKey
from gateway.ops.admin.packs import PackLookup, label
from gateway.ops.history.errors import Conflict
from gateway.ops.security.audit import Actor, AuditLog, AuditUnavailable


class RecordsService(PackLookup):
    """Base of `HistoryService` and `FirmwareService`; their `__init__` sets these attributes."""

    ctx: AppContext
    audit_log: AuditLog | None
    _tasks: set[asyncio.Task[Any]]
    _tg: asyncio.TaskGroup | None

    async def _serve(self, ready: ReadyCallback) -> None:
        """Hold the TaskGroup `_spawn` uses until cancelled (the body of the gateway service's run)."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                ready()
                await asyncio.Event().wait()
        finally:
            self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if self._tg is not None:
            task = self._tg.create_task(coro)
        else:  # used without the supervisor (tests, tools): keep a reference until it ends
            task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def audit(
        self,
        who: Actor,
        action: str,
        packs: Sequence[PackKey],
        request: Any,
        *,
        outcome: str,
        before: Any = None,
        after: Any = None,
        detail: str = "",
        intents: Sequence[int] = (),
    ) -> int | None:
        """Append an entry; its id (None without an audit log, or when it could not be written)."""
        if self.audit_log is None:
            return None
        return await self.audit_log.record(
            who,
            action,
            [label(k) for k in packs],
            request,
            outcome=outcome,
            before=before,
            after=after,
            detail=detail,
            intents=intents,
            log=logging.getLogger(type(self).__module__),
        )

    async def intend(
        self, who: Actor, action: str, key: PackKey, request: Any, before: Any = None
    ) -> list[int]:
        """The intent of a write to `key`, in the audit log before the first byte goes to the pack
        (the ids the outcome entry closes); Conflict (nothing sent) when it cannot be written."""
        if self.audit_log is None:
            return []
        intent = self.audit_log.intent(who, action, request)
        try:
            await intent.before_first_byte([label(key)], before=before)
        except AuditUnavailable as err:
            raise Conflict(f"{err}; nothing was sent to pack {label(key)}") from None
        return intent.ids
