"""End to end through the gateway's own bus owner and drivers: what the gateway reads from the
simulator over TCP is the simulator's ground truth (both families), and corrupted answers are the
ones the bus owner rejects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from gateway.core.model import TempRole
from gateway.south.bus import BusOwner
from gateway.south.drivers.base import Driver
from gateway.south.drivers.pace import PaceDriver
from gateway.south.drivers.tianpower import TianpowerDriver
from gateway.south.transport import SerialSettings
from simulator import FaultSpec, Simulator, SimulatorOptions

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def _gateway_bus(
    sim: Simulator, driver: Driver, retries: int = 1, timeout_s: float = 0.5
) -> AsyncIterator[BusOwner]:
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        owner = BusOwner.from_url(
            "sim",
            f"socket://127.0.0.1:{server.port}",
            SerialSettings(),
            driver.new_decoder,
            gap_s=0.0,
            response_timeout_s=timeout_s,
            retries=retries,
            flush_after_connect_s=0.0,
        )
        task = asyncio.get_running_loop().create_task(owner.run(lambda: None))
        try:
            deadline = time.monotonic() + 5.0
            while not owner.connected:
                assert time.monotonic() < deadline, "bus owner did not connect"
                await asyncio.sleep(0.01)
            yield owner
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _sim(protocol: str, **kw: object) -> Simulator:
    # Simulated time runs a million times slower than real time while serving: the truth read right
    # after an answer is the truth that answer carried. At real time a ticker step between the two
    # (likely on a loaded machine) moved SoC/capacity past a 0.01 step and failed the exact compare.
    opts = {
        "protocol": protocol,
        "packs": 2,
        "seed": 17,
        "pacing": False,
        "turnaround_s": 0.0,
        "time_scale": 1e-6,
        **kw,
    }
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["tianpower", "pace"])
async def test_gateway_reads_the_truth(protocol: str) -> None:
    sim = _sim(protocol)
    sim.set_current(2, -25.0)
    sim.advance(60.0)
    driver: Driver = TianpowerDriver() if protocol == "tianpower" else PaceDriver()
    async with _gateway_bus(sim, driver) as bus:
        for address in sim.addresses:
            tel = await driver.read_realtime(bus, address, time.time())
            truth = sim.truth(address)
            assert tel.cell_voltages_v == pytest.approx(truth.cell_voltages_v, abs=1e-9)
            assert tel.current_a == pytest.approx(truth.current_a, abs=1e-9)
            assert tel.voltage_v == pytest.approx(truth.voltage_v, abs=1e-9)
            assert tel.soc_pct == pytest.approx(truth.soc_pct, abs=1e-9)
            assert tel.full_capacity_ah == pytest.approx(truth.full_capacity_ah, abs=1e-9)
            assert tel.remaining_capacity_ah == pytest.approx(truth.remaining_capacity_ah, abs=1e-9)
            assert tel.cycles == truth.cycles
            assert tel.charge_mos_on == truth.charge_mos_on
            assert tel.discharge_mos_on == truth.discharge_mos_on
            cells = tuple(t.value_c for t in tel.temperature(TempRole.CELL))
            assert cells == truth.cell_temperatures_c
            assert [t.value_c for t in tel.temperature(TempRole.MOS)] == [truth.mos_temperature_c]
            flags = sim.wire_flags(address)
            assert tel.protections == flags.protections and tel.alarms == flags.alarms
            identity = await driver.read_identity(bus, address)
            assert identity.serial == truth.identity.serial
            params = await driver.read_parameters(bus, address, time.time())
            read = {name: r.value for name, r in params.values.items()}
            assert read == {name: truth.parameters[name] for name in read}
            assert len(read) >= 50
        assert sim.truth(2).current_a == -25.0


async def test_gateway_rejects_exactly_the_corrupted_answers() -> None:
    sim = _sim("tianpower", faults=FaultSpec(corrupt_byte_prob=0.002))
    driver = TianpowerDriver()
    reads = 12
    # A rejected answer costs the bus owner its response timeout before the retry: keep it short.
    async with _gateway_bus(sim, driver, retries=5, timeout_s=0.25) as bus:
        for _ in range(reads):
            await driver.read_realtime(bus, 1, time.time())
        counters = bus.counters
    corrupted = sim.fault_counters["corrupted_responses"]
    assert corrupted > 0
    assert sim.fault_counters["responses"] == reads + corrupted  # every rejected answer was retried
    assert counters.responses == reads and counters.retries == corrupted
    assert counters.checksum_errors >= corrupted  # a damaged frame may cost more than one resync


@pytest.mark.parametrize("protocol", ["tianpower", "pace"])
async def test_gateway_downloads_the_history(protocol: str) -> None:
    sim = _sim(protocol, packs=1, history_records=6)
    store = sim.pack(1).history
    expected = list(reversed(store.records))
    driver: Driver = TianpowerDriver() if protocol == "tianpower" else PaceDriver()
    async with _gateway_bus(sim, driver) as bus:
        if protocol == "tianpower":
            assert await driver.history_count(bus, 1) == len(expected)
        got = []
        for index in range(len(expected) + 1):
            rec = await driver.read_history(bus, 1, index)
            if rec is None:
                break
            got.append(rec)
    assert len(got) == len(expected)
    for rec, src in zip(got, expected, strict=True):
        assert rec.recorded_at == src.at_epoch_s
        assert rec.cell_voltages_v[:16] == pytest.approx(tuple(mv / 1000 for mv in src.cell_mv), abs=1e-9)
        assert rec.current_a == pytest.approx(src.current_a, abs=1e-9)


async def test_gateway_reads_a_pace_bank_through_its_master() -> None:
    sim = _sim("pace", packs=3, first_address=2)
    sim.set_current(3, 12.5)
    sim.advance(10.0)
    driver = PaceDriver()
    async with _gateway_bus(sim, driver) as bus:
        bank = await driver.read_bank_realtime(bus, 2, time.time())
    assert sorted(bank) == [2, 3, 4]
    for address, tel in bank.items():
        truth = sim.truth(address)
        assert tel.cell_voltages_v == pytest.approx(truth.cell_voltages_v, abs=1e-9)
        assert tel.current_a == pytest.approx(truth.current_a, abs=1e-9)
        assert tel.soc_pct == pytest.approx(truth.soc_pct, abs=1e-9)
