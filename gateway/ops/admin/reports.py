"""What an admin action answers and audits: per pack and item, verified / written / mismatch /
failed, with the values before and after; and the validation problems of a refused request.
Plain data and pure helpers; nothing here talks to a bus."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.ops.security.errors import Invalid

log = logging.getLogger(__name__)

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
    if dry_run:  # a pack that could not be read for the dry run is failed (e.g. never read, silent)
        overall = (
            "dry_run" if outcomes <= {"dry_run"} else "failed" if "dry_run" not in outcomes else "partial"
        )
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


def problem_entry(parameter: str, value: Any, allowed: Any, message: str) -> dict[str, Any]:
    """One refused value, as listed in a 422 answer's `errors`."""
    return {"parameter": parameter, "value": value, "allowed": allowed, "message": message}


def not_among(*checks: tuple[str, Any, list[Any], str]) -> list[dict[str, Any]]:
    """The problems of optional values (None: not given) that are not among their allowed choices;
    each check is (parameter, value, allowed, message)."""
    return [
        problem_entry(n, v, allowed, msg)
        for n, v, allowed, msg in checks
        if v is not None and v not in allowed
    ]


def refuse_all(errors: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (422) naming every problem at once, when there is any."""
    if errors:
        raise Invalid("; ".join(str(e["message"]) for e in errors), errors)


def items_by_pack(reports: Sequence[PackReport], field: str) -> dict[str, dict[str, Any]]:
    """{pack: {item name: the item's `field`}}: a batch's values before or after, as audited."""
    return {r.pack: {i.name: getattr(i, field) for i in r.items} for r in reports}
