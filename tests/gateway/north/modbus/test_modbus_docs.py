"""The published register tables are generated from the maps and can never drift from them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.north.modbus.docs import render_csv, render_markdown
from mappings.modbus import load_native_map
from tests.support import REPO

DOCS = REPO / "docs"


def test_committed_tables_equal_the_generated_ones() -> None:
    assert (DOCS / "modbus-registers.md").read_text(encoding="utf-8") == render_markdown()
    assert (DOCS / "modbus-registers.csv").read_text(encoding="utf-8") == render_csv()


def test_csv_lists_every_native_point_with_its_address() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv())))
    native = {(r["block"], r["name"]): r for r in rows if r["map"] == "native"}
    nmap = load_native_map()
    for block in (nmap.bank, nmap.control):
        for p in block.block.points:
            assert native[(block.name, p.name)]["address"] == str(block.start + p.offset)
    assert native[("pack n", "cell_voltage_v_1")]["address"] == "1036 + (n-1) x 128"
    assert native[("control", "max_charge_current_a")]["access"] == "RW"
    assert native[("bank", "voltage_v")]["scale"] == "10^-2"
    sunspec = [r for r in rows if r["map"] == "sunspec" and r["block"] == "802"]
    assert {r["name"] for r in sunspec if r["access"] == "RW"} == {
        "SocRsvMax",
        "SoCRsvMin",
        "CtrlHb",
        "AlmRst",
        "SetOp",
    }


def test_modbus_docs_command_writes_and_checks(tmp_path: Path) -> None:
    assert main(["modbus-docs", "--check", "--out", str(tmp_path)]) == 1
    assert main(["modbus-docs", "--out", str(tmp_path)]) == 0
    assert main(["modbus-docs", "--check", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "modbus-registers.csv").read_text(encoding="utf-8") == render_csv()


def test_an_out_that_is_a_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "gw.toml"
    taken.write_text("[modbus]\n")
    assert main(["modbus-docs", "--out", str(taken)]) == 2
    assert f"bms-gateway modbus-docs: cannot write into {taken}:" in capsys.readouterr().err
    assert taken.read_text() == "[modbus]\n"  # nothing was overwritten
