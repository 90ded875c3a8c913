"""The PACE parameter table: valid, consistent with the codec's group layouts, golden values."""

from __future__ import annotations

import pytest

from mappings.bms.params import Group, ParameterValueError, load_table
from protocol.bms.pace import commands as c
from protocol.bms.pace.frame import parse_frame


def test_table_loads_and_covers_every_group_field_once() -> None:
    table = load_table("pace")
    assert table.family == "pace" and len(table) == 54
    seen: dict[tuple[int, int], str] = {}
    for p in table:
        layout = c.GROUPS_BY_READ[p.wire["read"]]
        assert p.wire["write"] == layout.write
        key = (layout.read, p.wire["field"])
        assert key not in seen, f"{p.name} and {seen.get(key)} share a field"
        seen[key] = p.name
        f = layout.fields[p.wire["field"]]
        if f.kind is c.FieldKind.U8:
            assert p.raw_max <= 255, p.name
        assert not p.inferred and p.default is None
    for layout in c.PARAM_GROUPS:
        for i, f in enumerate(layout.fields):
            if f.name != "reserved":
                assert (layout.read, i) in seen, f"{layout.key}.{f.name} has no table entry"


def test_groups_split_into_protection_alarm_other() -> None:
    table = load_table("pace")
    assert {p.name for p in table.in_group(Group.ALARM)} >= {
        "Cell OV Alarm",
        "Charge OT Alarm",
        "State of Charge Low Alarm",
    }
    assert "Cell OVP Release" in {p.name for p in table.in_group(Group.PROTECTION)}
    assert "Balance Threshold" in {p.name for p in table.in_group(Group.OTHER)}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"~25004600F010010E100E740D340AFA35\r",
            {"Cell OV Alarm": 3.6, "Cell OVP Release": 3.38, "Cell OVP Delay Time": 1000},
        ),
        (
            b"~25004600400C009604009604FB32\r",
            {"Discharge OC 2 Protect": 150, "Discharge OC 2 Delay Time": 100},
        ),
        (b"~25004600E0020CFD25\r", {"Short Circuit Delay Time": 300}),
        (
            b"~25004600501A010AAA0A780AAA0A1409E20A14F7E5\r",
            {"Charge UT Alarm": 0.0, "Charge UT Protect": -5.0, "Discharge UT Protect": -20.0},
        ),
        (b"~2500460080080C1C0005FBF3\r", {"Sleep V-Cell": 3.1, "Sleep Delay Time": 5}),
        (
            b"~25004600600ADAC007D005FB60\r",
            {"Pack Full Charge Current": 2000, "State of Charge Low Alarm": 5},
        ),
    ],
)
def test_golden_answers_through_the_table(answer: bytes, expected: dict[str, float]) -> None:
    table = load_table("pace")
    for name, want in expected.items():
        spec = table.get(name)
        g = c.decode_group_read(spec.wire["read"], parse_frame(answer).info)
        raw = g.values[spec.wire["field"]]
        assert spec.from_wire(raw) == want
        assert spec.to_wire(want) == raw


def test_range_checks() -> None:
    table = load_table("pace")
    with pytest.raises(ParameterValueError, match="outside the allowed range"):
        table.get("Cell OV Protect").validate(4.6)
    with pytest.raises(ParameterValueError):
        table.get("Discharge OC 2 Protect").validate(300)  # PbmsTools offers it, the byte cannot carry it
    assert table.get("Env OT Protect").to_wire(70) == 3430
