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
        "Cell_OV_Alarm",
        "Charge_OT_Alarm",
        "State_of_Charge_Low_Alarm",
    }
    assert "Cell_OVP_Release" in {p.name for p in table.in_group(Group.PROTECTION)}
    assert "Balance_Threshold" in {p.name for p in table.in_group(Group.OTHER)}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"~25004600F010010E100E740D340AFA35\r",
            {"Cell_OV_Alarm": 3.6, "Cell_OVP_Release": 3.38, "Cell_OVP_Delay_Time": 1000},
        ),
        (
            b"~25004600400C009604009604FB32\r",
            {"Discharge_OC_2_Protect": 150, "Discharge_OC_2_Delay_Time": 100},
        ),
        (b"~25004600E0020CFD25\r", {"Short_Circuit_Delay_Time": 300}),
        (
            b"~25004600501A010AAA0A780AAA0A1409E20A14F7E5\r",
            {"Charge_UT_Alarm": 0.0, "Charge_UT_Protect": -5.0, "Discharge_UT_Protect": -20.0},
        ),
        (b"~2500460080080C1C0005FBF3\r", {"Sleep_V_Cell": 3.1, "Sleep_Delay_Time": 5}),
        (
            b"~25004600600ADAC007D005FB60\r",
            {"Pack_Full_Charge_Current": 2000, "State_of_Charge_Low_Alarm": 5},
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
        table.get("Cell_OV_Protect").validate(4.6)
    with pytest.raises(ParameterValueError):
        table.get("Discharge_OC_2_Protect").validate(300)  # PbmsTools offers it, the byte cannot carry it
    assert table.get("Env_OT_Protect").to_wire(70) == 3430


def test_every_name_is_an_identifier_and_the_labels_stay_for_display() -> None:
    """Issue 17 defect 9: PACE names had spaces ("Cell OV Alarm"); they are identifiers now, the
    tool's label is kept for display, and the old name is still accepted on input."""
    from gateway.ops.admin import transfer
    from mappings.bms.params import load_table

    for family in ("pace", "tianpower"):
        for spec in load_table(family):
            assert spec.name.replace("_", "").replace("-", "").isalnum(), spec.name
    table = load_table("pace")
    spec = table.get("Cell_OV_Alarm")
    assert spec.label == "Cell OV Alarm" and "Cell OV Alarm" in spec.aliases
    assert table.get("Cell OV Alarm") is spec and "Cell OV Alarm" in table
    assert table.validate({"Cell OV Alarm": 3.6}) == {"Cell_OV_Alarm": 3.6}
    values, problems = transfer.validate_rows(table, [("Cell OV Alarm", "3.600")])
    assert values == {"Cell_OV_Alarm": 3.6} and problems == []
    _, problems = transfer.validate_rows(table, [("Cell OV Alarm", "3.6"), ("Cell_OV_Alarm", "3.6")])
    assert [p.row for p in problems] == [2]  # the same parameter twice, under its alias and its name
