"""Parameter tables: every packaged table validates; the loader refuses broken tables clearly."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from mappings.bms.document import render_document
from mappings.bms.params import (
    Access,
    Group,
    ParameterTableError,
    ParameterValueError,
    load_table,
    parse_table,
)
from tests.support import REPO

PACKAGED = sorted(
    p.name.removesuffix(".toml")
    for p in resources.files("mappings.bms").iterdir()
    if p.name.endswith(".toml")
)


def test_tianpower_table_is_packaged() -> None:
    assert "tianpower" in PACKAGED


@pytest.mark.parametrize("family", PACKAGED)
def test_packaged_table_validates(family: str) -> None:
    table = load_table(family)
    assert table.family == family
    assert len(table) > 0
    assert len({p.id for p in table}) == len(table)
    assert len({p.name for p in table}) == len(table)
    for p in table:
        if p.default is not None:
            assert p.min <= p.default <= p.max, p.name
            assert p.from_wire(p.to_wire(p.default)) == pytest.approx(p.default), p.name
        assert p.from_wire(p.to_wire(p.min)) == pytest.approx(p.min)
        assert p.from_wire(p.to_wire(p.max)) == pytest.approx(p.max)


def test_tianpower_table_content() -> None:
    t = load_table("tianpower")
    prot = t.where_wire(table=0xE0)
    alarm = t.where_wire(table=0x00)
    assert len(prot) == 51
    assert len(alarm) == 43
    assert sorted(p.wire["record"] for p in prot) == list(range(51))
    assert sorted(p.wire["record"] for p in alarm) == list(range(43))
    assert all(p.inferred for p in prot + alarm)  # table writes are undocumented
    ov = t.get("CELL_OV_Start")
    assert (ov.group, ov.unit, ov.min, ov.max, ov.default) == (Group.PROTECTION, "V", 1.0, 6.0, 3.70)
    assert ov.access is Access.ADMINISTRATOR
    assert ov.to_wire(3.65) == 3650 and ov.from_wire(3650) == 3.65
    delay = t.get("CELL_OV_Delay")
    assert (delay.rec_min, delay.rec_max, delay.min, delay.max) == (500, 3000, 50, 65000)
    ut = t.get("CHG_UT_START")
    assert ut.default == -5 and ut.to_wire(-5) == 45 and ut.from_wire(0) == -50
    assert t.get("PACK_UV_Start").from_wire(4320) == 43.2
    alarm_ov = t.get("CELL_OV_Start_Alarm")
    assert alarm_ov.label == "CELL_OV_Start" and alarm_ov.default == 3.55 and alarm_ov.group is Group.ALARM
    lc = t.get("LC_Style")
    assert [c.value for c in lc.choices] == [0, 3, 4, 5, 10] and lc.default == 4


def test_lc_style_accepts_only_documented_modes() -> None:
    lc = load_table("tianpower").get("LC_Style")
    for ok in (0, 3, 4, 5, 10):
        assert lc.to_wire(ok) == ok
    for bad in (1, 2, 6, 9, 4.5, 11):
        with pytest.raises(ParameterValueError, match=r"LC_Style.*allowed values: 0 = "):
            lc.validate(bad)


def test_validate_names_parameter_value_and_range() -> None:
    t = load_table("tianpower")
    with pytest.raises(ParameterValueError) as info:
        t.get("CELL_OV_Start").validate(7.2)
    assert str(info.value) == "CELL_OV_Start: 7.2 V is outside the allowed range 1..6 V"
    assert info.value.name == "CELL_OV_Start" and info.value.value == 7.2
    for bad in (True, "3.6", float("nan"), None):
        with pytest.raises(ParameterValueError, match="CELL_OV_Start"):
            t.get("CELL_OV_Start").validate(bad)
    with pytest.raises(ParameterValueError, match="unknown parameter 'NOPE'"):
        t.validate({"NOPE": 1})
    assert t.validate({"CELL_OV_Start": 3.6, "LC_Style": 10}) == {"CELL_OV_Start": 3.6, "LC_Style": 10.0}


ENTRY = """
[[param]]
id = "a"
name = "A"
group = "protection"
unit = "V"
scale = 0.01
min = 1
max = 5
default = 3
access = "operator"
"""


def test_parse_minimal_table_and_defaults_section() -> None:
    t = parse_table('family = "x"\n[defaults]\ndangerous = true\n' + ENTRY)
    a = t.get("A")
    assert a.dangerous and not a.inferred and a.offset == 0 and a.raw_max == 65535


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (ENTRY + ENTRY, "duplicate id 'a'"),
        (ENTRY + ENTRY.replace('id = "a"', 'id = "b"'), "duplicate name 'A'"),
        (ENTRY.replace("scale = 0.01", "scale = 0"), "scale must be non-zero"),
        (ENTRY.replace("default = 3", "default = 9"), "default refused: A: 9 V is outside"),
        (ENTRY.replace("max = 5", "max = 0.5"), "min 1 is greater than max 0.5"),
        (ENTRY.replace("max = 5", "max = 900"), "needs raw 90000, outside the wire field"),
        (ENTRY.replace('group = "protection"', 'group = "misc"'), "'misc' is not a valid Group"),
        (ENTRY.replace('access = "operator"', 'access = "root"'), "'root' is not a valid Access"),
        (ENTRY + "colour = 1\n", "unknown key(s) colour"),
        (ENTRY.replace('unit = "V"\n', ""), "missing key(s) unit"),
        (ENTRY.replace("default = 3", "default = 3.001"), "not on the wire grid"),
        (
            ENTRY.replace("min = 1", "min = 0") + "choices = [{ value = 1, meaning = 'x' }]\n",
            "default refused: A: 3 is not allowed",
        ),
        (ENTRY.replace("default = 3", "default = 3\nrec_min = 2"), "rec_min and rec_max go together"),
    ],
)
def test_broken_tables_are_refused(change: str, message: str) -> None:
    with pytest.raises(ParameterTableError, match=re.escape(message)):
        parse_table('family = "x"\n' + change, "t.toml")


def test_unknown_family_and_bad_toml() -> None:
    with pytest.raises(ParameterTableError, match="no parameter table for family 'nosuch'"):
        load_table("nosuch")
    with pytest.raises(ParameterTableError, match="not valid TOML"):
        parse_table("family = ", "t.toml")
    with pytest.raises(ParameterTableError, match="needs \\[\\[param\\]\\] entries"):
        parse_table('family = "x"\n')


def test_parameters_doc_is_in_sync_with_the_tables() -> None:
    doc = REPO / "docs" / "parameters.md"
    assert doc.read_text(encoding="utf-8") == render_document(), (
        "docs/parameters.md is stale: run .venv/bin/python -m mappings.bms.document > docs/parameters.md"
    )
    assert (
        "| CELL_OV_Start | CELL_OV_Start | CELL_Vol_Protect | protection | V | 1..6 V |" in render_document()
    )
