"""The PACE driver against the in-process simulator (its answers come from the codec's builders)."""

from __future__ import annotations

import pytest

from gateway.south.drivers.base import ParameterWrite
from gateway.south.drivers.pace import PaceDriver
from tests.support.fake_bus import SimulatorBusFactory


async def test_realtime_and_bank_equal_truth(simulator_bus: SimulatorBusFactory) -> None:
    bus = simulator_bus(protocol="pace", packs=3)
    sim = bus.sim
    d = PaceDriver()
    bank = await d.read_bank_realtime(bus, 1, now=0.0)
    assert sorted(bank) == list(sim.addresses)
    for addr in sim.addresses:
        truth = sim.truth(addr)
        single = await d.read_realtime(bus, addr, now=0.0)
        for t in (single, bank[addr]):
            assert t.cell_voltages_v == pytest.approx(truth.cell_voltages_v, abs=1e-9)
            assert t.current_a == pytest.approx(truth.current_a, abs=0.005)
            assert t.voltage_v == pytest.approx(truth.voltage_v, abs=0.0005)
            assert t.full_capacity_ah == pytest.approx(truth.full_capacity_ah, abs=0.005)
            assert t.remaining_capacity_ah == pytest.approx(truth.remaining_capacity_ah, abs=0.005)
            assert t.cycles == truth.cycles
            assert t.charge_mos_on == truth.charge_mos_on and t.discharge_mos_on == truth.discharge_mos_on
            assert t.balancing_cells == truth.balancing_cells


async def test_identity_parameters_clock_protocols_against_simulator(
    simulator_bus: SimulatorBusFactory,
) -> None:
    bus = simulator_bus(protocol="pace", packs=1)
    sim = bus.sim
    d = PaceDriver()
    ident = await d.read_identity(bus, 1)
    assert ident.version and ident.protocol == "pace"
    ps = await d.read_parameters(bus, 1, now=0.0)
    assert ps.get("Cell_OV_Protect") is not None
    await d.write_parameters(bus, 1, [ParameterWrite("Cell_OV_Protect", 3.66)])
    assert (await d.read_parameters(bus, 1, now=0.0)).get("Cell_OV_Protect") == 3.66
    clock = await d.read_clock(bus, 1, now=sim.epoch_s)
    assert abs(clock.pack_time - sim.truth(1).clock_epoch_s) <= 1
    p = await d.read_protocols(bus, 1)
    assert p.can_name and p.rs485_name
