"""The relational parameter rules (mappings/bms/rules.py + mappings/bms/rules/*.toml), pure: the
manual's defaults pass, each kind of rule fires on the values that break it, and the rule files are
validated against their parameter tables."""

from __future__ import annotations

import pytest

from mappings.bms.params import ParameterTableError, load_table
from mappings.bms.rules import Severity, check, load_rules, parse_rules
from simulator import pace_model, tp_model

TP = load_table("tianpower")
PACE = load_table("pace")
TP_DEFAULTS = {p.name: p.default for p in TP if p.default is not None}


def names(verdict_violations: tuple[object, ...]) -> list[str]:
    return [v.rule for v in verdict_violations]  # type: ignore[attr-defined]


def test_the_manuals_defaults_pass_as_a_table_and_as_a_write() -> None:
    # as the pack's current table, and written whole (Load Origin): nothing refused, nothing warned
    full = {**TP_DEFAULTS, **tp_model.SIMULATOR_DEFAULTS}
    assert check(TP, full, {}, cells=16).violations == ()
    assert check(TP, {}, full, cells=16).violations == ()
    assert check(TP, {}, TP_DEFAULTS, cells=16).violations == ()


def test_pace_typical_values_pass() -> None:
    # PACE publishes no defaults: the simulator's typical 16S values stand in
    assert check(PACE, pace_model.DEFAULTS, {}, cells=16).violations == ()
    assert check(PACE, {}, pace_model.DEFAULTS, cells=16).violations == ()


def test_release_above_the_trip_is_refused_on_the_whole_table() -> None:
    current = {**TP_DEFAULTS, "CELL_OV_Start": 3.651}
    assert check(TP, TP_DEFAULTS, {"CELL_OV_Start": 3.651}, cells=16).violations == ()
    verdict = check(TP, current, {"CELL_OV_Stop": 3.8}, cells=16)
    assert names(verdict.refusals)[0] == "prot.cell_ov.release_below_trip"
    assert "CELL_OV_Stop = 3.8 V" in verdict.refusals[0].message
    # 16 cells released only at 3.8 V = 60.8 V: the pack trip at 58.4 V fires on healthy cells too
    assert "pack_ov.above_cell_release" in names(verdict.refusals)
    assert verdict.blocked(force=True) == verdict.refusals  # force never overrides an ordering


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"CELL_UV_Stop": 2.6}, "prot.cell_uv.release_above_trip"),
        ({"CELL_OV_Start_Alarm": 3.75}, "alarm.cell_ov.before_protection"),
        ({"CELL_UV_Start_Alarm": 2.6}, "alarm.cell_uv.before_protection"),
        ({"PACK_UV_Start_Alarm": 43.0}, "alarm.pack_uv.before_protection"),
        ({"CHG_OC_Start_Alarm": 115}, "alarm.chg_oc.before_protection"),
        ({"CHG_OT_START_Alarm": 66}, "alarm.chg_ot.before_protection"),
        ({"CHG_UT_START_Alarm": -6}, "alarm.chg_ut.before_protection"),
        ({"DISC_OC2_Start": 120}, "disc_oc.level2_above_level1"),
        ({"CHG_UT_STOP": -10}, "prot.chg_ut.release_above_trip"),
        ({"MOS_OT_STOP": 115}, "prot.mos_ot.release_below_trip"),
        ({"Const_Pack_V": 58.5}, "charge_voltage.below_pack_ov"),
        ({"PACK_OV_Start": 53.0}, "pack_ov.above_cell_release"),
    ],
)
def test_each_kind_of_ordering_rule_refuses(change: dict[str, float], rule: str) -> None:
    verdict = check(TP, TP_DEFAULTS, change, cells=16)
    assert rule in names(verdict.refusals), [v.message for v in verdict.violations]


def test_recommended_ranges_warn_and_force_overrides_only_them() -> None:
    verdict = check(TP, TP_DEFAULTS, {"CELL_OV_Delay": 4000}, cells=16)
    assert names(verdict.warnings) == ["recommended_range"] and verdict.refusals == ()
    assert verdict.blocked(force=False) and verdict.blocked(force=True) == ()
    # a value at the manual's own default is never warned about (CHG_OC1_Delay 5000 ms vs 100..1500)
    assert check(TP, TP_DEFAULTS, {"CHG_OC1_Delay": 5000}, cells=16).violations == ()
    # the set range is refused
    assert names(check(TP, TP_DEFAULTS, {"CELL_OV_Delay": 70000}, cells=16).refusals) == ["set_range"]


def test_temperature_alarm_hysteresis_is_a_warning_because_the_manual_breaks_it() -> None:
    # the manual's alarm table: CHG_OT_START 60, CHG_OT_STOP 65 -> passes at the factory values
    assert TP.get("CHG_OT_STOP_Alarm").default == 65 and TP.get("CHG_OT_START_Alarm").default == 60
    verdict = check(TP, TP_DEFAULTS, {"CHG_OT_START_Alarm": 58}, cells=16)
    assert names(verdict.warnings) == ["alarm.chg_ot.release_below_trip"] and verdict.refusals == ()
    # while the protection hysteresis is an ordering rule
    assert names(check(TP, TP_DEFAULTS, {"CHG_OT_STOP": 66}, cells=16).refusals) == [
        "prot.chg_ot.release_below_trip"
    ]


def test_pack_limits_follow_the_cell_count() -> None:
    # lowering the cell trip leaves the pack trip unreachable: a note, never blocking
    verdict = check(TP, TP_DEFAULTS, {"CELL_OV_Start": 3.6}, cells=16)
    assert names(verdict.notes) == ["pack_ov.reachable"] and not verdict.blocked(force=False)
    # a pack trip below every cell's release (16S pack, 15S-style threshold) is refused
    low = check(TP, TP_DEFAULTS, {"PACK_OV_Start": 53.5}, cells=16)
    assert {"charge_voltage.below_pack_ov", "pack_ov.above_cell_release"} <= set(names(low.refusals))
    # the same table on a pack of unknown cell count: those rules are skipped, not guessed
    unknown = check(TP, TP_DEFAULTS, {"PACK_OV_Start": 53.5}, cells=None)
    assert "pack_ov.above_cell_release" in unknown.skipped
    assert "pack_ov.above_cell_release" not in names(unknown.refusals)


def test_unknown_operands_are_skipped() -> None:
    verdict = check(TP, {}, {"CELL_OV_Stop": 3.8}, cells=16)
    assert verdict.violations == () and "prot.cell_ov.release_below_trip" in verdict.skipped


def test_every_rule_names_its_source_and_the_files_are_validated() -> None:
    for family in ("tianpower", "pace"):
        rules = load_rules(family).rules
        assert rules and all(r.source and r.text for r in rules)
        assert {r.severity for r in rules} <= set(Severity)
    bad = 'family = "tianpower"\n[[rule]]\nid = "x"\nleft = "prot.nope"\nop = "<"\n'
    bad += 'right = "prot.cell_ov_start"\n'
    bad += 'severity = "refuse"\ntext = "t"\nsource = "s"\n'
    with pytest.raises(ParameterTableError, match=r"unknown parameter id 'prot.nope'"):
        parse_rules(bad, TP)
    units = bad.replace("prot.nope", "prot.cell_ov_delay")
    with pytest.raises(ParameterTableError, match="compares"):
        parse_rules(units, TP)
