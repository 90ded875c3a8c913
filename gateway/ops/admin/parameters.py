"""Admin operations on parameters: read one pack or several side by side, the family table, and
batch writes validated against the table (ranges, ordering rules, access role, inferred opt-in) and
read back. Every write goes through the shared step of `gateway.ops.admin.base`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.model import PackKey, ParameterSet
from gateway.ops.admin import param_rules, transfer
from gateway.ops.admin.base import (
    AdminBase,
    AdminBus,
    Caller,
    closed,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.reports import (
    ItemReport,
    Outcome,
    PackReport,
    batch_json,
    items_by_pack,
    problem_entry,
    refuse_all,
)
from gateway.ops.security.audit import AuditUnavailable, Intent
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import ApiError, Conflict, Forbidden, Invalid, NotFound, PackSilent
from gateway.south.drivers.base import (
    BusError,
    ParameterWrite,
    Unsupported,
)
from mappings.bms.params import Access, ParameterValueError, ParamSpec
from protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

ACCESS_ROLE = {Access.OPERATOR: Role.ADMIN, Access.ADMINISTRATOR: Role.ADMIN, Access.FACTORY: Role.FACTORY}


def recommended(spec: ParamSpec) -> dict[str, Any]:
    """The manual's recommended range of a parameter (its PARAM table's unit column, 4.4.2), None
    where it gives none. A new value outside it is a rule warning (written only with `force`); a
    value outside the Set Range is refused."""
    if spec.rec_min is None or spec.rec_max is None:
        return {"rec_min": None, "rec_max": None, "rec_range": None}
    unit = f" {spec.unit}" if spec.unit else ""
    return {
        "rec_min": spec.rec_min,
        "rec_max": spec.rec_max,
        "rec_range": f"{spec.rec_min:g}..{spec.rec_max:g}{unit}",
    }


def not_read(key: PackKey, values: Mapping[str, float], reason: str, *, dry_run: bool) -> PackReport:
    """The report of a pack in a write whose parameters were never read and could not be read for
    the rule check (`param_rules.PlanCheck.unread`): every item failed, nothing sent to it."""
    rep = PackReport(label(key))
    rep.detail = f"{'not checked' if dry_run else 'not written'}: {reason}"
    rep.items = [
        ItemReport(n, v, None, None, Outcome.FAILED, "not read" if dry_run else "not written")
        for n, v in values.items()
    ]
    return closed(rep, None)


class ParametersMixin(AdminBase):
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
                    **recommended(spec),
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
            except ApiError as err:
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
                        **recommended(spec),
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
                **recommended(s),
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
                    problem = problem_entry(name, value, None, f"{table.family}: unknown parameter {name!r}")
                else:
                    spec = table.get(name)  # a name or an alias (e.g. PACE's older "Cell OV Alarm")
                    try:
                        out[key][spec.name] = spec.validate(value)
                    except ParameterValueError as err:
                        problem = problem_entry(name, value, spec.range_text(), str(err))
                if problem is not None and (table.family, name) not in seen:  # once per family
                    errors.append(problem)
                    seen.add((table.family, name))
        refuse_all(errors)
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
        force: bool = False,
        action: str = "parameters.write",
    ) -> dict[str, Any]:
        """Write the same values to one or several packs (see the module docstring)."""
        request = {
            "packs": list(packs or []),
            "values": dict(values),
            "dry_run": dry_run,
            "allow_inferred": allow_inferred,
            "force": force,
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
                force=force,
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
        force: bool = False,
    ) -> dict[str, Any]:
        validated = self._validate_plan(caller, plan)
        inferred = self._needs_inferred(validated)
        if inferred and not dry_run and not self.inferred_allowed(allow_inferred):
            raise self._inferred_refusal("writing " + ", ".join(inferred))
        checked = await param_rules.check_plan(self, validated, force=force)  # before any byte is sent
        reported = checked.reported
        keys = list(validated)
        reports: list[PackReport] = []
        entry_intents: list[int] = []
        if dry_run:
            for key in keys:
                if key in checked.unread:
                    reports.append(not_read(key, validated[key], checked.unread[key], dry_run=True))
                    continue
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
            intent = self.audit_log.intent(caller, action, request)
            entry_intents = intent.ids
            for key in keys:  # one pack at a time
                if key in checked.unread:  # it did not answer a moment ago: not asked again
                    reports.append(not_read(key, validated[key], checked.unread[key], dry_run=False))
                    continue
                async with self.lock(key[0]):
                    reports.append(
                        await self._write_one(
                            key, validated[key], allow_inferred=bool(inferred), force=force, intent=intent
                        )
                    )
            for rep in reports:
                rep.warnings.extend(reported.get(rep.pack, []))
            result = batch_json(action, reports)
            entry = {
                "outcome": result["outcome"],
                "after": items_by_pack(reports, "after"),
                "detail": "; ".join(
                    f"{r.pack}: {r.outcome}{' (' + r.detail + ')' if r.detail else ''}" for r in reports
                )
                + "".join(f"; {p}: {'; '.join(w)}" for p, w in reported.items() if w),
            }
        await self.record(
            caller,
            action,
            keys,
            request,
            before=items_by_pack(reports, "before"),
            intents=entry_intents,
            **entry,
        )
        return result

    async def _write_one(
        self,
        key: PackKey,
        values: Mapping[str, float],
        *,
        allow_inferred: bool,
        intent: Intent,
        force: bool = False,
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
            return closed(rep, bus)
        blocked = param_rules.verdict(self, key, before, values).blocked(force=force)
        if blocked:  # the pack's table changed since the check on the snapshot: nothing is sent
            rep.detail = "not written: " + "; ".join(v.message for v in blocked)
            rep.items = [
                ItemReport(
                    n, v, before.get(n), before.get(n), Outcome.FAILED, "refused by the parameter rules"
                )
                for n, v in values.items()
            ]
            return closed(rep, bus)
        write_error: str | None = None
        try:  # the intent, with the values read before, is in the audit log before the write starts
            await intent.before_first_byte([label(key)], before={n: before.get(n) for n in values})
        except AuditUnavailable as err:
            rep.detail = f"not written: {err}"
            rep.items = [
                ItemReport(n, v, before.get(n), before.get(n), Outcome.FAILED, "not written")
                for n, v in values.items()
            ]
            return closed(rep, bus)
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
            return closed(rep, bus)
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
        return closed(rep, bus)

    async def load_origin(
        self,
        caller: Caller,
        packs: Sequence[str] | None,
        *,
        dry_run: bool = False,
        allow_inferred: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        """Write the documented defaults (the vendor tool's "Load Origin") of every parameter that has one.
        Configuration entries (capacities, ids `cfg.*`) are left alone."""
        action = "parameters.load_origin"
        request = {
            "packs": list(packs or []),
            "dry_run": dry_run,
            "allow_inferred": allow_inferred,
            "force": force,
        }

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
                caller,
                action,
                plan,
                dry_run=dry_run,
                allow_inferred=allow_inferred,
                force=force,
                request=request,
            )

        return await self.audited(caller, action, [], request, body)
