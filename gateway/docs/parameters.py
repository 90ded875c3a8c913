"""`docs/parameters.md`, generated from the parameter tables (`mappings/bms/params.py`) and their
relational rules (`mappings/bms/rules.py`), which stay data and loaders; regenerate with
`.venv/bin/python -m gateway.docs.parameters > docs/parameters.md` (a test checks that the file is in
sync).

This module only renders text; it never performs I/O other than reading the packaged files.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

from mappings.bms.params import ParameterTable, ParamSpec, format_number, load_table
from mappings.bms.rules import load_rules

_DECIMAL_WIRE_KEYS = ("field", "index", "position")


def markdown_table(table: ParameterTable) -> str:
    """The table as a Markdown table for `docs/parameters.md` (kept in sync by a test)."""

    def num(value: float | None) -> str:
        return "" if value is None else format_number(value)

    def wire(spec: ParamSpec) -> str:
        return ", ".join(
            f"{k}=0x{v:02X}" if isinstance(v, int) and k not in _DECIMAL_WIRE_KEYS else f"{k}={v}"
            for k, v in spec.wire.items()
        )

    lines = [
        "| Name | Tool label | Section | Group | Unit | Set range | Recommended | Default | Access | Flags "
        "| Wire | Note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in table:
        rng = p.range_text().replace("|", "/")
        rec = "" if p.rec_min is None else f"{num(p.rec_min)}..{num(p.rec_max)}"
        if p.tolerance is not None:
            rec = f"{rec} (±{num(p.tolerance)})".strip()
        flags = ", ".join(f for f, on in (("inferred", p.inferred), ("dangerous", p.dangerous)) if on)
        note = (p.note or "").replace("|", "/")
        if p.choices:
            note = "; ".join(f"{c.value} = {c.meaning}" for c in p.choices) + (f". {note}" if note else "")
        lines.append(
            f"| {p.name} | {p.label} | {p.section or ''} | {p.group.value} | {p.unit} | {rng} | {rec} | "
            f"{num(p.default)} | {p.access.value} | {flags} | {wire(p)} | {note} |"
        )
    return "\n".join(lines) + "\n"


def markdown_rules(family: str) -> str:
    """The family's rules as a Markdown table (for docs/parameters.md)."""
    table = load_table(family)
    lines = ["| Rule | Check | Severity | Meaning | Source |", "|---|---|---|---|---|"]
    for r in load_rules(family).rules:
        lines.append(
            f"| {r.id} | `{r.formula(table)}` | {r.severity.value} | {r.text.replace('|', '/')} | "
            f"{r.source.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


DOC_HEADER = """# Parameters of the BMS families

Generated from the parameter tables in `mappings/bms/*.toml` (format: `mappings/bms/params.py`);
regenerate with `.venv/bin/python -m gateway.docs.parameters > docs/parameters.md` (a test checks that
this file is in sync). Values are in the display unit; `Set range` is what the vendor tool accepts
(writes outside it are refused before anything reaches a bus), `Recommended` is the range (and
accuracy) printed in the tool's unit column, `Default` the factory default shown in the manual
(blank where no public document shows one). `inferred` marks entries whose write encoding is not
publicly documented: every caller must opt in explicitly (`allow_inferred=True` in the driver, and
both the configuration and the request in the admin API). `Access` is the level needed to write;
reading is always allowed to operators, as in the vendor tool.

## Relational rules

A value inside its Set Range can still leave a BMS unable to protect or to release (an
over-voltage release above its trip, an alarm beyond its protection). Every parameter write, batch
write, import (preview too) and Load Origin is checked on the WHOLE resulting table (the pack's
current values with the change applied) before any byte is sent; a refusal (HTTP 422, CLI exit 4)
names each broken rule with its source. The rules are data, `mappings/bms/rules/<family>.toml`,
checked by `mappings/bms/rules.py`; parameters are named there by their stable `id`.

- `refuse`: an ordering rule (release on the safe side of the trip, alarm before protection,
  over-current level 2 above level 1, full-charge voltage below the trips, pack trip above the
  cells' release × cell count) and the Set Range. Never overridden.
- `warn`: a changed value outside the manual's recommended range (the unit column, e.g.
  `mS(500-3000mS)`), and the rules marked warn below. Refused unless the request says
  `"force": true` (CLI `--force`, admin role); the override is listed in the report and audited.
  A value at the manual's own factory default is never warned about (the manual ships delays outside
  its recommended ranges: `CHG_OC1_Delay` 5000 ms for 100..1500 ms).
- `note`: reported with the result, never blocks (a pack trip the cell trips make unreachable).

Warnings and notes only concern rules that involve a changed parameter; refusals concern the whole
table. A rule with an operand not known (never read; the cell count before the first realtime read)
is skipped, never guessed. The cell count is the number of cell voltages the pack reports.

The manual's alarm table shows `CHG_OT_STOP` 65 °C above `CHG_OT_START` 60 °C, a release above the
trip. That screenshot comes from a test firmware (`V1.0.4-T`, another board than the other pages),
and 65 °C is exactly the protection's `CHG_OT_START`: the alarm band ends where the protection takes
over. An alarm switches nothing, so a release on the wrong side makes it chatter but leaves the pack
protected: the hysteresis direction of the Tianpower temperature ALARMS is a warning (and passes at
the factory values), while the protection hysteresis and the alarm-before-protection orderings
(alarm 60 °C < protection 65 °C holds) are refusals. The factory defaults of the manual pass every
rule (a test checks it, with the simulator's values for the entries the manual does not show); PACE
publishes no defaults, the simulator's typical 16S values stand in.
"""


def render_document(families: Iterable[str] | None = None) -> str:
    """The whole `docs/parameters.md`: one section per packaged table."""
    if families is None:
        names = sorted(
            p.name.removesuffix(".toml")
            for p in resources.files("mappings.bms").iterdir()
            if p.name.endswith(".toml")
        )
    else:
        names = list(families)
    parts = [DOC_HEADER]
    for name in names:
        table = load_table(name)
        parts.append(f"\n## {name} ({len(table)} parameters)\n\n")
        parts.append(markdown_table(table))
        count = len(load_rules(name).rules)
        if count:
            parts.append(f"\n### {name}: relational rules ({count})\n\n")
            parts.append(markdown_rules(name))
    return "".join(parts)


if __name__ == "__main__":
    print(render_document(), end="")
