"""The parameter rules (`mappings/bms/rules.py`) in the admin write step: every parameter write,
batch write, import and Load Origin is checked on the whole resulting table of each pack (its
current values with the change applied) before any byte is sent.

Refusals (422) name every broken rule with its values and source; warnings (recommended ranges)
are refused unless the request forces them (audited); notes are only reported. This module never
talks to a bus itself: the current values come from the snapshot (or one read through the admin
service when the pack's parameters were never read). A pack never read that does not answer that
read is not a refusal of the whole plan: `check_plan` names it under `unread`, and the write step
reports it failed (not written) while the other packs go ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.model import PackKey, Telemetry
from gateway.ops.admin.packs import label
from gateway.ops.security.errors import Invalid, PackSilent
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


@dataclass(slots=True)
class PlanCheck:
    """What `check_plan` lets through: per pack the notes and the warnings overridden by `force`
    (`reported`, by pack name; they go into the report and the audit log), and the packs whose
    parameters were never read and could not be read now (`unread`: why), so nothing is checked
    or written there."""

    reported: dict[str, list[str]] = field(default_factory=dict)
    unread: dict[PackKey, str] = field(default_factory=dict)


async def check_plan(
    admin: RulesHost, plan: Mapping[PackKey, Mapping[str, float]], *, force: bool
) -> PlanCheck:
    """Refuse (Invalid, naming every broken rule of every pack) a plan whose resulting tables break
    a rule; warnings only without `force`. A pack without a reading that does not answer is not
    checked: it is listed in the result's `unread` (see `PlanCheck`)."""
    errors: list[dict[str, Any]] = []
    checked = PlanCheck()
    reported = checked.reported
    for key, change in plan.items():
        try:
            current, _, _ = await admin.current_parameters(key, fresh=False)
        except PackSilent as err:
            checked.unread[key] = err.message
            continue
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
    return checked
