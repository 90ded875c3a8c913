"""docs/flags.md, generated: every status bit of every family with its meaning, and the meaning ->
output table. `render()` is pure (a test keeps the committed file equal to it); regenerate with
`python -c "from mappings.flags.docs import render; print(render(), end='')" > docs/flags.md`.

This module reads only the codecs' flag tables and this package's table; it performs no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from mappings.flags import OUTPUTS, load_meanings, load_outputs
from protocol.bms.base import FlagInfo, Meaning
from protocol.bms.pace import values as pace
from protocol.bms.tianpower import realtime as tianpower
from protocol.inverter.flags import PROTECTION, WARNING

HEADER = """# Status flags: meanings and outputs

Generated from the codecs' flag tables and `mappings/flags/outputs.toml`
(`mappings/flags/docs.py`; a test keeps this file equal to it). How the policy and the outputs use
them: [policy.md](policy.md#flag-meanings-data-never-guessed-from-a-name).

Severity: protection, alarm (warning level), fault, state. Blocks: the direction the charge policy
blocks while the flag is set. Level: *protection* when the flag blocks a direction, *warning* for a
problem that blocks nothing, *state* (no output bit). "name only" in a source means no source
describes the bit beyond its name.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _rows(flags: Iterable[tuple[str, FlagInfo]]) -> list[str]:
    out = ["| bit | name | severity | meaning | blocks | source |", "|---|---|---|---|---|---|"]
    for where, f in flags:
        meaning = f"`{f.meaning.value}`"
        out.append(
            f"| {where} | `{f.name}` | {f.kind.value} | {meaning} | {f.blocks.value} | {_cell(f.source)} |"
        )
    return out


def _tianpower() -> list[str]:
    flags = [(f"{f.byte}.{f.bit}", f.info) for f in tianpower.STATUS_FLAGS]
    flags += [(f"0x0A word bit {f.bit}", f.info) for f in tianpower.EXTRA_PROTECTION_FLAGS]
    undocumented = ", ".join(f"`{f.name}`" for f in tianpower.UNDOCUMENTED_FLAGS)
    return [
        "## Tianpower / Basengreen (group 0x06 bytes 0-9, group 0x0A word)",
        "",
        *_rows(flags),
        "",
        f"Every other bit has an explicit entry: severity state, meaning `undocumented`, blocks none "
        f"({tianpower.UNDOCUMENTED_FLAGS[0].source}): {undocumented}.",
        "",
    ]


def _pace() -> list[str]:
    out: list[str] = []
    for variant, table in pace.status_flag_tables().items():
        out += [f"## PACE {variant} status (CID2 0x44)", ""]
        out += _rows((f"{field}.{bit}", f) for field, bits in table.items() for bit, f in enumerate(bits))
        out.append("")
    out += ["## PACE per-item warning values (v25, v20, EG4)", ""]
    out += _rows(("", f) for f in (*pace.warning_value_flags(), pace.BALANCING_FLAG))
    out.append("")
    return out


def _targets(values: Iterable[str]) -> str:
    return ", ".join(f"`{v}`" for v in values) or "–"


def _outputs() -> list[str]:
    outputs = load_outputs()
    meanings = load_meanings()
    head = ["meaning", "label", "native bits", *OUTPUTS]
    out = [
        "## Meaning -> outputs (`mappings/flags/outputs.toml`)",
        "",
        "Each cell: protection-level targets / warning-level targets. Outputs: "
        + "; ".join(f"`{name}` {desc}" for name, (desc, _) in OUTPUTS.items())
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in Meaning:
        row = meanings[m]
        if m.is_state:
            continue
        cells = [
            _targets(outputs[name].table(PROTECTION)[m.value])
            + " / "
            + _targets(outputs[name].table(WARNING)[m.value])
            for name in OUTPUTS
        ]
        native = ", ".join(str(b) for b in row.native_bits)
        out.append(f"| `{m.value}` | {row.label} | {native} | " + " | ".join(cells) + " |")
    states = ", ".join(f"`{m.value}`" for m in Meaning if m.is_state)
    out += ["", f"States (no output bit; MQTT and metrics show only problems): {states}.", ""]
    return out


def render() -> str:
    return "\n".join([HEADER, *_tianpower(), *_pace(), *_outputs()])
