"""`docs/parameters.md`, generated from the parameter tables (`mappings/bms/params.py`) and their
relational rules (`mappings/bms/rules.py`): `.venv/bin/python -m mappings.bms.document > docs/parameters.md`
(a test checks that the file is in sync).

This module only renders text; it never performs I/O other than reading the packaged files.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

from mappings.bms.params import load_table, markdown_table
from mappings.bms.rules import load_rules, markdown_rules

DOC_HEADER = """# Parameters of the BMS families

Generated from the parameter tables in `mappings/bms/*.toml` (format: `mappings/bms/params.py`);
regenerate with `.venv/bin/python -m mappings.bms.document > docs/parameters.md` (a test checks that
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
