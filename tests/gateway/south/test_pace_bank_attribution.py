"""Whole-bank PACE reads through the master when a pack in the middle is silent.

The answer carries no addresses and the simulated master (like, we infer, a real one) leaves a
silent pack out; the driver must never put one pack's values on another pack's address.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.core.model import Telemetry
from gateway.south.drivers.pace import BlockFingerprint, PaceDriver, attribute_bank_blocks
from protocol.errors import LocalProtocolError, RemoteProtocolError
from simulator.core import Simulator
from tests.support.fake_bus import SimulatorBusFactory


def fp(cycles: int, *, cells: int = 16, full: float = 100.0, design: float = 100.0) -> BlockFingerprint:
    return BlockFingerprint(cells, 4, design, full, cycles)


ADDRS = [1, 2, 3, 4]
KNOWN = {1: fp(10), 2: fp(20), 3: fp(30), 4: fp(40)}


def test_full_answer_is_positional() -> None:
    assert attribute_bank_blocks([fp(0)] * 4, ADDRS, {}) == {0: 1, 1: 2, 2: 3, 3: 4}


def test_gap_in_the_middle_is_placed_by_fingerprint() -> None:
    assert attribute_bank_blocks([fp(10), fp(20), fp(41)], ADDRS, KNOWN) == {0: 1, 1: 2, 2: 4}
    assert attribute_bank_blocks([fp(10), fp(30), fp(40)], ADDRS, KNOWN) == {0: 1, 1: 3, 2: 4}


def test_identical_packs_leave_the_ambiguous_blocks_unattributed() -> None:
    same = {a: fp(5) for a in ADDRS}
    # Three blocks for four identical packs: only the master's own block is certain.
    assert attribute_bank_blocks([fp(5)] * 3, ADDRS, same) == {0: 1}
    # Without any earlier read nothing tells the packs apart either.
    assert attribute_bank_blocks([fp(1), fp(2)], [1, 2, 3], {}) == {0: 1}


def test_blocks_certain_in_every_placement_are_kept() -> None:
    # Pack 4 differs (other cell count); 2 and 3 are alike: with 3 blocks, block 2 can only be 4.
    known = {1: fp(5), 2: fp(5), 3: fp(5), 4: fp(5, cells=15)}
    assert attribute_bank_blocks([fp(5), fp(5), fp(5, cells=15)], ADDRS, known) == {0: 1, 2: 4}


def test_answers_that_fit_no_pack_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="5 blocks for 4"):
        attribute_bank_blocks([fp(0)] * 5, ADDRS, {})
    with pytest.raises(RemoteProtocolError, match="none of the packs"):
        attribute_bank_blocks([fp(10), fp(99)], ADDRS, KNOWN)  # cycles jumped: not a pack we know
    with pytest.raises(RemoteProtocolError, match="none of the packs"):
        attribute_bank_blocks([fp(10), fp(20, design=280.0)], ADDRS, KNOWN)


def test_fingerprint_tolerates_slow_changes_only() -> None:
    base = fp(10, full=100.0)
    assert base.could_become(fp(11, full=99.5))
    assert not base.could_become(fp(12))
    assert not base.could_become(fp(9))  # cycles never go back
    assert not base.could_become(fp(10, full=95.0))


def _assert_truth(sim: Simulator, bank: Mapping[int, Telemetry], addresses: list[int]) -> None:
    assert sorted(bank) == addresses
    for a in addresses:
        t, truth = bank[a], sim.truth(a)
        assert t.cycles == truth.cycles
        assert t.cell_voltages_v == pytest.approx(truth.cell_voltages_v, abs=1e-9)
        assert t.full_capacity_ah == pytest.approx(truth.full_capacity_ah, abs=0.005)


async def test_simulated_master_with_a_silent_pack_in_the_middle(simulator_bus: SimulatorBusFactory) -> None:
    bus = simulator_bus(protocol="pace", packs=4)
    sim = bus.sim
    driver = PaceDriver()
    assert len({sim.truth(a).cycles for a in sim.addresses}) == 4  # the packs are distinguishable

    _assert_truth(sim, (await driver.read_bank_realtime(bus, 1, 0.0, addresses=ADDRS)), ADDRS)

    sim.set_online(3, False)
    bank = await driver.read_bank_realtime(bus, 1, 0.0, addresses=ADDRS)
    _assert_truth(sim, bank, [1, 2, 4])  # pack 4's values on address 4, nothing on 3

    # The old positional rule (no addresses given) would have put pack 4's block on address 3.
    legacy = await PaceDriver().read_bank_realtime(bus, 1, 0.0)
    assert sorted(legacy) == [1, 2, 3] and legacy[3].cycles == sim.truth(4).cycles

    sim.set_online(3, True)
    _assert_truth(sim, (await driver.read_bank_realtime(bus, 1, 0.0, addresses=ADDRS)), ADDRS)


async def test_configured_order_does_not_matter_but_the_master_must_be_in_it(
    simulator_bus: SimulatorBusFactory,
) -> None:
    bus = simulator_bus(protocol="pace", packs=3)
    sim = bus.sim
    bank = await PaceDriver().read_bank_realtime(bus, 1, 0.0, addresses=[1, 3, 2])
    _assert_truth(sim, bank, [1, 2, 3])
    with pytest.raises(LocalProtocolError, match="lack the master"):
        await PaceDriver().read_bank_realtime(bus, 1, 0.0, addresses=[2, 3])
