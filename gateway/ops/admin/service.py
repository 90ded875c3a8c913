"""The admin operations shared by the HTTP API, the CLI (through the API) and later MQTT commands.

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

The single-pack writes share one path; what differs per action is data: `_on_pack` (role check,
pack lookup, refusals audited; one `_Action` row each) -> a `_WriteStep` run by `_apply_step` under
the bus's admin lock (write, read back, verify) -> `_finish_item` / `_finish_pack` (summarize,
audit, answer). Batch parameter writes go through `write_plan`, batch clock writes through
`sync_clocks` (which uses the same `_WriteStep` per pack).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.app.config import ConfigError, state_path
from gateway.app.context import AppContext
from gateway.core.model import ClockReading, PackKey, ParameterSet, Telemetry
from gateway.ops.admin import config_file, transfer
from gateway.ops.admin.packs import PackLookup, label
from gateway.ops.security.audit import AuditEntry, AuditLog
from gateway.ops.security.auth import Principal, Role
from gateway.ops.security.errors import ApiError, Conflict, Forbidden, Invalid, NotFound
from gateway.south.drivers.base import (
    BusError,
    Control,
    DeviceError,
    Driver,
    ParameterWrite,
    Priority,
    Unsupported,
)
from mappings.bms.params import Access, ParameterTable, ParameterValueError
from protocol.bms.base import Frame
from protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

R = TypeVar("R")

# What each family's driver can do through `Driver.control` (documented commands; see docs/admin.md).
CONTROLS_BY_FAMILY: dict[str, dict[str, str]] = {
    "tianpower": {
        "charge_mos": "CMD 0xD3",
        "discharge_mos": "CMD 0xD3",
        "heater": "CMD 0xE3",
        "fan": "CMD 0xE2",
        "buzzer": "CMD 0xD1 (alarm function switch)",
        "sound_light_alarm": "CMD 0x63 (alarm function switch)",
        "forced_sleep": "CMD 0xCD; refused while charging",
    },
    "pace": {
        "charge_mos": "CID2 0x9A; payload convention inferred: needs both opt-ins",
        "discharge_mos": "CID2 0x9B; payload convention inferred: needs both opt-ins",
        "buzzer": "CID2 0x99 (alarm function switch)",
        "sound_light_alarm": "CID2 0x99 LED alarm (alarm function switch)",
        "current_limiter": "CID2 0x99 charge-current limiter",
        "shutdown": "CID2 0x9C",
    },
}

# Families whose BMS refuses to switch both MOSFETs off (reference bms-protocols.md 3.C.1, PACE).
REFUSES_BOTH_MOS_OFF = frozenset({"pace"})
CHARGING_CURRENT_A = 0.05  # above this the pack counts as charging (forced sleep is refused)
CLOCK_VERIFY_TOLERANCE_S = 3.0  # a written clock read back within this counts as verified
CAPACITY_MAX_AH = 655.35  # 16-bit wire field at 0.01 Ah
CAPACITY_DISAGREE_RATIO = 0.01  # full vs nominal differing by more than 1 % -> warning (manual 4.5.1)
AUTO_SYNC_RETRY_S = 600.0
ACCESS_ROLE = {Access.OPERATOR: Role.ADMIN, Access.ADMINISTRATOR: Role.ADMIN, Access.FACTORY: Role.FACTORY}


# ---- errors (the HTTP layer maps `status` to the response code) ----------------------------------


AdminError = ApiError  # the admin channel's name for the shared base


class PackSilent(AdminError):
    """A single-pack read got no answer (batch operations report this per pack instead). Answered
    409: the request was fine, the pack's state (not answering) prevents it."""

    status = 409


# ---- who asks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    client: str = "local"

    @property
    def role(self) -> Role:
        return self.principal.role


SYSTEM = Caller(Principal("gateway", Role.ADMIN, "automatic clock sync"), "gateway")


# ---- reports -------------------------------------------------------------------------------------


class Outcome(enum.StrEnum):
    VERIFIED = "verified"  # written and read back equal
    WRITTEN = "written"  # acknowledged; no read-back possible
    MISMATCH = "mismatch"  # acknowledged but read back different
    FAILED = "failed"  # not written (no answer, refused by the pack, not sent)
    WOULD_CHANGE = "would_change"  # dry run
    UNCHANGED = "unchanged"  # dry run: already at that value


@dataclass(slots=True)
class ItemReport:
    name: str
    requested: Any
    before: Any = None
    after: Any = None
    outcome: Outcome = Outcome.FAILED
    detail: str = ""


@dataclass(slots=True)
class PackReport:
    pack: str
    outcome: str = "ok"  # ok | partial | mismatch | failed | dry_run
    written: bool = False
    detail: str = ""
    items: list[ItemReport] = field(default_factory=list)
    bus_requests: int = 0
    warnings: list[str] = field(default_factory=list)

    def summarize(self) -> None:
        outcomes = {i.outcome for i in self.items}
        if outcomes <= {Outcome.WOULD_CHANGE, Outcome.UNCHANGED}:
            self.outcome = "dry_run"
            return
        self.written = bool(outcomes & {Outcome.VERIFIED, Outcome.WRITTEN, Outcome.MISMATCH})
        if Outcome.FAILED in outcomes:
            self.outcome = "partial" if self.written else "failed"
        elif Outcome.MISMATCH in outcomes:
            self.outcome = "mismatch"
        else:
            self.outcome = "ok"


def batch_json(action: str, reports: Sequence[PackReport], *, dry_run: bool = False) -> dict[str, Any]:
    outcomes = {r.outcome for r in reports}
    if dry_run:
        overall = "dry_run"
    elif outcomes <= {"ok"}:
        overall = "ok"
    elif not any(r.written for r in reports):
        overall = "failed"
    else:
        overall = "partial"
    return {
        "action": action,
        "dry_run": dry_run,
        "outcome": overall,
        "written": [r.pack for r in reports if r.written],
        "not_written": [r.pack for r in reports if not r.written],
        "packs": [asdict(r) for r in reports],
    }


def _problem(parameter: str, value: Any, allowed: Any, message: str) -> dict[str, Any]:
    """One refused value, as listed in a 422 answer's `errors`."""
    return {"parameter": parameter, "value": value, "allowed": allowed, "message": message}


def _not_among(*checks: tuple[str, Any, list[Any], str]) -> list[dict[str, Any]]:
    """The problems of optional values (None: not given) that are not among their allowed choices;
    each check is (parameter, value, allowed, message)."""
    return [
        _problem(n, v, allowed, msg) for n, v, allowed, msg in checks if v is not None and v not in allowed
    ]


def _refuse_all(errors: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (422) naming every problem at once, when there is any."""
    if errors:
        raise Invalid("; ".join(str(e["message"]) for e in errors), errors)


def _items_by_pack(reports: Sequence[PackReport], field: str) -> dict[str, dict[str, Any]]:
    """{pack: {item name: the item's `field`}}: a batch's values before or after, as audited."""
    return {r.pack: {i.name: getattr(i, field) for i in r.items} for r in reports}


def _closed(rep: PackReport, bus: AdminBus | None) -> PackReport:
    """`rep` with the requests its action sent on `bus` (None: left uncounted) and its outcome."""
    if bus is not None:
        rep.bus_requests = bus.requests
    rep.summarize()
    return rep


# ---- the bus with admin priority -----------------------------------------------------------------


class AdminBus:
    """A `BusClient` that raises every request of an admin action to admin priority and counts them."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.requests = 0

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


# ---- one item written and checked ----------------------------------------------------------------

_Check = Callable[[AdminBus], Awaitable[tuple[Any, bool | None]]]


@dataclass(frozen=True, slots=True)
class _WriteStep:
    """What differs between the single-item admin writes; `_apply_step` is the shared mechanism.

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


async def _apply_step(step: _WriteStep, item: ItemReport, bus: AdminBus) -> None:
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
class _Action:
    name: str  # in the audit log
    role: Role  # needed
    what: str  # how a refusal names it ("<what> needs the admin role or higher")


# The single-pack admin actions (see `AdminService._on_pack`).
_IMPORT = _Action("parameters.import", Role.ADMIN, "importing parameters")
_CAPACITIES = _Action("config.capacities", Role.ADMIN, "writing capacities")
_CELL_COUNT = _Action("config.cell_count", Role.FACTORY, "setting the cell count")
_SERIAL = _Action("config.serial", Role.ADMIN, "writing the SN code")
_ANTI_THEFT = _Action("config.anti_theft", Role.ADMIN, "changing the anti-theft mode")
_UNLOCK = _Action("config.unlock", Role.ADMIN, "unlocking a pack")
_CONTROL = _Action("control", Role.ADMIN, "pack controls")
_PACK_PROTOCOLS = _Action("config.pack_protocols", Role.ADMIN, "selecting the pack's inverter protocols")


@dataclass(frozen=True, slots=True)
class _PackAction:
    """One audited admin action on one pack: who asked, the action's name, the request as audited."""

    caller: Caller
    name: str
    request: dict[str, Any]
    key: PackKey


# ---- the service ---------------------------------------------------------------------------------


class AdminService(PackLookup):
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

    @classmethod
    def from_context(cls, ctx: AppContext) -> AdminService:
        """The service for `ctx` (audit log at `[admin] audit_db`), shared as `ctx.extras["admin"]`."""
        path = state_path(ctx.config, ctx.config_path, ctx.config.admin.audit_db)
        service = cls(ctx, path)
        ctx.extras["admin"] = service
        return service

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

    def feature(self, key: PackKey, method: str, what: str) -> Callable[..., Awaitable[Any]]:
        """A family-specific driver method, or Conflict naming what the family cannot do."""
        driver = self.driver(key)
        fn = getattr(driver, method, None)
        if fn is None:
            raise Conflict(f"{driver.family}: {what} is not available for this BMS family")
        return fn  # type: ignore[no-any-return,unused-ignore]

    def lock(self, bus: str) -> asyncio.Lock:
        lk = self._locks.get(bus)
        if lk is None:
            lk = self._locks[bus] = asyncio.Lock()
        return lk

    def bus(self, key: PackKey) -> AdminBus:
        return AdminBus(self.ctx.bus_for(key))

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
    ) -> None:
        """Put a read-back into the poller's state and publish the pack's snapshot."""
        poller = self.ctx.pollers.get(key[0])
        state = None if poller is None else poller.packs.get(key[1])
        if poller is None or state is None:
            return
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
        cfg = self.ctx.config.admin.allow_inferred_writes
        need = []
        if not cfg:
            need.append("[admin] allow_inferred_writes = true in the configuration")
        need.append('"allow_inferred": true in the request')
        return Invalid(
            f"{what} uses an inferred (not publicly documented) encoding; it needs both "
            + " and ".join(need),
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
        except AdminError as err:
            if err.status in (403, 409, 422):
                named: list[PackKey | str] = list(packs)
                if not named and isinstance(request, dict):
                    named = list(request.get("packs") or ([request["pack"]] if "pack" in request else []))
                await self.record(caller, action, named, request, outcome="refused", detail=err.message)
            raise

    async def _on_pack(
        self,
        spec: _Action,
        caller: Caller,
        bus: str,
        address: int,
        body: Callable[[_PackAction], Awaitable[R]],
        /,
        **fields: Any,
    ) -> R:
        """Run `body` as the audited action `spec` on pack BUS/ADDRESS (the request: the pack, then
        `fields`) once `caller` holds the spec's role and the pack is known; refusals are audited."""
        request = {"pack": f"{bus}/{address}", **fields}

        async def run() -> R:
            self.require(caller, spec.role, spec.what)
            return await body(_PackAction(caller, spec.name, request, self.pack(bus, address)))

        return await self.audited(caller, spec.name, [], request, run)

    async def _record_pack(
        self, act: _PackAction, *, outcome: str, before: Any = None, after: Any = None, detail: str = ""
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
        )

    async def _finish_pack(
        self, act: _PackAction, rep: PackReport, bus: AdminBus | None, *, before: Any, after: Any, detail: str
    ) -> dict[str, Any]:
        """Close a single-pack report (see `_closed`), audit it, answer it."""
        _closed(rep, bus)
        await self._record_pack(act, outcome=rep.outcome, before=before, after=after, detail=detail)
        return asdict(rep)

    async def _finish_item(
        self,
        act: _PackAction,
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
        act: _PackAction,
        item: ItemReport,
        step: _WriteStep,
        *,
        audit_after: Callable[[ItemReport], Any] | None = None,
    ) -> dict[str, Any]:
        """Run `step` for `item` under the bus's admin lock, then report and audit it."""
        bus = self.bus(act.key)
        async with self.lock(act.key[0]):
            await _apply_step(step, item, bus)
        return await self._finish_item(act, item, bus, audit_after=audit_after)

    async def _read_realtime(self, driver: Driver, key: PackKey, bus: AdminBus) -> Telemetry:
        """A read-back of the pack's telemetry, published at once."""
        t = await driver.read_realtime(bus, key[1], self._wall())
        self._publish(key, telemetry=t)
        return t

    # ---- parameters: read ------------------------------------------------------------------------

    async def _read_parameters(self, key: PackKey, bus: AdminBus | None = None) -> ParameterSet:
        driver = self.driver(key)
        ps = await driver.read_parameters(bus or self.bus(key), key[1], self._wall())
        self._publish(key, parameters=ps)
        return ps

    async def current_parameters(
        self, key: PackKey, *, fresh: bool
    ) -> tuple[dict[str, float], float | None, str]:
        """(values, read time, source) from the snapshot, or read from the pack when asked/needed."""
        snap = self.ctx.store.view.pack(*key)
        if not fresh and snap is not None and snap.parameters is not None:
            return self.snapshot_parameters(key), snap.parameters.read_at, "snapshot"
        async with self.lock(key[0]):
            try:
                ps = await self._read_parameters(key)
            except BusError as err:
                raise PackSilent(f"pack {label(key)}: parameters could not be read ({err})") from None
        return {n: r.value for n, r in ps.values.items()}, ps.read_at, "pack"

    async def parameters(
        self, caller: Caller, bus: str, address: int, *, fresh: bool = False
    ) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading parameters")
        key = self.pack(bus, address)
        table = self.table(key)
        values, read_at, source = await self.current_parameters(key, fresh=fresh)
        rows = []
        for i, spec in enumerate(table, 1):
            value = values.get(spec.name)
            meaning = None
            if value is not None and spec.choices:
                meaning = next((c.meaning for c in spec.choices if c.value == value), None)
            rows.append(
                {
                    "no": i,
                    "name": spec.name,
                    "label": spec.label,
                    "section": spec.section,
                    "group": spec.group.value,
                    "value": value,
                    "meaning": meaning,
                    "unit": spec.unit,
                    "min": spec.min,
                    "max": spec.max,
                    "range": spec.range_text(),
                    "default": spec.default,
                    "access": spec.access.value,
                    "inferred": spec.inferred,
                    "choices": [{"value": c.value, "meaning": c.meaning} for c in spec.choices],
                    "note": spec.note,
                }
            )
        return {
            "pack": label(key),
            "family": table.family,
            "read_at": read_at,
            "source": source,
            "parameters": rows,
        }

    async def parameters_side_by_side(self, caller: Caller, packs: Sequence[str] | None) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading parameters")
        keys = self.resolve(packs)
        cols: list[dict[str, Any]] = []
        rows: dict[str, dict[str, Any]] = {}
        for key in keys:
            try:
                table = self.table(key)
            except AdminError as err:
                cols.append({"pack": label(key), "family": None, "read_at": None, "error": err.message})
                continue
            snap = self.ctx.store.view.pack(*key)
            read_at = None if snap is None or snap.parameters is None else snap.parameters.read_at
            cols.append({"pack": label(key), "family": table.family, "read_at": read_at, "error": None})
            values = self.snapshot_parameters(key)
            for spec in table:
                row = rows.setdefault(
                    spec.name,
                    {
                        "name": spec.name,
                        "unit": spec.unit,
                        "range": spec.range_text(),
                        "default": spec.default,
                        "access": spec.access.value,
                        "values": {},
                    },
                )
                row["values"][label(key)] = values.get(spec.name)
        return {"packs": cols, "parameters": list(rows.values())}

    def family_table(self, family: str) -> list[dict[str, Any]]:
        from mappings.bms.params import ParameterTableError, load_table

        try:
            table = load_table(family)
        except ParameterTableError as err:
            raise NotFound(str(err)) from None
        return [
            {
                "name": s.name,
                "label": s.label,
                "section": s.section,
                "group": s.group.value,
                "unit": s.unit,
                "range": s.range_text(),
                "default": s.default,
                "access": s.access.value,
                "inferred": s.inferred,
                "choices": [{"value": c.value, "meaning": c.meaning} for c in s.choices],
                "note": s.note,
            }
            for s in table
        ]

    # ---- parameters: write -----------------------------------------------------------------------

    def _validate_plan(
        self, caller: Caller, plan: Mapping[PackKey, Mapping[str, Any]]
    ) -> dict[PackKey, dict[str, float]]:
        errors: list[dict[str, Any]] = []
        out: dict[PackKey, dict[str, float]] = {}
        seen: set[tuple[str, str]] = set()
        for key, values in plan.items():
            table = self.table(key)
            out[key] = {}
            for name, value in values.items():
                problem = None
                if name not in table:
                    problem = _problem(name, value, None, f"{table.family}: unknown parameter {name!r}")
                else:
                    spec = table.get(name)
                    try:
                        out[key][name] = spec.validate(value)
                    except ParameterValueError as err:
                        problem = _problem(name, value, spec.range_text(), str(err))
                if problem is not None and (table.family, name) not in seen:  # once per family
                    errors.append(problem)
                    seen.add((table.family, name))
        _refuse_all(errors)
        for key, values in out.items():
            table = self.table(key)
            for name in values:
                spec = table.get(name)
                role = ACCESS_ROLE[spec.access]
                if caller.role < role:
                    raise Forbidden(
                        f"writing {name} ({spec.access.value} access) needs the {role.label} role; token "
                        f"{caller.principal.token_id} has {caller.role.label}"
                    )
        return out

    def _needs_inferred(self, plan: Mapping[PackKey, Mapping[str, float]]) -> list[str]:
        names: set[str] = set()
        for key, values in plan.items():
            table = self.table(key)
            names.update(n for n in values if table.get(n).inferred)
        return sorted(names)

    async def write_parameters(
        self,
        caller: Caller,
        packs: Sequence[str] | None,
        values: Mapping[str, Any],
        *,
        dry_run: bool = False,
        allow_inferred: bool = False,
        action: str = "parameters.write",
    ) -> dict[str, Any]:
        """Write the same values to one or several packs (see the module docstring)."""
        request = {
            "packs": list(packs or []),
            "values": dict(values),
            "dry_run": dry_run,
            "allow_inferred": allow_inferred,
        }

        async def body() -> dict[str, Any]:
            self.require(caller, Role.ADMIN, "writing parameters")
            keys = self.resolve(packs)
            if not values:
                raise Invalid('"values" is empty: name at least one parameter')
            return await self.write_plan(
                caller,
                action,
                {k: values for k in keys},
                dry_run=dry_run,
                allow_inferred=allow_inferred,
                request=request,
            )

        return await self.audited(caller, action, [], request, body)

    async def write_plan(
        self,
        caller: Caller,
        action: str,
        plan: Mapping[PackKey, Mapping[str, Any]],
        *,
        dry_run: bool,
        allow_inferred: bool,
        request: Any,
    ) -> dict[str, Any]:
        validated = self._validate_plan(caller, plan)
        inferred = self._needs_inferred(validated)
        if inferred and not dry_run and not self.inferred_allowed(allow_inferred):
            raise self._inferred_refusal("writing " + ", ".join(inferred))
        keys = list(validated)
        reports: list[PackReport] = []
        if dry_run:
            for key in keys:
                table = self.table(key)
                current = self.snapshot_parameters(key)
                rep = PackReport(label(key))
                for name, value in validated[key].items():
                    cur = current.get(name)
                    same = cur is not None and transfer.same_value(table.get(name), cur, value)
                    rep.items.append(
                        ItemReport(
                            name, value, cur, None, Outcome.UNCHANGED if same else Outcome.WOULD_CHANGE
                        )
                    )
                if inferred and not self.inferred_allowed(allow_inferred):
                    rep.warnings.append(self._inferred_refusal("writing " + ", ".join(inferred)).message)
                rep.summarize()
                reports.append(rep)
            result = batch_json(action, reports, dry_run=True)
            entry: dict[str, Any] = {"outcome": "dry_run"}
        else:
            for key in keys:  # one pack at a time
                async with self.lock(key[0]):
                    reports.append(await self._write_one(key, validated[key], allow_inferred=bool(inferred)))
            result = batch_json(action, reports)
            entry = {
                "outcome": result["outcome"],
                "after": _items_by_pack(reports, "after"),
                "detail": "; ".join(
                    f"{r.pack}: {r.outcome}{' (' + r.detail + ')' if r.detail else ''}" for r in reports
                ),
            }
        await self.record(caller, action, keys, request, before=_items_by_pack(reports, "before"), **entry)
        return result

    async def _write_one(
        self, key: PackKey, values: Mapping[str, float], *, allow_inferred: bool
    ) -> PackReport:
        table = self.table(key)
        driver = self.driver(key)
        bus = self.bus(key)
        rep = PackReport(label(key))
        snapshot = self.snapshot_parameters(key)
        try:
            before_ps = await driver.read_parameters(bus, key[1], self._wall())
            before = {n: r.value for n, r in before_ps.values.items()}
        except BusError as err:
            rep.detail = f"not written: the pack did not answer before the write ({err})"
            rep.items = [
                ItemReport(n, v, snapshot.get(n), None, Outcome.FAILED, "not written")
                for n, v in values.items()
            ]
            return _closed(rep, bus)
        write_error: str | None = None
        try:
            await driver.write_parameters(
                bus, key[1], [ParameterWrite(n, v) for n, v in values.items()], allow_inferred=allow_inferred
            )
        except Unsupported as err:
            rep.detail = f"not written: {err}"
            rep.items = [
                ItemReport(n, v, before.get(n), before.get(n), Outcome.FAILED, str(err))
                for n, v in values.items()
            ]
            return _closed(rep, bus)
        except (BusError, ValueError, LocalProtocolError) as err:
            write_error = str(err) or type(err).__name__
        after: dict[str, float] | None = None
        try:
            after_ps = await driver.read_parameters(bus, key[1], self._wall())
            after = {n: r.value for n, r in after_ps.values.items()}
            self._publish(key, parameters=after_ps)
        except BusError as err:
            rep.warnings.append(f"read-back failed: {err}")
        for name, value in values.items():
            spec = table.get(name)
            item = ItemReport(name, value, before.get(name))
            got = None if after is None else after.get(name)
            item.after = got
            was = before.get(name)
            already = was is not None and transfer.same_value(spec, was, value)
            if got is not None and transfer.same_value(spec, got, value) and not (write_error and already):
                item.outcome = Outcome.VERIFIED
            elif write_error is not None:
                item.outcome, item.detail = Outcome.FAILED, write_error
            elif after is None or got is None:
                item.outcome, item.detail = Outcome.WRITTEN, "acknowledged; not read back"
            else:
                item.outcome = Outcome.MISMATCH
                item.detail = f"read back {got:g} {spec.unit}".rstrip()
            rep.items.append(item)
        if write_error is not None:
            rep.detail = write_error
        return _closed(rep, bus)

    async def load_origin(
        self,
        caller: Caller,
        packs: Sequence[str] | None,
        *,
        dry_run: bool = False,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        """Write the documented defaults (the vendor tool's "Load Origin") of every parameter that has one.
        Configuration entries (capacities, ids `cfg.*`) are left alone."""
        action = "parameters.load_origin"
        request = {"packs": list(packs or []), "dry_run": dry_run, "allow_inferred": allow_inferred}

        async def body() -> dict[str, Any]:
            self.require(caller, Role.ADMIN, "loading the default parameters")
            keys = self.resolve(packs)
            plan: dict[PackKey, dict[str, Any]] = {}
            for key in keys:
                table = self.table(key)
                defaults = {
                    s.name: s.default
                    for s in table
                    if s.default is not None
                    and not s.id.startswith("cfg.")
                    and caller.role >= ACCESS_ROLE[s.access]
                }
                if not defaults:
                    raise Conflict(
                        f"{table.family}: no factory defaults are published; nothing to load for {label(key)}"
                    )
                plan[key] = defaults
            return await self.write_plan(
                caller, action, plan, dry_run=dry_run, allow_inferred=allow_inferred, request=request
            )

        return await self.audited(caller, action, [], request, body)

    # ---- export / import -------------------------------------------------------------------------

    async def export(
        self, caller: Caller, bus: str, address: int, fmt: str, *, fresh: bool = False
    ) -> tuple[str, str, str]:
        """(file text, media type, file name) of a pack's parameters."""
        self.require(caller, Role.OPERATOR, "exporting parameters")
        if fmt not in transfer.FORMATS:
            raise Invalid(f"unknown format {fmt!r}; allowed: {', '.join(transfer.FORMATS)}")
        key = self.pack(bus, address)
        table = self.table(key)
        values, read_at, _ = await self.current_parameters(key, fresh=fresh)
        meta = {
            "pack": label(key),
            "family": table.family,
            "read_at": ""
            if read_at is None
            else datetime.fromtimestamp(read_at).isoformat(timespec="seconds"),
        }
        text = transfer.render(fmt, table, values, meta)
        stamp = datetime.fromtimestamp(read_at or self._wall()).strftime("%Y%m%d%H%M%S")
        return text, transfer.MEDIA_TYPES[fmt], f"protect_alarm_{bus}_{address}_{stamp}.{fmt}"

    async def import_file(
        self,
        caller: Caller,
        bus: str,
        address: int,
        text: str,
        *,
        fmt: str | None = None,
        apply: bool = False,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        """Validate a parameter file and show the rows that differ from the pack; with `apply`, write them."""

        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            table = self.table(key)
            try:
                pairs = transfer.parse(text, fmt)
            except transfer.ImportFormatError as err:
                raise Invalid(f"the file cannot be read: {err}") from None
            values, problems = transfer.validate_rows(table, pairs)
            if problems:
                raise Invalid(
                    f"{len(problems)} row(s) refused: " + "; ".join(p.message for p in problems[:5]),
                    [
                        {"row": p.row, "parameter": p.name, "value": p.value, "message": p.message}
                        for p in problems
                    ],
                )
            current, _, _ = await self.current_parameters(key, fresh=False)
            changes = transfer.diff(table, current, values)
            preview = {
                "pack": label(key),
                "family": table.family,
                "rows": len(pairs),
                "unchanged": len(values) - len(changes),
                "changes": [asdict(c) for c in changes],
            }
            if not apply:
                await self._record_pack(act, outcome="dry_run", detail=f"{len(changes)} change(s) previewed")
                return {**preview, "applied": False, "result": None}
            if not changes:
                await self._record_pack(act, outcome="ok", detail="nothing to change")
                return {**preview, "applied": True, "result": None}
            result = await self.write_plan(
                caller,
                act.name,
                {key: {c.name: c.new for c in changes}},
                dry_run=False,
                allow_inferred=allow_inferred,
                request=act.request,
            )
            return {**preview, "applied": True, "result": result}

        return await self._on_pack(
            _IMPORT, caller, bus, address, body, format=fmt, apply=apply, bytes=len(text)
        )

    # ---- configuration ---------------------------------------------------------------------------

    async def capacities(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading capacities")
        key = self.pack(bus, address)
        t = self.telemetry(key)
        nominal = t.nominal_capacity_ah if t is not None else None
        nominal_source = "pack" if nominal is not None else None
        if nominal is None and key in self._nominal:
            nominal, nominal_source = self._nominal[key], "last written by this gateway"
        full = None if t is None else t.full_capacity_ah
        return {
            "pack": label(key),
            "full_ah": full,
            "remaining_ah": None if t is None else t.remaining_capacity_ah,
            "nominal_ah": nominal,
            "nominal_source": nominal_source,
            "measured_at": None if t is None else t.measured_at,
            "warnings": _capacity_warnings(full, nominal),
        }

    async def write_capacities(
        self,
        caller: Caller,
        bus: str,
        address: int,
        *,
        full_ah: float | None = None,
        remaining_ah: float | None = None,
        nominal_ah: float | None = None,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            write = self.feature(key, "write_capacity", "capacity writes")
            given = {"full": full_ah, "remaining": remaining_ah, "nominal": nominal_ah}
            asked: dict[str, float] = {k: v for k, v in given.items() if v is not None}
            if not asked:
                raise Invalid("name at least one of full_ah, remaining_ah, nominal_ah")
            allowed = f"0..{CAPACITY_MAX_AH} Ah"
            _refuse_all(
                [
                    _problem(f"{k}_ah", v, allowed, f"{k}_ah: {v:g} Ah is outside {allowed}")
                    for k, v in asked.items()
                    if not (math.isfinite(v) and 0.0 <= v <= CAPACITY_MAX_AH)
                ]
            )
            t = self.telemetry(key)
            target_full = full_ah if full_ah is not None else (t.full_capacity_ah if t else None)
            if remaining_ah is not None and target_full is not None and remaining_ah > target_full:
                raise Invalid(
                    f"remaining_ah: {remaining_ah:g} Ah is above the full capacity {target_full:g} Ah",
                    [
                        _problem(
                            "remaining_ah",
                            remaining_ah,
                            f"0..{target_full:g} Ah",
                            "remaining capacity above full capacity",
                        )
                    ],
                )
            if not self.inferred_allowed(allow_inferred):
                raise self._inferred_refusal("the capacity write (0.01 Ah wire unit)")
            from protocol.bms.tianpower.messages import Capacity

            before = {
                "full": t.full_capacity_ah if t else None,
                "remaining": t.remaining_capacity_ah if t else None,
                "nominal": self._nominal.get(key),
            }
            rep = PackReport(label(key))
            nominal_target = nominal_ah if nominal_ah is not None else self._nominal.get(key)
            rep.warnings = _capacity_warnings(target_full, nominal_target)
            if full_ah is not None and nominal_ah is None and key not in self._nominal:
                rep.warnings.append(
                    "the full capacity changes but the nominal capacity is not known to match: manual 4.5.1 "
                    "advises setting the nominal capacity to the same value"
                )
            abus = self.bus(key)
            async with self.lock(key[0]):
                errors_by: dict[str, str] = {}
                for name in ("full", "nominal", "remaining"):  # remaining last: it is capped by full
                    if name not in asked:
                        continue
                    try:
                        await write(abus, key[1], Capacity(name), asked[name], allow_inferred=True)
                        if name == "nominal":
                            self._nominal[key] = asked[name]
                    except (BusError, ValueError) as err:
                        errors_by[name] = str(err)
                after_t: Telemetry | None = None
                try:
                    after_t = await self._read_realtime(self.driver(key), key, abus)
                except BusError as err:
                    rep.warnings.append(f"read-back failed: {err}")
            readback = {
                "full": None if after_t is None else after_t.full_capacity_ah,
                "remaining": None if after_t is None else after_t.remaining_capacity_ah,
                "nominal": None if after_t is None else after_t.nominal_capacity_ah,
            }
            for name, value in asked.items():
                item = ItemReport(f"{name}_ah", value, before.get(name), readback[name])
                got = readback[name]
                if name in errors_by:
                    item.outcome, item.detail = Outcome.FAILED, errors_by[name]
                elif got is None:
                    item.outcome, item.detail = Outcome.WRITTEN, "acknowledged; the pack reports no read-back"
                elif abs(got - value) <= 0.0051:
                    item.outcome = Outcome.VERIFIED
                else:
                    item.outcome, item.detail = Outcome.MISMATCH, f"read back {got:g} Ah"
                rep.items.append(item)
            after = {k: v for k, v in readback.items() if v is not None}
            return await self._finish_pack(act, rep, abus, before=before, after=after, detail=rep.detail)

        return await self._on_pack(
            _CAPACITIES,
            caller,
            bus,
            address,
            body,
            full_ah=full_ah,
            remaining_ah=remaining_ah,
            nominal_ah=nominal_ah,
            allow_inferred=allow_inferred,
        )

    async def set_cell_count(
        self, caller: Caller, bus: str, address: int, cells: int, *, confirm: bool
    ) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            fn = self.feature(key, "set_cell_count", "setting the cell count")
            if not 1 <= cells <= 32:
                raise Invalid(
                    f"cells: {cells} is outside 1..32",
                    [_problem("cells", cells, "1..32", "out of range")],
                )
            if not confirm:
                raise Invalid(
                    "setting the cell count is a factory operation (manual 4.5.2: not recommended, "
                    "the wiring must "
                    'match); repeat the request with "confirm": true'
                )
            t = self.telemetry(key)
            item = ItemReport("cells", cells, None if t is None else len(t.cell_voltages_v))
            step = _WriteStep(
                lambda b: fn(b, key[1], cells, confirm_dangerous=True),
                errors=(BusError, LocalProtocolError),
                acknowledged="sent; the pack does not acknowledge and applies it after a reset",
            )
            # audited with the count asked for (the report's "after" stays unknown: no read-back)
            return await self._single_pack_write(act, item, step, audit_after=lambda _: cells)

        return await self._on_pack(_CELL_COUNT, caller, bus, address, body, cells=cells, confirm=confirm)

    async def write_serial(self, caller: Caller, bus: str, address: int, serial: str) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            write = self.feature(key, "write_serial", "writing the SN code")
            read = self.feature(key, "read_serial", "reading the SN code")
            from protocol.bms.tianpower.messages import encode_serial

            try:
                encode_serial(serial)
            except LocalProtocolError as err:
                raise Invalid(
                    str(err), [{"parameter": "serial", "value": serial, "message": str(err)}]
                ) from None
            snap = self.ctx.store.view.pack(*key)
            item = ItemReport("serial", serial, None if snap is None else snap.identity.serial)

            async def check(b: AdminBus) -> tuple[Any, bool]:
                got = await read(b, key[1])
                return got, got == serial

            step = _WriteStep(lambda b: write(b, key[1], serial), check)
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(_SERIAL, caller, bus, address, body, serial=serial)

    # ---- anti-theft ------------------------------------------------------------------------------

    async def anti_theft(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading the anti-theft mode")
        key = self.pack(bus, address)
        self.feature(key, "anti_theft_lock", "anti-theft")
        t = self.telemetry(key)
        written = self._anti_theft.get(key)
        mode = None
        if written is not None:
            mode = {name: bool(written[0] & bit) for name, bit in ANTI_THEFT_BITS.items()}
        return {
            "pack": label(key),
            "locked": None if t is None else "Battery_Locked" in t.states,
            "mode": mode,
            "mode_source": (
                "unknown: the protocol has no documented read of the anti-theft mode"
                if written is None
                else "last written by this gateway at "
                + datetime.fromtimestamp(written[1]).isoformat(timespec="seconds")
            ),
            "comm_timeout_h": None,
            "comm_timeout_note": "no documented command reads or writes Comm_Time (48 h default, 4.5.6)",
        }

    async def write_anti_theft(
        self,
        caller: Caller,
        bus: str,
        address: int,
        mode: Mapping[str, bool],
        comm_timeout_h: float | None = None,
    ) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            fn = self.feature(key, "anti_theft_lock", "anti-theft")
            unknown = sorted(set(mode) - set(ANTI_THEFT_BITS))
            if unknown:
                raise Invalid(
                    f"unknown anti-theft lock(s) {', '.join(unknown)}; allowed: {', '.join(ANTI_THEFT_BITS)}"
                )
            if comm_timeout_h is not None:
                raise Conflict(
                    "the communication anti-theft timeout (Comm_Time) has no publicly documented "
                    "command; the BMS keeps its own value (48 h by default, manual 4.5.6)"
                )
            from protocol.bms.tianpower.messages import AntiTheft

            current = self._anti_theft.get(key, (0, 0.0))[0]
            mask = current
            for name, on in mode.items():
                bit = ANTI_THEFT_BITS[name]
                mask = (mask | bit) if on else (mask & ~bit)
            item = ItemReport(
                "mode",
                {n: bool(mask & b) for n, b in ANTI_THEFT_BITS.items()},
                {n: bool(current & b) for n, b in ANTI_THEFT_BITS.items()}
                if key in self._anti_theft
                else None,
            )

            async def write(b: AdminBus) -> None:
                await fn(b, key[1], AntiTheft(mask))
                self._anti_theft[key] = (mask, self._wall())
                item.after = item.requested  # no read of the mode: what was acknowledged is what we know

            step = _WriteStep(write, acknowledged="acknowledged; the protocol has no read of the mode")
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(
            _ANTI_THEFT, caller, bus, address, body, mode=dict(mode), comm_timeout_h=comm_timeout_h
        )

    async def unlock(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            fn = self.feature(key, "unlock", "unlocking")
            t = self.telemetry(key)
            item = ItemReport("locked", False, None if t is None else "Battery_Locked" in t.states)

            async def check(b: AdminBus) -> tuple[Any, bool]:
                locked = "Battery_Locked" in (await self._read_realtime(self.driver(key), key, b)).states
                return locked, not locked

            step = _WriteStep(lambda b: fn(b, key[1]), check)
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(_UNLOCK, caller, bus, address, body)

    # ---- controls (MOS, heater, fan, buzzer, forced sleep, ...) ------------------------------------

    def controls_of(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "listing controls")
        key = self.pack(bus, address)
        family = self.driver(key).family
        known = CONTROLS_BY_FAMILY.get(family, {})
        return {
            "pack": label(key),
            "family": family,
            "actions": [{"action": a, "note": n} for a, n in known.items()],
            "refuses_both_mos_off": family in REFUSES_BOTH_MOS_OFF,
            "note": "any other action is answered 409 with the reason; nothing is sent",
        }

    async def control(
        self,
        caller: Caller,
        bus: str,
        address: int,
        action_name: str,
        on: bool,
        *,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            try:
                ctl = Control(action_name)
            except ValueError:
                raise Invalid(
                    f"unknown action {action_name!r}; allowed: {', '.join(a.value for a in Control)}"
                ) from None
            driver = self.driver(key)
            t = self.telemetry(key)
            if (
                ctl is Control.FORCED_SLEEP
                and t is not None
                and (t.current_a > CHARGING_CURRENT_A or "Charging" in t.states)
            ):
                raise Conflict(
                    f"forced sleep refused: pack {label(key)} is charging ({t.current_a:g} A); "
                    "a BMS cannot be forced to sleep while charging (manual 4.5.3)"
                )
            if (
                ctl in (Control.CHARGE_MOS, Control.DISCHARGE_MOS)
                and not on
                and driver.family in REFUSES_BOTH_MOS_OFF
            ):
                other = (
                    t.discharge_mos_on
                    if (t and ctl is Control.CHARGE_MOS)
                    else (t.charge_mos_on if t else None)
                )
                if other is False:
                    raise Conflict(
                        f"refused: the other MOSFET of {label(key)} is already off and "
                        f"{driver.family} BMSs refuse "
                        "to switch both MOSFETs off (reference 3.C.1)"
                    )
            item = ItemReport(ctl.value, on, _control_state(ctl, t))

            async def check(b: AdminBus) -> tuple[Any, bool | None]:
                after = _control_state(ctl, await self._read_realtime(driver, key, b))
                return after, None if after is None else after == on  # None: no state to compare

            step = _WriteStep(
                lambda b: driver.control(b, key[1], ctl, int(on)),
                None if ctl in (Control.FORCED_SLEEP, Control.SHUTDOWN) else check,
                failure=_control_failure,
                conflicts=(Unsupported,),
            )
            abus = self.bus(key)
            async with self.lock(key[0]):
                restore = None
                if driver.family == "pace" and ctl in (Control.CHARGE_MOS, Control.DISCHARGE_MOS):
                    if not self.inferred_allowed(allow_inferred):
                        raise self._inferred_refusal("PACE MOSFET control")
                    restore = getattr(driver, "allow_inferred", False)
                    driver.allow_inferred = True  # type: ignore[attr-defined]
                try:
                    await _apply_step(step, item, abus)
                finally:
                    if restore is not None:
                        driver.allow_inferred = restore  # type: ignore[attr-defined]
            return await self._finish_item(act, item, abus)

        return await self._on_pack(
            _CONTROL, caller, bus, address, body, action=action_name, on=on, allow_inferred=allow_inferred
        )

    # ---- the pack's own inverter protocol selection (PACE) -----------------------------------------

    async def pack_protocols(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading the pack's inverter protocol selection")
        key = self.pack(bus, address)
        read = self.feature(key, "read_protocols", "inverter protocol selection")
        from protocol.bms.pace import commands as c

        async with self.lock(key[0]):
            try:
                p = await read(self.bus(key), key[1])
            except BusError as err:
                raise PackSilent(f"pack {label(key)}: protocol selection could not be read ({err})") from None
        return {
            "pack": label(key),
            "can": p.can,
            "can_name": p.can_name,
            "rs485": p.rs485,
            "rs485_name": p.rs485_name,
            "mode": p.mode_name,
            "can_codes": {f"{k}": v for k, v in c.CAN_PROTOCOLS.items()},
            "rs485_codes": {f"{k}": v for k, v in c.RS485_PROTOCOLS.items()},
        }

    async def write_pack_protocols(
        self, caller: Caller, bus: str, address: int, *, can: int | None, rs485: int | None, mode: str | None
    ) -> dict[str, Any]:
        async def body(act: _PackAction) -> dict[str, Any]:
            key = act.key
            read = self.feature(key, "read_protocols", "inverter protocol selection")
            write = self.feature(key, "write_protocols", "inverter protocol selection")
            from protocol.bms.pace import commands as c

            modes = {"auto": 0, "manual": 1}
            _refuse_all(
                _not_among(
                    (
                        "can",
                        can,
                        sorted(c.CAN_PROTOCOLS),
                        f"CAN protocol code {can} is not in the PACE CAN table",
                    ),
                    (
                        "rs485",
                        rs485,
                        sorted(c.RS485_PROTOCOLS),
                        f"RS485 protocol code {rs485} is not in the PACE RS485 table",
                    ),
                    ("mode", mode, list(modes), f"mode {mode!r} is not auto or manual"),
                )
            )
            if can is None and rs485 is None and mode is None:
                raise Invalid("name at least one of can, rs485, mode")
            abus = self.bus(key)
            async with self.lock(key[0]):
                try:
                    cur = await read(abus, key[1])
                except BusError as err:
                    rep = PackReport(label(key), detail=f"not written: the pack did not answer ({err})")
                    rep.items.append(
                        ItemReport("protocols", act.request, None, None, Outcome.FAILED, rep.detail)
                    )
                    # reported without a bus request count, audited without before/after
                    return await self._finish_pack(act, rep, None, before=None, after=None, detail=rep.detail)
                new = c.Protocols(
                    cur.can if can is None else can,
                    cur.rs485 if rs485 is None else rs485,
                    cur.mode if mode is None else modes[mode],
                )
                item = ItemReport("protocols", _protocols_doc(new), _protocols_doc(cur))

                async def check(b: AdminBus) -> tuple[Any, bool]:
                    got = await read(b, key[1])
                    return _protocols_doc(got), got == new

                step = _WriteStep(
                    lambda b: write(b, key[1], new), check, errors=(BusError, LocalProtocolError)
                )
                await _apply_step(step, item, abus)
            return await self._finish_item(act, item, abus)

        return await self._on_pack(
            _PACK_PROTOCOLS, caller, bus, address, body, can=can, rs485=rs485, mode=mode
        )

    # ---- the gateway's own inverter protocols (CAN, RS485) ------------------------------------------

    def gateway_protocols(self, caller: Caller) -> dict[str, Any]:
        self.require(caller, Role.VIEWER, "reading the gateway's inverter protocols")
        from gateway.north.rs485.service import PROTOCOLS as RS485_NAMES
        from protocol.inverter.can import registry

        can_service = self.ctx.extras.get("can")
        rs_service = self.ctx.extras.get("inverter_rs485")
        return {
            "can": {
                "protocol": self.ctx.config.can.protocol,
                "enabled": self.ctx.config.can.enabled,
                "running": can_service is not None,
                "available": registry.names(),
            },
            "rs485": {
                "protocol": self.ctx.config.inverter_rs485.protocol,
                "enabled": self.ctx.config.inverter_rs485.enabled,
                "running": rs_service is not None,
                "available": list(RS485_NAMES),
            },
            "config_file": None if self.ctx.config_path is None else str(self.ctx.config_path),
        }

    async def set_gateway_protocols(
        self, caller: Caller, *, can: str | None, rs485: str | None
    ) -> dict[str, Any]:
        """Switch the running CAN / RS485 inverter services and persist the choice in the config file."""
        action = "gateway.protocols"
        request = {"can": can, "rs485": rs485}

        async def body() -> dict[str, Any]:
            self.require(caller, Role.ADMIN, "changing the gateway's inverter protocols")
            from gateway.north.rs485.service import PROTOCOLS as RS485_NAMES
            from protocol.inverter.can import registry

            _refuse_all(
                _not_among(
                    ("can", can, registry.names(), f"unknown CAN protocol {can!r}"),
                    ("rs485", rs485, list(RS485_NAMES), f"unknown RS485 inverter protocol {rs485!r}"),
                )
            )
            if can is None and rs485 is None:
                raise Invalid("name at least one of can, rs485")
            if can is not None:
                try:  # the configured [can] options must suit the new protocol (pure check, nothing runs)
                    registry.create(can, self.ctx.config.can.options)
                except (KeyError, ValueError) as err:
                    raise Invalid(
                        f"CAN protocol {can!r} does not accept the configured [can] options: {err}",
                        [{"parameter": "can", "value": can, "message": str(err)}],
                    ) from None
            before = {"can": self.ctx.config.can.protocol, "rs485": self.ctx.config.inverter_rs485.protocol}
            changes = {k: v for k, v in (("can", can), ("rs485", rs485)) if v is not None}
            persisted = False
            if self.ctx.config_path is not None:
                try:
                    await asyncio.to_thread(config_file.set_protocols, Path(self.ctx.config_path), changes)
                    persisted = True
                except ConfigError as err:
                    raise Conflict(f"the configuration file was not changed: {err}") from None
            applied = []
            cfg = self.ctx.config
            if can is not None:
                service = self.ctx.extras.get("can")
                if service is not None:  # the same options the configuration gives it at the next start
                    service.set_protocol(can, dict(cfg.can.options))
                    applied.append("can")
                cfg = cfg.model_copy(update={"can": cfg.can.model_copy(update={"protocol": can})})
            if rs485 is not None:
                service = self.ctx.extras.get("inverter_rs485")
                if service is not None:
                    service.set_protocol(rs485)
                    applied.append("rs485")
                cfg = cfg.model_copy(
                    update={"inverter_rs485": cfg.inverter_rs485.model_copy(update={"protocol": rs485})}
                )
            self.ctx.config = cfg
            after = {"can": cfg.can.protocol, "rs485": cfg.inverter_rs485.protocol}
            result = {
                "before": before,
                "after": after,
                "applied_to_running_services": applied,
                "persisted": persisted,
                "config_file": None if self.ctx.config_path is None else str(self.ctx.config_path),
                "outcome": "ok",
            }
            if not persisted:
                result["note"] = "no configuration file: the change lasts until the gateway restarts"
            await self.record(
                caller,
                action,
                [],
                request,
                outcome="ok",
                before=before,
                after=after,
                detail=f"persisted={persisted} applied={','.join(applied) or 'none'}",
            )
            return result

        return await self.audited(caller, action, [], request, body)

    # ---- clock -----------------------------------------------------------------------------------

    async def read_clocks(self, caller: Caller, packs: Sequence[str] | None) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading clocks")
        keys = self.resolve(packs)
        out = []
        for key in keys:
            entry: dict[str, Any] = {
                "pack": label(key),
                "pack_time": None,
                "read_at": None,
                "drift_s": None,
                "source": None,
                "error": None,
            }
            try:
                driver = self.driver(key)
                async with self.lock(key[0]):
                    reading = await driver.read_clock(self.bus(key), key[1], self._wall())
                self._publish(key, clock=reading)
                entry.update(
                    pack_time=reading.pack_time,
                    read_at=reading.read_at,
                    drift_s=reading.drift_s,
                    source="pack",
                )
            except (BusError, AdminError) as err:
                entry["error"] = getattr(err, "message", None) or str(err)
                snap = self.ctx.store.view.pack(*key)
                if snap is not None and snap.clock is not None:
                    c = snap.clock
                    entry.update(
                        pack_time=c.pack_time, read_at=c.read_at, drift_s=c.drift_s, source="snapshot"
                    )
            out.append(entry)
        return {
            "gateway_time": self._wall(),
            "max_drift_s": self.ctx.config.admin.clock_max_drift_s,
            "packs": out,
        }

    async def sync_clocks(
        self, caller: Caller, packs: Sequence[str] | None, *, action: str = "clock.sync"
    ) -> dict[str, Any]:
        """Write the gateway's time to one or several packs, one at a time, and read it back."""
        request = {"packs": list(packs or [])}

        async def body() -> dict[str, Any]:
            self.require(caller, Role.OPERATOR, "setting pack clocks")
            keys = self.resolve(packs)
            reports = []
            for key in keys:
                rep = PackReport(label(key))
                snap = self.ctx.store.view.pack(*key)
                before = None if snap is None or snap.clock is None else round(snap.clock.drift_s, 1)
                item = ItemReport("drift_s", 0.0, before)
                try:
                    step = self._clock_step(self.driver(key), key)
                    abus = self.bus(key)
                    async with self.lock(key[0]):
                        await _apply_step(step, item, abus)
                    rep.bus_requests = abus.requests
                except (BusError, AdminError) as err:
                    item.detail = getattr(err, "message", None) or str(err)
                rep.items.append(item)
                rep.summarize()
                rep.detail = item.detail
                reports.append(rep)
            result = batch_json(action, reports)
            await self.record(
                caller,
                action,
                keys,
                request,
                outcome=result["outcome"],
                before={r.pack: r.items[0].before for r in reports},
                after={r.pack: r.items[0].after for r in reports},
                detail="; ".join(f"{r.pack}: {r.outcome}" for r in reports),
            )
            return result

        return await self.audited(caller, action, [], request, body)

    def _clock_step(self, driver: Driver, key: PackKey) -> _WriteStep:
        """The gateway's time written to a pack, verified by the drift read back. A failed write is
        not caught here (`errors=()`): `sync_clocks` reports it for the pack."""

        async def check(b: AdminBus) -> tuple[Any, bool]:
            reading = await driver.read_clock(b, key[1], self._wall())
            self._publish(key, clock=reading)
            return round(reading.drift_s, 1), abs(reading.drift_s) <= CLOCK_VERIFY_TOLERANCE_S

        return _WriteStep(lambda b: driver.write_clock(b, key[1], self._wall()), check, errors=())

    async def auto_sync_once(self) -> list[str]:
        """Sync the packs whose last clock reading drifts beyond `[admin] clock_max_drift_s` (at most once
        per pack every AUTO_SYNC_RETRY_S). Returns the packs synced."""
        limit = self.ctx.config.admin.clock_max_drift_s
        now = self._wall()
        due = []
        for snap in self.ctx.store.view.ordered():
            if snap.clock is None or abs(snap.clock.drift_s) <= limit:
                continue
            if now - self._auto_sync_at.get(snap.key, -math.inf) < AUTO_SYNC_RETRY_S:
                continue
            self._auto_sync_at[snap.key] = now
            due.append(label(snap.key))
        if due:
            await self.sync_clocks(SYSTEM, due, action="clock.auto_sync")
        return due

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


ANTI_THEFT_BITS = {"communication": 0x01, "physical": 0x02, "charge_activation": 0x04, "sleep_voltage": 0x08}


def _capacity_warnings(full: float | None, nominal: float | None) -> list[str]:
    if full is None or nominal is None or nominal <= 0:
        return []
    if abs(full - nominal) / nominal > CAPACITY_DISAGREE_RATIO:
        return [
            f"full capacity {full:g} Ah and nominal capacity {nominal:g} Ah disagree: when the actual "
            "capacity "
            "differs from the factory value, change the nominal capacity too (manual 4.5.1)"
        ]
    return []


def _protocols_doc(p: Any) -> dict[str, Any]:
    """A PACE `Protocols` selection as reported: codes and the mode's name."""
    return {"can": p.can, "rs485": p.rs485, "mode": p.mode_name}


def _control_failure(err: Exception) -> str:
    return f"refused by the pack: {err}" if isinstance(err, DeviceError) else str(err)


def _control_state(ctl: Control, t: Telemetry | None) -> bool | None:
    if t is None:
        return None
    return {
        Control.CHARGE_MOS: t.charge_mos_on,
        Control.DISCHARGE_MOS: t.discharge_mos_on,
        Control.HEATER: t.heater_on,
        Control.FAN: t.fan_on,
    }.get(ctl)


class ClockAutoSync:
    """A Service: when `[admin] clock_auto_sync` is on, writes the gateway's time to packs whose clock
    drifts beyond `[admin] clock_max_drift_s` (audited as `clock.auto_sync`)."""

    name = "admin:clock_sync"

    def __init__(self, admin: AdminService, period_s: float = 10.0) -> None:
        self.admin = admin
        self.period_s = period_s

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.admin.auto_sync_once()
            except AdminError as err:
                log.warning("automatic clock sync: %s", err.message)
