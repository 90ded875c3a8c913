"""The parameter rules (`mappings/bms/rules.py`) in the admin write step: every parameter write,
batch write, import and Load Origin is checked on the whole resulting table of each pack (its
current values with the change applied) before any byte is sent.

Refusals (422) name every broken rule with its values and source; warnings (recommended ranges)
are refused unless the request forces them (audited); notes are only reported. This module never
talks to a bus itself: the current values come from the snapshot (or one read through the admin
service when the pack's parameters were never read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gateway.core.model import PackKey, Telemetry
from gateway.ops.admin.packs import label
from gateway.ops.security.errors import Invalid
from mappings.bms import rules
from mappings.bms.params import ParameterTable


class RulesHost(Protocol):
    """What the rules step needs of the admin service (structural: no import of the service)."""

    def telemetry(self, key: PackKey) -> Telemetry | None: ...

    def table(self, key: PackKey) -> ParameterTable: ...

    async def current_parameters(
        self, key: PackKey, *, fresh: bool
    ) -> tuple[dict[str, float], float | None, str]: ...


def verdict(
    admin: RulesHost, key: PackKey, current: Mapping[str, float], change: Mapping[str, float]
) -> rules.Verdict:
    """The rules on the pack's table once `change` is applied (the cell count from its telemetry)."""
    t = admin.telemetry(key)
    cells = None if t is None else len(t.cell_voltages_v)
    return rules.check(admin.table(key), current, change, cells=cells)


async def check_plan(
    admin: RulesHost, plan: Mapping[PackKey, Mapping[str, float]], *, force: bool
) -> dict[str, list[str]]:
    """Refuse (Invalid, naming every broken rule of every pack) a plan whose resulting tables break
    a rule; warnings only without `force`. Returns per pack the notes and the warnings overridden
    by `force` (they go into the report and the audit log)."""
    errors: list[dict[str, Any]] = []
    reported: dict[str, list[str]] = {}
    for key, change in plan.items():
        current, _, _ = await admin.current_parameters(key, fresh=False)
        v = verdict(admin, key, current, change)
        errors.extend({"pack": label(key), **x.as_dict()} for x in v.blocked(force=force))
        reported[label(key)] = [f"note: {x.message}" for x in v.notes]
        if force:
            reported[label(key)] += [f"forced: {x.message}" for x in v.warnings]
    if errors:
        refusals = [e for e in errors if e["severity"] == rules.Severity.REFUSE]
        hint = ""
        if len(refusals) < len(errors):
            hint = (
                f" ({len(errors) - len(refusals)} warning(s) may be overridden with "
                '"force": true / --force; rules marked refuse never)'
            )
        raise Invalid(
            "refused by the parameter rules: "
            + "; ".join(f"{e['pack']}: {e['message']}" for e in errors)
            + hint,
            errors,
        )
    return reported
