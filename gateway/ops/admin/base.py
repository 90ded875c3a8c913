"""The one step every admin operation goes through (HTTP API, CLI through the API, MQTT commands).

Every operation takes a `Caller` (who, from where) and:

1. is authorized by role here (the HTTP layer checks the endpoint's role too, this is the rule);
2. validates everything it can (parameter table ranges, choices, inferred opt-in, factory
   confirmation, pack state such as "charging" for forced sleep) BEFORE a byte reaches a bus;
3. runs through the bus owner's queue with admin priority (`AdminBus`), one pack at a time and
   one admin action per bus at a time;
4. reads back what it wrote and reports, per pack and item: verified / written (acknowledged, no
   read-back possible) / mismatch / failed;
5. is appended to the audit log with the values before and after and the outcome (refusals too).

Read-backs are published into the model at once (parameters, clock), so the next snapshot shows
them. This module never opens a transport and never bypasses the bus owner.

The operations live in one module per concern (`parameters`, `parameter_files`, `configuration`,
`controls`, `protocols`, `clock`); `gateway.ops.admin.service.AdminService` composes them.
The single-pack writes share one path; what differs per action is data: `_on_pack` (role check,
pack lookup, refusals audited; one `Action` row each) -> a `WriteStep` run by `apply_step` under
the bus's admin lock (write, read back, verify) -> `_finish_item` / `_finish_pack` (summarize,
audit, answer). Batch parameter writes go through `write_plan`, batch clock writes through
`sync_clocks` (which uses the same `WriteStep` per pack).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.app.context import AppContext
from gateway.core.model import ClockReading, PackKey, ParameterSet, Telemetry
from gateway.ops.admin.packs import PackLookup, label
from gateway.ops.admin.reports import (
    ItemReport,
    Outcome,
    PackReport,
)
from gateway.ops.security.audit import AuditEntry, AuditLog, AuditUnavailable, Intent
from gateway.ops.security.auth import Principal, Role
from gateway.ops.security.errors import ApiError, Conflict, Forbidden, Invalid
from gateway.south.drivers.base import (
    BusError,
    Driver,
    NotSent,
    Priority,
)
from mappings.bms.params import ParameterTable
from protocol.bms.base import Frame

log = logging.getLogger(__name__)

R = TypeVar("R")

# ---- errors (the HTTP layer maps `status` to the response code) ----------------------------------


# ---- who asks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    client: str = "local"

    @property
    def role(self) -> Role:
        return self.principal.role


SYSTEM = Caller(Principal("gateway", Role.ADMIN, "automatic clock sync"), "gateway")


# ---- the bus with admin priority -----------------------------------------------------------------


class AdminBus:
    """A `BusClient` that raises every request of an admin action to admin priority and counts them.

    With an `intent` (a write), the first request waits until the intent entry is in the audit log
    (`gateway.ops.security.audit`); if it cannot be written the request is not sent (`NotSent`)."""

    def __init__(self, owner: Any, intent: Intent | None = None, pack: str = "") -> None:
        self.owner = owner
        self.requests = 0
        self.intent = intent
        self.pack = pack
        self._intended = intent is None

    async def transact(
        self,
        request: bytes,
        match: Callable[[Frame], bool],
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        expect_response: bool = True,
        address: int | None = None,
    ) -> Frame | None:
        if not self._intended and self.intent is not None:
            try:
                await self.intent.before_first_byte([self.pack])
            except AuditUnavailable as err:
                raise NotSent(f"{err}; nothing was sent") from None
            self._intended = True
        self.requests += 1
        frame: Frame | None = await self.owner.transact(
            request,
            match,
            priority=min(priority, Priority.ADMIN),
            timeout_s=timeout_s,
            expect_response=expect_response,
            address=address,
        )
        return frame


def closed(rep: PackReport, bus: AdminBus | None) -> PackReport:
    """`rep` with the requests its action sent on `bus` (None: left uncounted) and its outcome."""
    if bus is not None:
        rep.bus_requests = bus.requests
    rep.summarize()
    return rep


# ---- one item written and checked ----------------------------------------------------------------

_Check = Callable[[AdminBus], Awaitable[tuple[Any, bool | None]]]


@dataclass(frozen=True, slots=True)
class WriteStep:
    """What differs between the single-item admin writes; `apply_step` is the shared mechanism.

    `check` reads back after an acknowledged write and answers (value shown as "after", verified?);
    verified None means nothing to compare (the item stays "written"). Without `check` the item is
    "written" with the detail `acknowledged`. A write error of a type in `errors` makes the item
    "failed" with the detail `failure(err)`, one of a type in `conflicts` is answered as a `Conflict`
    (409, nothing reported); any other exception propagates."""

    write: Callable[[AdminBus], Awaitable[object]]
    check: _Check | None = None
    errors: tuple[type[Exception], ...] = (BusError,)
    failure: Callable[[Exception], str] = str
    acknowledged: str = ""
    conflicts: tuple[type[Exception], ...] = ()


async def apply_step(step: WriteStep, item: ItemReport, bus: AdminBus) -> None:
    """Write, read back and verify one item (the caller holds the bus's admin lock)."""
    try:
        await step.write(bus)
        if step.check is None:
            item.outcome, item.detail = Outcome.WRITTEN, step.acknowledged
            return
        try:
            after, ok = await step.check(bus)
        except BusError as err:
            item.outcome, item.detail = Outcome.WRITTEN, f"read-back failed: {err}"
            return
        item.after = after
        if ok is None:
            item.outcome, item.detail = Outcome.WRITTEN, step.acknowledged
        else:
            item.outcome = Outcome.VERIFIED if ok else Outcome.MISMATCH
    except step.errors as err:
        if isinstance(err, step.conflicts):
            raise Conflict(str(err)) from None
        item.detail = step.failure(err)


@dataclass(frozen=True, slots=True)
class Action:
    name: str  # in the audit log
    role: Role  # needed
    what: str  # how a refusal names it ("<what> needs the admin role or higher")


# The single-pack admin actions (see `AdminService._on_pack`).


@dataclass(frozen=True, slots=True)
class PackAction:
    """One audited admin action on one pack: who asked, the action's name, the request as audited."""

    caller: Caller
    name: str
    request: dict[str, Any]
    key: PackKey
    intent: Intent  # its audit intent entries (written before the first byte to the pack)


# ---- the shared state and step ------------------------------------------------------------------


class AdminBase(PackLookup):
    """The state and the one step every admin operation shares (see the module docstring); the
    operations are in the concern modules (parameters, configuration, controls, ...)."""

    def __init__(
        self, ctx: AppContext, audit: AuditLog | Path, *, wall: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self._audit: AuditLog | None = audit if isinstance(audit, AuditLog) else None
        self._audit_path = audit.path if isinstance(audit, AuditLog) else audit
        self._wall = wall
        self._locks: dict[str, asyncio.Lock] = {}
        self._anti_theft: dict[PackKey, tuple[int, float]] = {}  # mask written by us, when
        self._nominal: dict[PackKey, float] = {}  # nominal capacity written by us (no read command)
        self._auto_sync_at: dict[PackKey, float] = {}

    @property
    def audit_log(self) -> AuditLog:
        """The audit database, opened on first use (a gateway nobody administers creates no file)."""
        if self._audit is None:
            self._audit = AuditLog(self._audit_path)
        return self._audit

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    # ---- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def require(caller: Caller, role: Role, what: str) -> None:
        if caller.role < role:
            raise Forbidden(
                f"{what} needs the {role.label} role or higher; token {caller.principal.token_id} has "
                f"{caller.role.label}"
            )

    def resolve(self, packs: Sequence[str] | None) -> list[PackKey]:
        """Pack names "BUS/ADDRESS" (None or empty: every configured pack)."""
        if not packs:
            return list(self.ctx.pack_keys)
        keys: list[PackKey] = []
        for p in packs:
            bus, sep, addr = str(p).rpartition("/")
            if not sep or not bus or not addr.isdigit():
                raise Invalid(f"pack {p!r}: expected BUS/ADDRESS, e.g. sim/1")
            key = self.pack(bus, int(addr))
            if key not in keys:
                keys.append(key)
        return keys

    def table(self, key: PackKey) -> ParameterTable:
        driver = self.driver(key)
        table = getattr(driver, "table", None)
        if not isinstance(table, ParameterTable):
            raise Conflict(f"{driver.family}: no parameter table")
        return table

    @staticmethod
    def unavailable(driver: Driver, what: str) -> Conflict:
        """The refusal for a driver that lacks the capability an operation needs."""
        return Conflict(f"{driver.family}: {what} is not available for this BMS family")

    def lock(self, bus: str) -> asyncio.Lock:
        lk = self._locks.get(bus)
        if lk is None:
            lk = self._locks[bus] = asyncio.Lock()
        return lk

    def bus(self, key: PackKey, intent: Intent | None = None) -> AdminBus:
        """The pack's bus for one admin action; with `intent` (a write) the intent is audited
        before the first request goes out."""
        return AdminBus(self.ctx.bus_for(key), intent, label(key))

    def snapshot_parameters(self, key: PackKey) -> dict[str, float]:
        snap = self.ctx.store.view.pack(*key)
        if snap is None or snap.parameters is None:
            return {}
        return {n: r.value for n, r in snap.parameters.values.items()}

    def telemetry(self, key: PackKey) -> Telemetry | None:
        snap = self.ctx.store.view.pack(*key)
        return None if snap is None else snap.telemetry

    def _publish(
        self,
        key: PackKey,
        *,
        parameters: ParameterSet | None = None,
        clock: ClockReading | None = None,
        telemetry: Telemetry | None = None,
        serial: str | None = None,
    ) -> None:
        """Put a read-back into the poller's state and publish the pack's snapshot at once (the API,
        metrics, MQTT, Modbus and the history keys follow the model, not the next scheduled read)."""
        poller = self.ctx.pollers.get(key[0])
        state = None if poller is None else poller.packs.get(key[1])
        if poller is None or state is None:
            return
        if serial is not None:
            state.identity = replace(state.identity, serial=serial)
        if parameters is not None:
            state.parameters = parameters
        if telemetry is not None:
            state.telemetry = telemetry
            state.last_success_at = max(state.last_success_at or 0.0, telemetry.measured_at)
        if clock is not None:
            state.clock = clock
        self.ctx.store.publish(poller.snapshot(key[1]), now=self._wall())

    def inferred_allowed(self, requested: bool) -> bool:
        return bool(requested and self.ctx.config.admin.allow_inferred_writes)

    def _inferred_refusal(self, what: str) -> Invalid:
        """Why an inferred write is refused: both opt-ins while the configuration's is off, else only
        the request's (the sentence names what is on, so it stays true either way)."""
        cfg = self.ctx.config.admin.allow_inferred_writes
        request = '"allow_inferred": true in the request'
        if cfg:
            need = [request]
            why = f"it needs {request} ([admin] allow_inferred_writes is on in the configuration)"
        else:
            need = ["[admin] allow_inferred_writes = true in the configuration", request]
            why = f"it needs both {need[0]} and {request}"
        return Invalid(
            f"{what} uses an inferred (not publicly documented) encoding; {why}",
            [{"what": what, "needs": need}],
        )

    async def record(
        self,
        caller: Caller,
        action: str,
        packs: Sequence[PackKey | str],
        request: Any,
        *,
        outcome: str,
        before: Any = None,
        after: Any = None,
        detail: str = "",
        intents: Sequence[int] = (),
    ) -> None:
        names = [k if isinstance(k, str) else label(k) for k in packs]
        await self.audit_log.record(
            caller,
            action,
            names,
            request,
            outcome=outcome,
            before=before,
            after=after,
            detail=detail,
            intents=intents,
            log=log,
        )

    async def audited(
        self,
        caller: Caller,
        action: str,
        packs: Sequence[PackKey],
        request: Any,
        body: Callable[[], Awaitable[R]],
    ) -> R:
        """Run `body`; a refusal (403/409/422) is audited here, the body audits its own result."""
        try:
            return await body()
        except ApiError as err:
            if err.status in (403, 409, 422):
                named: list[PackKey | str] = list(packs)
                if not named and isinstance(request, dict):
                    named = list(request.get("packs") or ([request["pack"]] if "pack" in request else []))
                await self.record(caller, action, named, request, outcome="refused", detail=err.message)
            raise

    async def _on_pack(
        self,
        spec: Action,
        caller: Caller,
        bus: str,
        address: int,
        body: Callable[[PackAction], Awaitable[R]],
        /,
        **fields: Any,
    ) -> R:
        """Run `body` as the audited action `spec` on pack BUS/ADDRESS (the request: the pack, then
        `fields`) once `caller` holds the spec's role and the pack is known; refusals are audited."""
        request = {"pack": f"{bus}/{address}", **fields}

        async def run() -> R:
            self.require(caller, spec.role, spec.what)
            key = self.pack(bus, address)
            return await body(
                PackAction(caller, spec.name, request, key, self.audit_log.intent(caller, spec.name, request))
            )

        return await self.audited(caller, spec.name, [], request, run)

    async def _record_pack(
        self, act: PackAction, *, outcome: str, before: Any = None, after: Any = None, detail: str = ""
    ) -> None:
        await self.record(
            act.caller,
            act.name,
            [act.key],
            act.request,
            outcome=outcome,
            before=before,
            after=after,
            detail=detail,
            intents=act.intent.ids,
        )

    async def _finish_pack(
        self, act: PackAction, rep: PackReport, bus: AdminBus | None, *, before: Any, after: Any, detail: str
    ) -> dict[str, Any]:
        """Close a single-pack report (see `closed`), audit it, answer it."""
        closed(rep, bus)
        await self._record_pack(act, outcome=rep.outcome, before=before, after=after, detail=detail)
        return asdict(rep)

    async def _finish_item(
        self,
        act: PackAction,
        item: ItemReport,
        bus: AdminBus,
        *,
        audit_after: Callable[[ItemReport], Any] | None = None,
    ) -> dict[str, Any]:
        """`_finish_pack` for a report of one item, audited with that item's before, after (or
        `audit_after(item)`) and detail."""
        rep = PackReport(label(act.key), items=[item])
        after = item.after if audit_after is None else audit_after(item)
        return await self._finish_pack(act, rep, bus, before=item.before, after=after, detail=item.detail)

    async def _single_pack_write(
        self,
        act: PackAction,
        item: ItemReport,
        step: WriteStep,
        *,
        audit_after: Callable[[ItemReport], Any] | None = None,
    ) -> dict[str, Any]:
        """Run `step` for `item` under the bus's admin lock, then report and audit it."""
        bus = self.bus(act.key, act.intent)
        async with self.lock(act.key[0]):
            await apply_step(step, item, bus)
        return await self._finish_item(act, item, bus, audit_after=audit_after)

    async def _read_realtime(self, driver: Driver, key: PackKey, bus: AdminBus) -> Telemetry:
        """A read-back of the pack's telemetry, published at once."""
        t = await driver.read_realtime(bus, key[1], self._wall())
        self._publish(key, telemetry=t)
        return t

    # ---- audit -----------------------------------------------------------------------------------

    async def audit(
        self,
        caller: Caller,
        *,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        token_id: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        self.require(caller, Role.ADMIN, "reading the audit log")
        entries: list[AuditEntry] = await asyncio.to_thread(
            self.audit_log.query, since=since, until=until, action=action, token_id=token_id, limit=limit
        )
        return [asdict(e) for e in entries]
