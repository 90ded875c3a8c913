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


@settings(max_examples=60, deadline=None)
@given(family=st.sampled_from(["tianpower", "pace"]), fmt=st.sampled_from(transfer.FORMATS), data=st.data())
def test_render_parse_round_trip_is_lossless(family: str, fmt: str, data: st.DataObject) -> None:
    table = TP if family == "tianpower" else PACE
    values = data.draw(table_values(family))
    text = transfer.render(fmt, table, values, {"pack": "sim/1", "family": family})
    parsed, problems = transfer.validate_rows(table, transfer.parse(text))
    assert problems == []
    assert parsed == pytest.approx(values, abs=1e-9)
    assert transfer.diff(table, values, parsed) == []
    assert transfer.detect_format(text) == fmt


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
