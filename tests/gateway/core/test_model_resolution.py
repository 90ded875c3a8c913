"""Derived values are rounded to their unit's resolution where they are made (issue 17, defect 5):
a 1 mV cell difference is 0.001, never 0.0009999999999998899, in every output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.model import DECIMALS, Availability, PackSnapshot, Telemetry, aggregate


def decimals(x: float) -> int:
    text = repr(x)
    assert "e" not in text, text
    return len(text.partition(".")[2].rstrip("0"))


def telemetry(cells_mv: list[int], voltage_cv: int, current_ca: int, soc_cp: int, full_cah: int) -> Telemetry:
    return Telemetry.build(
        measured_at=1.0,
        cell_voltages_v=[mv / 1000.0 for mv in cells_mv],
        temperatures=(),
        voltage_v=voltage_cv / 100.0,
        current_a=current_ca / 100.0,
        soc_pct=soc_cp / 100.0,
        full_capacity_ah=full_cah / 100.0,
        remaining_capacity_ah=full_cah / 200.0,
    )


def test_the_difference_the_issue_saw() -> None:
    t = telemetry([3307, 3308] * 8, 5292, 0, 6443, 9939)
    assert t.cell_diff_v == 0.001 and repr(t.cell_diff_v) == "0.001"
    assert t.cell_sum_v == 52.92 and repr(t.cell_avg_v) == "3.3075"


cells = st.lists(st.integers(2500, 3650), min_size=1, max_size=32)


@given(
    cells,
    cells,
    st.integers(4000, 6000),
    st.integers(-20000, 20000),
    st.integers(0, 10000),
    st.integers(100, 30000),
)
def test_every_derived_value_has_its_units_decimals(
    a: list[int], b: list[int], volt: int, amp: int, soc: int, full: int
) -> None:
    ta = telemetry(a, volt, amp, soc, full)
    tb = telemetry(b, volt + 7, -amp, 10000 - soc, full + 13)
    for t in (ta, tb):
        assert decimals(t.cell_sum_v) <= DECIMALS["V"]
        assert decimals(t.cell_diff_v) <= DECIMALS["V"]
        assert decimals(t.cell_avg_v) <= DECIMALS["V_mean"]
        assert decimals(t.power_w) <= DECIMALS["W"]
        for left in (t.remaining_charge_time_s, t.remaining_discharge_time_s):
            assert left is None or left == int(left)
    snaps = [PackSnapshot("sim", i + 1, Availability.ONLINE, telemetry=t) for i, t in enumerate((ta, tb))]
    bank = aggregate(snaps, now=2.0)
    assert bank.voltage_v is not None and decimals(bank.voltage_v) <= DECIMALS["V"]
    assert bank.soc_pct is not None and decimals(bank.soc_pct) <= DECIMALS["%"]
    assert bank.current_a is not None and decimals(bank.current_a) <= DECIMALS["A"]
    assert bank.power_w is not None and decimals(bank.power_w) <= DECIMALS["W"]
    assert bank.cell_diff_v is not None and decimals(bank.cell_diff_v) <= DECIMALS["V"]
