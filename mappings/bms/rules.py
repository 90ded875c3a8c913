"""Relational rules of the BMS parameter tables: data (`mappings/bms/rules/<family>.toml`) + a checker.

A parameter can be inside its own "Set Range" and still leave the pack unable to protect or to
release: an over-voltage release above its trip, an alarm beyond its protection, a pack limit that
disagrees with the cell limits times the cell count. The rules are data, one `[[rule]]` each:

    id        stable rule id ("cell_ov.release_below_trip"), named in every refusal
    left      parameter id (the table's `id`, stable when display names change)
    op        "<" | "<=" | ">" | ">="
    right     parameter id
    times     optional: "cells" -> right is multiplied by the pack's cell count
    severity  "refuse" (never overridable) | "warn" (refused unless forced) | "note" (reported only)
    text      what the rule means, in words
    source    where it comes from: the vendor manual's page, or "physics"

`check()` applies them to the WHOLE resulting table (current values overlaid with the change), so
a write that is fine alone but breaks a pair with an unchanged value is refused too. Besides the
file's rules it checks every changed value against its Set Range (refuse) and its recommended
range (`rec_min`/`rec_max`, warn). Warnings and notes only concern rules that involve a changed
parameter and are not raised for values at the manual's own factory default (the defaults
themselves have delays outside the recommended ranges); refusals concern the whole table. A rule
whose operands are not all known (a value never read, the cell count unknown) is reported as
skipped, never guessed.

This module is pure: it never performs I/O other than reading the packaged rule files.
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mappings.bms.params import ParameterTable, ParameterTableError, ParameterValueError, ParamSpec

EPSILON = 1e-6  # float noise of display values (3.55 * 16 != 56.8 in binary)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b - EPSILON,
    "<=": lambda a, b: a <= b + EPSILON,
    ">": lambda a, b: a > b + EPSILON,
    ">=": lambda a, b: a >= b - EPSILON,
}


class Severity(enum.StrEnum):
    REFUSE = "refuse"  # never written, no override
    WARN = "warn"  # written only with an explicit, audited force
    NOTE = "note"  # reported with the result, never blocks


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    left: str  # parameter id
    op: str
    right: str  # parameter id
    severity: Severity
    text: str
    source: str
    times: str | None = None  # "cells" or None

    def formula(self, table: ParameterTable) -> str:
        right = table.by_id[self.right].name
        if self.times:
            right = f"{right} × {self.times}"
        return f"{table.by_id[self.left].name} {self.op} {right}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    family: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # rule id ("set_range" and "recommended_range" for the per-value checks)
    severity: Severity
    parameters: tuple[str, ...]  # parameter names involved
    message: str
    source: str

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "parameters": list(self.parameters),
            "message": self.message,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    violations: tuple[Violation, ...]
    skipped: tuple[str, ...]  # rule ids not checked (an operand unknown)

    @property
    def refusals(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity is Severity.REFUSE)

    @property
    def warnings(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity is Severity.WARN)

    @property
    def notes(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity is Severity.NOTE)

    def blocked(self, *, force: bool) -> tuple[Violation, ...]:
        """What stops the write: every refusal, and the warnings unless `force` (never the notes)."""
        return self.refusals if force else self.refusals + self.warnings


def _fmt(value: float, unit: str) -> str:
    return f"{value:g} {unit}".rstrip()


def parse_rules(text: str, table: ParameterTable, source: str = "<string>") -> RuleSet:
    """Parse and validate a rule file against its family's parameter table."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ParameterTableError(f"{source}: not valid TOML: {err}") from None
    unknown = sorted(set(doc) - {"family", "rule"})
    if unknown:
        raise ParameterTableError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    if doc.get("family") != table.family:
        raise ParameterTableError(f"{source}: family {doc.get('family')!r} is not {table.family!r}")
    rules: list[Rule] = []
    seen: set[str] = set()
    allowed = {"id", "left", "op", "right", "times", "severity", "text", "source"}
    for i, entry in enumerate(doc.get("rule", []), 1):
        where = f"{source}: rule #{i}"
        if not isinstance(entry, dict):
            raise ParameterTableError(f"{where}: must be a table")
        extra = sorted(set(entry) - allowed)
        missing = sorted({"id", "left", "op", "right", "severity", "text", "source"} - set(entry))
        if extra or missing:
            raise ParameterTableError(f"{where}: unknown {extra} / missing {missing} key(s)")
        if entry["id"] in seen:
            raise ParameterTableError(f"{where}: duplicate rule id {entry['id']!r}")
        seen.add(entry["id"])
        for key in ("left", "right"):
            if entry[key] not in table.by_id:
                raise ParameterTableError(f"{where} ({entry['id']}): unknown parameter id {entry[key]!r}")
        if entry["op"] not in _OPS:
            raise ParameterTableError(f"{where}: op must be one of {', '.join(_OPS)}")
        if entry.get("times") not in (None, "cells"):
            raise ParameterTableError(f'{where}: times must be "cells"')
        try:
            severity = Severity(entry["severity"])
        except ValueError:
            raise ParameterTableError(f"{where}: severity must be refuse, warn or note") from None
        left, right = table.by_id[entry["left"]], table.by_id[entry["right"]]
        if left.unit != right.unit:
            raise ParameterTableError(f"{where}: compares {left.unit!r} with {right.unit!r}")
        rules.append(
            Rule(
                id=str(entry["id"]),
                left=left.id,
                op=entry["op"],
                right=right.id,
                severity=severity,
                text=str(entry["text"]),
                source=str(entry["source"]),
                times=entry.get("times"),
            )
        )
    return RuleSet(table.family, tuple(rules))


@cache
def load_rules(family: str) -> RuleSet:
    """The packaged rules of a family (an empty set when the family has no rule file)."""
    from mappings.bms.params import load_table

    table = load_table(family)
    resource = resources.files("mappings.bms").joinpath("rules").joinpath(f"{family}.toml")
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RuleSet(family, ())
    return parse_rules(text, table, f"mappings/bms/rules/{family}.toml")


def _at_default(spec: ParamSpec, value: float | None) -> bool:
    """The value is the manual's own factory default (never warned about: the vendor ships it)."""
    return value is not None and spec.default is not None and abs(value - spec.default) <= EPSILON


def _range_checks(spec: ParamSpec, value: float) -> list[Violation]:
    try:
        spec.validate(value)
    except ParameterValueError as err:
        return [Violation("set_range", Severity.REFUSE, (spec.name,), str(err), "the manual's Set Range")]
    if (
        spec.rec_min is not None
        and spec.rec_max is not None
        and not _at_default(spec, value)
        and not spec.rec_min - EPSILON <= value <= spec.rec_max + EPSILON
    ):
        return [
            Violation(
                "recommended_range",
                Severity.WARN,
                (spec.name,),
                f"{spec.name}: {_fmt(value, spec.unit)} is outside the recommended range "
                f"{spec.rec_min:g}..{spec.rec_max:g} {spec.unit}",
                "the manual's unit column (PARAM page, 4.4.2)",
            )
        ]
    return []


def check(
    table: ParameterTable,
    current: Mapping[str, float],
    change: Mapping[str, float],
    *,
    cells: int | None,
    rules: RuleSet | None = None,
) -> Verdict:
    """The rules broken by the table `current` (by name) once `change` (by name) is applied.

    `cells`: the pack's cell count (None: unknown, the `times = "cells"` rules are skipped)."""
    ruleset = load_rules(table.family) if rules is None else rules
    merged = {**current, **change}
    violations: list[Violation] = []
    for name, value in change.items():
        if name in table:
            violations.extend(_range_checks(table.get(name), value))
    skipped: list[str] = []
    for rule in ruleset.rules:
        left, right = table.by_id[rule.left], table.by_id[rule.right]
        involved = left.name in change or right.name in change
        a, b = merged.get(left.name), merged.get(right.name)
        if rule.severity is not Severity.REFUSE and (
            not involved or (_at_default(left, a) and _at_default(right, b))
        ):
            continue
        factor = 1.0
        if rule.times == "cells":
            if not cells:
                skipped.append(rule.id)
                continue
            factor = float(cells)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            skipped.append(rule.id)
            continue
        if _OPS[rule.op](a, b * factor):
            continue
        shown_b = (
            _fmt(b, right.unit) if factor == 1.0 else f"{b:g} × {cells} = {_fmt(b * factor, right.unit)}"
        )
        violations.append(
            Violation(
                rule.id,
                rule.severity,
                (left.name, right.name),
                f"rule {rule.id}: {rule.formula(table)} is broken ({left.name} = {_fmt(a, left.unit)}, "
                f"{right.name} = {shown_b}): {rule.text}",
                rule.source,
            )
        )
    return Verdict(tuple(violations), tuple(skipped))


def markdown_rules(family: str) -> str:
    """The family's rules as a Markdown table (for docs/parameters.md)."""
    from mappings.bms.params import load_table

    table = load_table(family)
    lines = ["| Rule | Check | Severity | Meaning | Source |", "|---|---|---|---|---|"]
    for r in load_rules(family).rules:
        lines.append(
            f"| {r.id} | `{r.formula(table)}` | {r.severity.value} | {r.text.replace('|', '/')} | "
            f"{r.source.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"
