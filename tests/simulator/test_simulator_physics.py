"""Simulated pack physics: balancing driven by the pack's own balance parameters, cycle counting and
SOH, temperatures and MOS temperature following the current, coulomb counting."""

from __future__ import annotations

import random

import pytest

from simulator.physics import PackPhysics, ocv_v


def _pack(seed: int = 5) -> PackPhysics:
    return PackPhysics.from_seed(random.Random(seed))


def test_coulomb_counting_and_ocv_curve() -> None:
    p = _pack()
    before = p.remaining_ah
    p.step(3600.0, 10.0, None, None)  # one hour at +10 A
    assert p.remaining_ah == pytest.approx(min(p.full_capacity_ah, before + 10.0))
    assert ocv_v(10.0) < ocv_v(50.0) < ocv_v(95.0)  # LFP: rising with SOC
    # internal resistance: the same cells read higher while charging than at rest
    charging = p.cell_voltages_v()
    p.step(1e-6, 0.0, None, None)
    assert all(c > r for c, r in zip(charging, p.cell_voltages_v(), strict=True))


def test_balancing_follows_the_balance_parameters() -> None:
    p = _pack()
    volts = p.cell_voltages_v()
    spread = max(volts) - min(volts)
    assert spread > 0.001  # the seeded cells differ
    # Start threshold above every cell: nothing balances.
    p.step(1.0, 1.0, max(volts) + 0.5, 0.001)
    assert p.balancing == set()
    # Start below every cell, difference smaller than the spread: the high cells bleed.
    p.step(1.0, 1.0, 2.0, spread / 2)
    assert p.balancing and all(p.cell_voltages_v()[i] - min(p.cell_voltages_v()) >= spread / 2 - 1e-3
                               for i in p.balancing)  # fmt: skip
    # No balancing while discharging, nor without parameters.
    p.step(1.0, -5.0, 2.0, 0.0001)
    assert p.balancing == set()
    p.step(1.0, 1.0, None, None)
    assert p.balancing == set()


def test_a_full_capacity_discharged_counts_a_cycle_and_ages_the_pack() -> None:
    p = _pack()
    cycles, soh = p.cycles, p.soh_pct
    p.step(3600.0 * 0.5, -p.full_capacity_ah, None, None)  # half a capacity: no cycle yet
    assert p.cycles == cycles
    p.step(1.0, 40.0, None, None)  # charging never counts
    assert p.cycles == cycles
    p.step(3600.0 * 0.6, -p.full_capacity_ah, None, None)  # past one full capacity
    assert p.cycles == cycles + 1 and p.soh_pct < soh


def test_temperatures_follow_current_and_return_to_ambient() -> None:
    p = _pack()
    rest_cells, rest_mos = list(p.cell_temps_c), p.mos_temp_c
    for _ in range(60):
        p.step(60.0, 80.0, None, None)
    assert all(h > r for h, r in zip(p.cell_temps_c, rest_cells, strict=True))
    assert p.mos_temp_c > rest_mos
    for _ in range(600):
        p.step(60.0, 0.0, None, None)
    assert p.cell_temps_c == pytest.approx([p.ambient_c + o for o in p.cell_temp_offsets_c], abs=0.05)
