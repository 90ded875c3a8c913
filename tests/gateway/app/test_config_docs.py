"""docs/configuration.md's key tables are generated from the configuration schema and cannot drift
(issue 17, defect 15: a regular expression fragment and "orcurrentor" had slipped into cells)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gateway.app.config import Config
from gateway.app.config_docs import BEGIN, END, attribute_docs, cell, render, sections

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "configuration.md"


def generated_part(text: str) -> str:
    return text[text.index(BEGIN) : text.index(END) + len(END) + 1]


def test_the_committed_tables_are_the_generated_ones() -> None:
    assert generated_part(DOC.read_text(encoding="utf-8")) == render(), (
        "docs/configuration.md is out of date: run `bms-gateway config docs --write docs/configuration.md`"
    )


def test_every_row_has_four_cells_and_every_key_a_meaning() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) == 4, row
        assert cells[3].strip(), f"no meaning: {row}"
    keys = {m.group(1) for row in rows if (m := re.match(r"\| `(\w+)`", row))}
    for _heading, model in sections():
        docs = attribute_docs(model)
        for name in model.model_fields:
            if model is Config and name != "state_dir" and name != "log_level":
                continue
            assert name in keys and docs.get(name), name
    assert "orcurrentor" not in render()
    assert "pre-flight: the magnitude of the pack's current at most this" in render()


def test_cells_escape_pipes_and_join_lines() -> None:
    assert cell("|current|\n at most") == "\\|current\\| at most"


def test_the_command_prints_the_same() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("bms-gateway")), "config", "docs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == render()
