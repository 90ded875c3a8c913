"""The charge policy: one table-driven case per rule with its limiting factor, plus the stateful rules."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app.config import ConfigError, PolicyConfig, parse_config
from gateway.core.controls import CAP_NAMES, Controls, OperationRequest, Source
from gateway.core.model import Availability
from gateway.core.policy.engine import (
    NEUTRAL_FLAGS,
    ChargeDecision,
    Factor,
    PolicyEngine,
    interpolate,
)
from tests.support.can_policy_fixtures import bank, pack, params, telemetry, view

T0 = 1_800_000_000.0
RATED = 2 * 100.0 * 0.9  # two packs x default rating x parallel scale


def evaluate(cfg: PolicyConfig | None = None, controls: Controls | None = None, **kw: Any) -> ChargeDecision:
    engine = PolicyEngine(cfg or PolicyConfig())
    controls = controls or Controls()
    return engine.evaluate(bank(T0, **kw), controls.state(T0), T0)


def with_params(**values: float) -> ChargeDecision:
    v = view([pack(a, telemetry(now=T0), parameters=params(T0, **values)) for a in (1, 2)], T0)
    return PolicyEngine(PolicyConfig()).evaluate(v, Controls().state(T0), T0)


def test_nominal_bank_gets_configured_limits() -> None:
    d = evaluate()
    assert d.has_data and not d.stale
    assert d.charge_current_a == pytest.approx(RATED)
    assert d.discharge_current_a == pytest.approx(RATED)
    assert d.charge_voltage_v == pytest.approx(16 * 3.45)
    assert d.discharge_voltage_v == pytest.approx(16 * 2.90)
    assert d.charge_enabled and d.discharge_enabled
    assert dict(d.limiting) == dict.fromkeys(
        ("charge_voltage_v", "discharge_voltage_v", "charge_current_a", "discharge_current_a"), "configured"
    )
    assert d.bank.packs_online == 2 and d.bank.cells_per_pack == 16
    assert d.bank.soc_pct == pytest.approx(50.0) and d.bank.temp_mean_c == pytest.approx(25.5)


DERATING_CASES = [
    # (telemetry kwargs, value, expected fraction of RATED, expected factor)
    ({"cells": (3.40,) * 16}, "charge_current_a", 0.25, Factor.CELL_VOLTAGE_DERATING),
    ({"cells": (3.30,) * 15 + (3.45,)}, "charge_current_a", 0.005, Factor.CELL_VOLTAGE_DERATING),
    ({"cells": (3.10,) * 16}, "discharge_current_a", 0.25, Factor.CELL_VOLTAGE_DERATING),
    ({"cells": (3.30,) * 15 + (2.80,)}, "discharge_current_a", 0.0, Factor.CELL_VOLTAGE_DERATING),
    ({"cell_temps_c": (2.0, 25.0)}, "charge_current_a", 0.25, Factor.TEMPERATURE_DERATING),
    ({"cell_temps_c": (25.0, 47.5)}, "charge_current_a", 0.375, Factor.TEMPERATURE_DERATING),
    ({"cell_temps_c": (-5.0, 20.0)}, "discharge_current_a", 0.125, Factor.TEMPERATURE_DERATING),
    ({"mos_temp_c": 80.0}, "charge_current_a", 0.25, Factor.MOS_TEMPERATURE_DERATING),
    ({"mos_temp_c": 75.0}, "discharge_current_a", 0.625, Factor.MOS_TEMPERATURE_DERATING),
]


@pytest.mark.parametrize(("kw", "name", "fraction", "factor"), DERATING_CASES)
def test_derating_tables(kw: dict[str, Any], name: str, fraction: float, factor: Factor) -> None:
    d = evaluate(**kw)
    assert getattr(d, name) == pytest.approx(RATED * fraction)
    assert d.limiting[name] == factor.value


def test_worst_derating_wins() -> None:
    d = evaluate(cells=(3.40,) * 16, mos_temp_c=85.0)  # 0.25 (cell) vs 0.125 (MOS)
    assert d.charge_current_a == pytest.approx(RATED * 0.125)
    assert d.limiting["charge_current_a"] == "mos_temperature_derating"


PARAMETER_CASES = [
    ({"CHG_OC1_Start": 50.0}, "charge_current_a", 2 * 45.0 * 0.9),
    ({"DISC_OC1_Start": 60.0}, "discharge_current_a", 2 * 54.0 * 0.9),
    ({"CELL_OV_Start": 3.45}, "charge_voltage_v", 16 * 3.40),
    ({"PACK_OV_Start": 54.0}, "charge_voltage_v", 54.0 - 16 * 0.05),
    ({"CELL_UV_Start": 3.0}, "discharge_voltage_v", 16 * 3.05),
    ({"PACK_UV_Start": 48.0}, "discharge_voltage_v", 48.0 + 16 * 0.05),
]


@pytest.mark.parametrize(("values", "name", "expected"), PARAMETER_CASES)
def test_pack_parameters_limit(values: dict[str, float], name: str, expected: float) -> None:
    d = with_params(**values)
    assert getattr(d, name) == pytest.approx(expected)
    assert d.limiting[name] == "pack_parameter"


def test_parameters_above_the_rating_do_not_raise_limits() -> None:
    d = with_params(CHG_OC1_Start=500.0, CELL_OV_Start=3.65)
    assert d.charge_current_a == pytest.approx(RATED)
    assert d.charge_voltage_v == pytest.approx(16 * 3.45)
    assert d.limiting["charge_current_a"] == "configured"


@pytest.mark.parametrize(("opt_in", "expected"), [(False, RATED), (True, RATED / 2)])
def test_lc_style_is_inferred_and_opt_in(opt_in: bool, expected: float) -> None:
    v = view([pack(a, telemetry(now=T0), parameters=params(T0, LC_Style=3.0)) for a in (1, 2)], T0)
    d = PolicyEngine(PolicyConfig(lc_style_inferred=opt_in)).evaluate(v, Controls().state(T0), T0)
    assert d.charge_current_a == pytest.approx(expected)
    assert d.discharge_current_a == pytest.approx(RATED)


BLOCK_CASES = [
    # (flag name, charge allowed, discharge allowed, decision alarms, decision warnings)
    ("CELL_OV_Prot", False, True, {"cell_overvoltage"}, set()),
    ("PACK_UV_Prot", True, False, {"pack_undervoltage"}, set()),
    ("DISC_OT_Prot", True, False, {"discharge_overtemperature"}, set()),
    ("CHG_UT_Prot", False, True, {"charge_undertemperature"}, set()),
    ("Short_Circuit_Prot", False, False, {"short_circuit"}, set()),
    ("Protection 1 bit 7", False, False, {"undocumented"}, set()),  # unnamed protection bit: fail safe
    ("Fire_fighting_Alarm", False, False, {"fire"}, set()),  # a fault whose table entry blocks both
    ("CHG_MOS_Fault", False, True, {"charge_mos_fault"}, set()),  # the pack cannot stop a charge
    ("Hot_Failure", True, True, set(), {"fan_fault"}),  # a fan failure blocks nothing, is no temperature
    ("NTC_Short_Circuit", True, True, set(), {"ntc_fault"}),  # a sensor fault, not a short circuit
    ("CELL_OV_Alarm", True, True, set(), {"cell_overvoltage"}),
    ("Charging", True, True, set(), set()),  # a state: no output at all
]


@pytest.mark.parametrize(("flag", "charge_ok", "discharge_ok", "alarms", "warnings"), BLOCK_CASES)
def test_a_flag_blocks_what_its_table_entry_says(
    flag: str, charge_ok: bool, discharge_ok: bool, alarms: set[str], warnings: set[str]
) -> None:
    v = view([pack(1, telemetry(now=T0, flags=[flag])), pack(2, telemetry(now=T0))], T0)
    d = PolicyEngine(PolicyConfig()).evaluate(v, Controls().state(T0), T0)
    assert d.charge_enabled is charge_ok and d.discharge_enabled is discharge_ok
    assert d.alarms == alarms and d.warnings == warnings
    for name, ok in (("charge_current_a", charge_ok), ("discharge_current_a", discharge_ok)):
        if ok:
            assert getattr(d, name) > 0
        else:
            assert getattr(d, name) == 0.0
            assert d.limiting[name] == "protection_active"


def test_pack_offline_reduces_the_sum_and_is_named() -> None:
    v = view(
        [
            pack(1, telemetry(now=T0)),
            pack(2, telemetry(now=T0)),
            pack(3, None, availability=Availability.OFFLINE),
        ],
        T0,
    )
    d = PolicyEngine(PolicyConfig()).evaluate(v, Controls().state(T0), T0)
    assert d.charge_current_a == pytest.approx(RATED)
    assert d.limiting["charge_current_a"] == "pack_offline"
    assert d.bank.packs_online == 2 and d.bank.packs_configured == 3
    assert "communication" in d.warnings and not d.alarms


def test_user_caps_from_config() -> None:
    cfg = PolicyConfig(max_charge_current_a=50.0, max_discharge_current_a=70.0, max_charge_voltage_v=54.0)
    d = evaluate(cfg)
    assert (d.charge_current_a, d.discharge_current_a, d.charge_voltage_v) == (50.0, 70.0, 54.0)
    assert {d.limiting[k] for k in ("charge_current_a", "discharge_current_a", "charge_voltage_v")} == {
        "user_cap"
    }


@pytest.mark.parametrize(("source", "factor"), [(Source.EMS, "ems_cap"), (Source.CONFIG, "user_cap")])
def test_caps_from_controls_name_their_source(source: Source, factor: str) -> None:
    controls = Controls()
    controls.set_cap("max_charge_current_a", 40.0, source, now=T0)
    controls.set_cap("min_discharge_voltage_v", 48.0, source, now=T0)
    d = evaluate(controls=controls)
    assert d.charge_current_a == 40.0 and d.limiting["charge_current_a"] == factor
    assert d.discharge_voltage_v == 48.0 and d.limiting["discharge_voltage_v"] == factor


def test_expired_ems_cap_is_ignored() -> None:
    controls = Controls()
    controls.set_cap("max_charge_current_a", 40.0, Source.EMS, timeout_s=5.0, now=T0 - 10.0)
    d = evaluate(controls=controls)
    assert d.charge_current_a == pytest.approx(RATED)


def test_soc_reserve_and_disconnect_block() -> None:
    controls = Controls()
    controls.set_cap("soc_reserve_min_pct", 60.0, Source.EMS, now=T0)
    d = evaluate(controls=controls)  # SOC 50 % <= 60 %
    assert not d.discharge_enabled and d.discharge_current_a == 0.0
    assert d.limiting["discharge_current_a"] == "ems_cap" and d.charge_enabled
    controls.set_cap("soc_reserve_min_pct", None, Source.EMS, now=T0)
    controls.set_cap("soc_reserve_max_pct", 40.0, Source.EMS, now=T0)
    d = evaluate(controls=controls)
    assert not d.charge_enabled and d.discharge_enabled
    controls.set_cap("soc_reserve_max_pct", None, Source.EMS, now=T0)
    controls.set_operation(OperationRequest.DISCONNECT)
    d = evaluate(controls=controls)
    assert not d.charge_enabled and not d.discharge_enabled
    assert d.limiting["charge_current_a"] == d.limiting["discharge_current_a"] == "ems_cap"


def test_soc_band_tables() -> None:
    cfg = PolicyConfig(
        soc_charge_derating=[(90.0, 1.0), (100.0, 0.2)], soc_discharge_derating=[(0.0, 0.0), (20.0, 1.0)]
    )
    d = evaluate(cfg, soc_pct=95.0)
    assert d.charge_current_a == pytest.approx(RATED * 0.6) and d.limiting["charge_current_a"] == "soc_band"
    d = evaluate(cfg, soc_pct=10.0)
    assert (
        d.discharge_current_a == pytest.approx(RATED * 0.5)
        and d.limiting["discharge_current_a"] == "soc_band"
    )


def test_stale_data_blocks_everything_and_keeps_measurements() -> None:
    engine = PolicyEngine(PolicyConfig())
    engine.evaluate(bank(T0, current_a=-30.0), Controls().state(T0), T0)
    d = engine.evaluate(bank(T0, current_a=-30.0), Controls().state(T0 + 11), T0 + 11)  # data 11 s old
    assert d.stale and d.has_data
    assert not d.charge_enabled and not d.discharge_enabled
    assert d.charge_current_a == d.discharge_current_a == 0.0
    assert set(d.limiting.values()) == {"stale_data"}
    assert "communication" in d.alarms and "communication" in d.warnings
    assert d.bank.voltage_v == pytest.approx(16 * 3.30)  # last known, for the protocols' stop encoding
    assert not d.force_charge_1 and not d.full_charge_request


def test_no_data_yet() -> None:
    v = view([pack(1, None, availability=Availability.UNKNOWN)], T0)
    d = PolicyEngine(PolicyConfig()).evaluate(v, Controls().state(T0), T0)
    assert not d.has_data and d.stale and not d.charge_enabled


def test_increases_are_low_pass_filtered_decreases_immediate() -> None:
    engine = PolicyEngine(PolicyConfig(current_rise_time_constant_s=10.0))
    c = Controls().state(T0)
    d0 = engine.evaluate(bank(T0), c, T0)
    d1 = engine.evaluate(bank(T0 + 1, cells=(3.40,) * 16), c, T0 + 1)  # decrease: immediate
    assert d1.charge_current_a == pytest.approx(RATED * 0.25)
    assert d0.charge_current_a == pytest.approx(RATED)
    values = []
    for i in range(2, 60):
        d = engine.evaluate(bank(T0 + i), c, T0 + i)
        values.append((d.charge_current_a, d.limiting["charge_current_a"]))
    assert values[0][1] == "ramp" and RATED * 0.25 < values[0][0] < RATED * 0.4
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(values))  # monotonic rise
    assert values[-1] == (pytest.approx(RATED), "configured")


def test_cvl_lowered_in_steps_never_abruptly_below_the_present_voltage() -> None:
    cfg = PolicyConfig(cvl_step_v=0.1, cvl_step_interval_s=60.0)
    engine = PolicyEngine(cfg)
    controls = Controls()
    d = engine.evaluate(bank(T0), controls.state(T0), T0)  # 55.2 V, bank at 52.8 V
    assert d.charge_voltage_v == pytest.approx(55.2)
    controls.set_cap("max_charge_voltage_v", 52.0, Source.ADMIN, now=T0)
    seen = []
    for i in range(1, 800, 10):
        d = engine.evaluate(bank(T0 + i), controls.state(T0 + i), T0 + i)
        seen.append(round(d.charge_voltage_v, 3))
    # straight down to the present voltage, then 0.1 V per minute down to the cap
    assert seen[0] == pytest.approx(16 * 3.30)  # the present voltage at once
    assert seen[1] == pytest.approx(52.7)  # then the first step
    assert seen[2] == pytest.approx(52.7)  # and nothing more within the step interval
    assert min(seen) == pytest.approx(52.0)
    steps = [a - b for a, b in itertools.pairwise(seen) if a != b]
    assert steps and all(s == pytest.approx(0.1) for s in steps)
    d = engine.evaluate(bank(T0 + 900), controls.state(T0 + 900), T0 + 900)
    assert d.limiting["charge_voltage_v"] == "user_cap"
    controls.set_cap("max_charge_voltage_v", None, Source.ADMIN, now=T0)
    d = engine.evaluate(bank(T0 + 901), controls.state(T0 + 901), T0 + 901)
    assert d.charge_voltage_v == pytest.approx(55.2)  # raising is immediate


def test_force_charge_hysteresis() -> None:
    engine = PolicyEngine(PolicyConfig())
    c = Controls().state(T0)
    results = []
    for i, soc in enumerate([50, 12, 9, 8, 5, 4, 8, 11, 12, 14, 8]):
        d = engine.evaluate(bank(T0 + i, soc_pct=soc), c, T0 + i)
        results.append((soc, d.force_charge_1, d.force_charge_2))
    assert results == [
        (50, False, False),
        (12, False, False),
        (9, False, True),
        (8, False, True),
        (5, True, True),
        (4, True, True),
        (8, True, True),  # FC1 holds until 10 %
        (11, False, True),  # FC2 holds until 13 %
        (12, False, True),
        (14, False, False),
        (8, False, True),
    ]


def test_full_charge_request_after_days_without_97_pct() -> None:
    day = 86400.0
    engine = PolicyEngine(PolicyConfig(full_charge_days=30), last_full_charge_at=T0 - 29 * day)
    c = Controls().state(T0)
    assert not engine.evaluate(bank(T0), c, T0).full_charge_request
    assert engine.evaluate(bank(T0 + day), c, T0 + day).full_charge_request
    assert not engine.evaluate(bank(T0 + day + 1, soc_pct=97.5), c, T0 + day + 1).full_charge_request
    assert not engine.evaluate(bank(T0 + day + 2), c, T0 + day + 2).full_charge_request


def test_every_limit_change_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    engine = PolicyEngine(PolicyConfig())
    c = Controls().state(T0)
    with caplog.at_level(logging.INFO, logger="gateway.core.policy.engine"):
        engine.evaluate(bank(T0), c, T0)
        engine.evaluate(bank(T0 + 1, cells=(3.40,) * 16), c, T0 + 1)
        engine.evaluate(bank(T0 + 2, cells=(3.40,) * 16, protections=["CELL_OV_Prot"]), c, T0 + 2)
    text = caplog.text
    first = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("charge policy: CVL"))
    d = PolicyEngine(PolicyConfig()).evaluate(bank(T0), c, T0)
    assert first == (  # each label next to its own value (LIMIT_NAMES order: CVL, DVL, CCL, DCL)
        f"charge policy: CVL {d.charge_voltage_v:.1f} V ({d.limiting['charge_voltage_v']}), "
        f"DVL {d.discharge_voltage_v:.1f} V ({d.limiting['discharge_voltage_v']}), "
        f"CCL {d.charge_current_a:.1f} A ({d.limiting['charge_current_a']}), "
        f"DCL {d.discharge_current_a:.1f} A ({d.limiting['discharge_current_a']})"
    )
    assert "charge_current_a 180.0 -> 45.0 (limited by cell_voltage_derating)" in text
    assert "charge_current_a 45.0 -> 0.0 (limited by protection_active)" in text
    assert "charge_enabled -> False" in text


def test_interpolate() -> None:
    table = [(0.0, 0.0), (10.0, 1.0)]
    assert [interpolate(table, x) for x in (-5, 0, 2.5, 10, 20)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert interpolate([], 5.0) == 1.0


@pytest.mark.parametrize(
    "section",
    [
        {"temperature_charge_derating": [[10, 1.0], [5, 0.5]]},
        {"mos_temperature_derating": [[70, 1.5]]},
        {"force_charge_1_start_soc_pct": 10, "force_charge_1_stop_soc_pct": 5},
        {"charge_cell_voltage_v": 3.0, "discharge_cell_voltage_v": 3.1},
        {"unknown_key": 1},
    ],
)
def test_bad_policy_config_is_refused_with_a_message(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="policy"):
        parse_config({"policy": section}, env={})


def test_policy_config_from_toml_shape() -> None:
    cfg = parse_config({"policy": {"cell_voltage_charge_derating": [[3.4, 1.0], [3.5, 0.0]]}}, env={}).policy
    assert cfg.cell_voltage_charge_derating == [(3.4, 1.0), (3.5, 0.0)]


FACTORS = {f.value for f in Factor}


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.floats(2.0, 4.0), min_size=4, max_size=24),
    temps=st.lists(st.floats(-40.0, 100.0), min_size=0, max_size=6),
    mos=st.none() | st.floats(-40.0, 150.0),
    soc=st.floats(0.0, 100.0),
    current=st.floats(-500.0, 500.0),
    flags=st.lists(
        st.sampled_from(["CELL_OV_Prot", "DISC_OT_Prot", "Hot_Failure", "Fault bit 3", "SOC_Low_Alarm"]),
        max_size=3,
    ),
    oc=st.none() | st.floats(0.0, 1000.0),
    age=st.floats(0.0, 30.0),
    caps=st.lists(st.tuples(st.sampled_from(sorted(CAP_NAMES)), st.floats(0.0, 100.0)), max_size=3),
)
def test_any_model_gives_a_sane_decision(
    cells: list[float],
    temps: list[float],
    mos: float | None,
    soc: float,
    current: float,
    flags: list[str],
    oc: float | None,
    age: float,
    caps: list[tuple[str, float]],
) -> None:
    t = telemetry(
        now=T0 - age, cells=cells, cell_temps_c=temps, mos_temp_c=mos, soc_pct=soc, current_a=current,
        flags=flags,
    )  # fmt: skip
    parameters = params(T0, CHG_OC1_Start=oc) if oc is not None else None
    v = view([pack(1, t, parameters=parameters), pack(2, telemetry(now=T0 - age))], T0)
    controls = Controls()
    for name, value in caps:
        controls.set_cap(name, value, Source.EMS, now=T0)
    engine = PolicyEngine(PolicyConfig())
    for i in range(3):
        d = engine.evaluate(v, controls.state(T0 + i), T0 + i)
        values = (d.charge_voltage_v, d.discharge_voltage_v, d.charge_current_a, d.discharge_current_a)
        assert all(math.isfinite(x) and x >= 0 for x in values)
        assert d.discharge_voltage_v <= d.charge_voltage_v
        assert set(d.limiting.values()) <= FACTORS
        assert d.charge_enabled or d.charge_current_a == 0
        assert d.discharge_enabled or d.discharge_current_a == 0
        assert d.stale == (age + i > 10.0)
        assert d.alarms <= NEUTRAL_FLAGS and d.warnings <= NEUTRAL_FLAGS
