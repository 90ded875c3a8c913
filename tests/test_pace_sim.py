"""The PACE driver against the in-process simulator (its answers come from the codec's builders)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.south.drivers.base import NoResponse, ParameterWrite, Priority
from gateway.south.drivers.pace import PaceDriver
from protocol.bms.base import Frame
from protocol.bms.pace.frame import PaceDecoder
from simulator.core import Simulator, SimulatorOptions


class SimBus:
    """BusClient over the simulator's responder: echo first, then the answer (if any)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def transact(
        self,
        request: bytes,
        match: Callable[[Frame], bool],
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        expect_response: bool = True,
        address: int | None = None,
    ) -> Frame | None:
        _addr, answer = self.sim.responder.respond(self.sim, request)
        dec = PaceDecoder()
        dec.feed(request + answer)
        for item in dec.frames():
            if isinstance(item, Frame) and match(item):
                return item
        raise NoResponse("simulator stayed silent")


def make(packs: int = 3) -> Simulator:
    return Simulator(SimulatorOptions(protocol="pace", packs=packs, pacing=False, seed=7))


async def test_realtime_and_bank_equal_truth() -> None:
    sim = make(3)
    bus = SimBus(sim)
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


async def test_identity_parameters_clock_protocols_against_simulator() -> None:
    sim = make(1)
    bus = SimBus(sim)
    d = PaceDriver()
    ident = await d.read_identity(bus, 1)
    assert ident.version and ident.protocol == "pace"
    ps = await d.read_parameters(bus, 1, now=0.0)
    assert ps.get("Cell OV Protect") is not None
    await d.write_parameters(bus, 1, [ParameterWrite("Cell OV Protect", 3.66)])
    assert (await d.read_parameters(bus, 1, now=0.0)).get("Cell OV Protect") == 3.66
    clock = await d.read_clock(bus, 1, now=sim.epoch_s)
    assert abs(clock.pack_time - sim.truth(1).clock_epoch_s) <= 1
    p = await d.read_protocols(bus, 1)
    assert p.can_name and p.rs485_name
