"""Parameter files (JSON, CSV, XML with the vendor tool's columns) and the config-file protocol edit."""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from gateway.app.config import ConfigError, load_config
from gateway.ops.admin import transfer
from gateway.ops.admin.config_file import set_protocols
from mappings.bms.params import ParamSpec, load_table

TP = load_table("tianpower")
PACE = load_table("pace")


def on_grid(spec: ParamSpec) -> st.SearchStrategy[float]:
    if spec.choices:
        return st.sampled_from([float(c.value) for c in spec.choices])
    lo, hi = spec.to_wire(spec.min), spec.to_wire(spec.max)
    return (
        st.integers(min(lo, hi), max(lo, hi)).map(spec.from_wire).filter(lambda v: spec.min <= v <= spec.max)
    )


@st.composite
def table_values(draw: st.DrawFn, family: str) -> dict[str, float]:
    table = TP if family == "tianpower" else PACE
    names = draw(st.lists(st.sampled_from([p.name for p in table]), min_size=1, max_size=12, unique=True))
    return {n: draw(on_grid(table.get(n))) for n in names}


@settings(max_examples=80, deadline=None)
@given(
    family=st.sampled_from(["tianpower", "pace"]),
    fmt=st.sampled_from(transfer.FORMATS),
    per_pack=st.booleans(),
    data=st.data(),
)
def test_render_parse_round_trip_is_lossless(
    family: str, fmt: str, per_pack: bool, data: st.DataObject
) -> None:
    table = TP if family == "tianpower" else PACE
    values = data.draw(table_values(family))
    blob = transfer.render_file(fmt, table, values, {"pack": "sim/1", "family": family}, per_pack=per_pack)
    pairs = transfer.parse_file(blob)  # the format is recognised from the content
    parsed, problems = transfer.validate_rows(table, pairs, per_pack=per_pack)
    assert problems == []
    expected = {n: v for n, v in values.items() if per_pack or not table.get(n).per_pack}
    if not expected:
        return
    assert parsed == pytest.approx(expected, abs=1e-9)
    assert transfer.diff(table, expected, parsed) == []
    if fmt != "xlsx":
        assert transfer.detect_format(blob.decode()) == fmt


def test_per_pack_state_is_left_out_of_exports_and_skipped_on_import_unless_asked() -> None:
    """Issue 17 defect 4: cloning pack 1's file onto pack 2 overwrote pack 2's remaining capacity."""
    values = {"CELL_OV_Start": 3.7, "Set_Remaining_capacity": 64.04, "Set_Full_charge_capacity": 99.39}
    for fmt in transfer.FORMATS:
        plain = transfer.parse_file(transfer.render_file(fmt, TP, values, {}))
        assert [n for n, _ in plain] == ["CELL_OV_Start"], fmt
        full = transfer.parse_file(transfer.render_file(fmt, TP, values, {}, per_pack=True))
        assert {n for n, _ in full} == set(values), fmt
        # a file that carries them (an older export, a hand-made one): skipped and reported
        got, problems = transfer.validate_rows(TP, full, per_pack=False)
        assert got == {"CELL_OV_Start": 3.7} and problems == []
        assert [r.name for r in transfer.per_pack_rows(TP, full)] == [
            "Set_Full_charge_capacity",
            "Set_Remaining_capacity",
        ]
        got, _ = transfer.validate_rows(TP, full, per_pack=True)
        assert got == values


def test_xlsx_is_a_workbook_with_the_vendor_columns_and_text_data() -> None:
    import io

    import openpyxl

    blob = transfer.render_file(
        "xlsx", TP, {"CELL_OV_Start": 3.7, "CELL_OV_Delay": 1000.0}, {"pack": "sim/1"}
    )
    ws = openpyxl.load_workbook(io.BytesIO(blob))["Parameters"]
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    assert rows[0] == ["No.", "Name", "Data", "Unit", "Set Range"]
    assert rows[1] == [1, "CELL_OV_Start", "3.700", "V", "1/6"]
    with pytest.raises(transfer.ImportFormatError, match="XLSX"):
        transfer.parse_file(transfer.XLSX_MAGIC + b"garbage")


def test_format_from_the_file_name() -> None:
    assert [
        transfer.format_of_name(n) for n in ("p1.json", "P1.XLSX", "a.b.csv", "x.xml", "p1", "p.txt")
    ] == [
        "json",
        "xlsx",
        "csv",
        "xml",
        None,
        None,
    ]


def test_vendor_columns_in_every_format() -> None:
    values = {"CELL_OV_Start": 3.7, "CELL_OV_Delay": 1000.0, "LC_Style": 4.0}
    csv_text = transfer.render("csv", TP, values, {})
    assert csv_text.splitlines()[:2] == ["No.,Name,Data,Unit,Set Range", "1,CELL_OV_Start,3.700,V,1/6"]
    root = ET.fromstring(transfer.render("xml", TP, values, {"pack": "sim/1"}))
    row = root.find("Row")
    assert row is not None and [c.tag for c in row] == ["No", "Name", "Data", "Unit", "SetRange"]
    assert root.get("pack") == "sim/1" and row.findtext("SetRange") == "1/6"
    doc = transfer.render("json", TP, values, {})
    assert '"Set Range": "0/10"' in doc and '"columns"' in doc


def test_import_reports_every_problem_with_its_row() -> None:
    text = (
        "No.,Name,Data,Unit,Set Range\n1,CELL_OV_Start,7,V,1/6\n2,Nope,1,,\n3,LC_Style,2,,\n"
        "4,CELL_OV_Stop,x,V,\n5,CELL_OV_Start,3.6,V,\n"
    )
    values, problems = transfer.validate_rows(TP, transfer.parse(text))
    assert values == {}
    assert [(p.row, p.name) for p in problems] == [
        (1, "CELL_OV_Start"),
        (2, "Nope"),
        (3, "LC_Style"),
        (4, "CELL_OV_Stop"),
        (5, "CELL_OV_Start"),
    ]
    assert "outside the allowed range 1..6 V" in problems[0].message
    assert "allowed values: 0 = unlimited" in problems[2].message
    assert "appears more than once" in problems[4].message


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("", "csv", "empty file"),
        ("a,b\n1,2\n", "csv", "Name and Data"),
        ("{", "json", "not valid JSON"),
        ('{"parameters": 3}', "json", '"parameters" list'),
        ("<x><Row><Name>A</Name></Row>", "xml", "not valid XML"),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>', "xml", "document type"),
        ("<x/>", "xml", "no <Row>"),
    ],
)
def test_unreadable_files_are_refused_clearly(text: str, fmt: str, message: str) -> None:
    with pytest.raises(transfer.ImportFormatError, match=message):
        transfer.parse(text, fmt)


def test_diff_shows_exactly_the_changed_rows() -> None:
    current = {"CELL_OV_Start": 3.7, "CELL_OV_Stop": 3.38, "LC_Style": 4.0}
    new = {"CELL_OV_Start": 3.7004, "CELL_OV_Stop": 3.40, "LC_Style": 4.0, "Sleep_Time": 30.0}
    rows = transfer.diff(TP, current, new)
    assert [(r.name, r.current, r.new) for r in rows] == [
        ("CELL_OV_Stop", 3.38, 3.4),
        ("Sleep_Time", None, 30.0),
    ]


CONFIG = """\
# site A
state_dir = "state"

[can]
enabled = true  # inverter on can0
protocol = "pylon"  # Pylontech by default

[modbus]
listen = "127.0.0.1:5020"
"""


def test_config_file_protocols_keep_comments_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    set_protocols(path, {"can": "victron", "rs485": "byd-modbus"})
    text = path.read_text()
    assert text.startswith("# site A\n")
    assert 'protocol = "victron"  # Pylontech by default' in text
    assert "enabled = true  # inverter on can0" in text
    assert tomllib.loads(text)["inverter_rs485"] == {"protocol": "byd-modbus"}
    assert load_config(path).can.protocol == "victron"
    assert path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(ConfigError, match=r"inverter_rs485\.protocol"):
        set_protocols(path, {"rs485": "nonsense"})
    assert path.read_text() == text  # a refused change leaves the file as it was
    path.write_text("can = 3\n")
    with pytest.raises(ConfigError, match="not a table"):
        set_protocols(path, {"can": "sma"})


def test_config_file_protocols_in_inline_and_dotted_tables(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '# top\ncan = { enabled = false, protocol = "pylon" }  # inline\n'
        'inverter_rs485.protocol = "pylon-rs485"  # dotted\n'
    )
    set_protocols(path, {"can": "sma", "rs485": "byd-modbus"})
    assert path.read_text() == (
        '# top\ncan = { enabled = false, protocol = "sma" }  # inline\n'
        'inverter_rs485.protocol = "byd-modbus"  # dotted\n'
    )
