"""End to end: simulator on TCP -> bus owner -> poller -> model -> Modbus server -> clients nobody here wrote.

The simulator's truth is frozen (time runs a million times slower than real time and each pack's
current is fixed), so what pysunspec2 and pyModbusTCP read can be compared with it exactly, within
the wire resolution of the BMS protocol and the register scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyModbusTCP.client import ModbusClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from gateway.app.config import BusConfig, ModbusConfig
from gateway.core.controls import Controls
from gateway.core.model import ModelStore
from gateway.north.modbus.server import ModbusServer
from gateway.south.bus import BusOwner
from gateway.south.poller import BusPoller, load_driver
from gateway.south.transport import SerialSettings
from simulator import Simulator, SimulatorOptions
from tests.support import REPO

pytestmark = pytest.mark.e2e

CURRENTS_A = {1: 12.5, 2: -7.3, 3: 0.0}


@contextlib.asynccontextmanager
async def gateway_on_simulator(protocol: str) -> AsyncIterator[tuple[Simulator, ModelStore, ModbusServer]]:
    sim = Simulator(
        SimulatorOptions(
            protocol=protocol,  # type: ignore[arg-type]
            packs=3,
            pacing=False,
            turnaround_s=0.0,
            profile="idle",
            time_scale=1e-6,
        )
    )
    for address, amps in CURRENTS_A.items():
        sim.set_current(address, amps)
    # A forced current reaches the physics (current, IR drop) at the next step; without this the
    # first polls could run before the serving ticker's first step and read 0 A (seen on a loaded
    # machine). A microsecond of simulated time changes nothing else.
    sim.advance(1e-6)
    async with sim.serve_tcp("127.0.0.1", 0) as bus_server:
        driver = load_driver(protocol)
        cfg = BusConfig(
            name="sim",
            url=f"socket://127.0.0.1:{bus_server.port}",
            protocol=protocol,  # type: ignore[arg-type]
            addresses=[1, 2, 3],
            request_gap_s=0.0,
            realtime_interval_s=0.2,
            response_timeout_s=1.0,  # headroom for a loaded machine: no pack may turn stale by accident
            retries=0,
            stale_after_s=4.0,
            offline_after_s=8.0,
        )
        owner = BusOwner.from_url(
            cfg.name,
            cfg.url,
            SerialSettings(),
            driver.new_decoder,
            gap_s=0.0,
            response_timeout_s=cfg.response_timeout_s,
            retries=0,
        )
        store = ModelStore([(cfg.name, a) for a in cfg.addresses])
        poller = BusPoller(cfg, owner, store, driver)
        modbus = ModbusServer(ModbusConfig(listen="127.0.0.1:0"), store, Controls())
        ready = asyncio.Event()
        tasks = [
            asyncio.create_task(owner.run(lambda: None)),
            asyncio.create_task(poller.run(lambda: None)),
            asyncio.create_task(modbus.run(ready.set)),
        ]
        try:
            await asyncio.wait_for(ready.wait(), 20)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                view = store.view
                if view.bank.packs_online == 3 and modbus.units[1].online and modbus.view is view:
                    break
                await asyncio.sleep(0.02)
            assert store.view.bank.packs_online == 3, "the poller did not bring every pack online"
            yield sim, store, modbus
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t


@pytest.mark.parametrize("protocol", ["tianpower", "pace"])
async def test_pysunspec2_reads_the_simulators_truth(protocol: str) -> None:
    async with gateway_on_simulator(protocol) as (sim, _store, modbus):

        def scan() -> SunSpecModbusClientDeviceTCP:
            device = SunSpecModbusClientDeviceTCP(
                slave_id=1, ipaddr="127.0.0.1", ipport=modbus.port, timeout=5
            )
            device.scan()
            return device

        device = await asyncio.to_thread(scan)
        try:
            assert [m.error_info for m in device.model_list] == [""] * len(device.model_list)
            assert [m.model_id for m in device.model_list] == [1, 802, 803, 804, 804, 804, 805, 805, 805, 124]
            truths = [sim.truth(a) for a in (1, 2, 3)]
            bank = device.models[802][0]
            assert bank.A.cvalue == pytest.approx(sum(t.current_a for t in truths), abs=0.051)
            assert bank.V.cvalue == pytest.approx(sum(t.voltage_v for t in truths) / 3, abs=0.006)
            weights = [t.full_capacity_ah for t in truths]
            soc = sum(w * t.soc_pct for w, t in zip(weights, truths, strict=True)) / sum(weights)
            assert bank.SoC.cvalue == pytest.approx(soc, abs=0.051)
            for i, truth in enumerate(truths):
                string = device.models[804][i]
                module = device.models[805][i]
                assert string.SoC.cvalue == pytest.approx(truth.soc_pct, abs=0.051)
                assert string.A.cvalue == pytest.approx(truth.current_a, abs=0.0051)
                assert string.V.cvalue == pytest.approx(truth.voltage_v, abs=0.0051)
                cells = module.groups["lithium-ion-module-cell"]
                measured = [c.CellV.cvalue for c in cells[: len(truth.cell_voltages_v)]]
                assert measured == pytest.approx(list(truth.cell_voltages_v), abs=0.0005)
                assert module.NCell.value == len(truth.cell_voltages_v)
        finally:
            device.disconnect()


async def test_pymodbustcp_reads_the_native_map_truth_and_an_offline_pack() -> None:
    async with gateway_on_simulator("tianpower") as (sim, store, modbus):
        truth = sim.truth(2)

        def read(address: int, count: int) -> list[int] | None:
            client = ModbusClient(
                host="127.0.0.1", port=modbus.port or 0, unit_id=2, timeout=5.0, auto_open=True
            )
            try:
                result: list[int] | None = client.read_holding_registers(address, count)
                return result
            finally:
                client.close()

        pack2 = await asyncio.to_thread(read, 1128, 68)
        assert pack2 is not None
        assert pack2[1] == 1  # online
        assert pack2[5] == round(truth.voltage_v * 100)
        assert pack2[6] == round(truth.current_a * 100) & 0xFFFF
        assert pack2[9] == round(truth.soc_pct * 10)
        n = len(truth.cell_voltages_v)
        assert pack2[36 : 36 + n] == [round(v * 1000) for v in truth.cell_voltages_v]

        sim.set_online(3, False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view = store.view
            pack3 = view.pack("sim", 3)
            if pack3 is not None and not pack3.online and view.bank.packs_online == 2 and modbus.view is view:
                break
            await asyncio.sleep(0.01)
        pack3_regs = await asyncio.to_thread(read, 1256, 10)
        bank = await asyncio.to_thread(read, 0, 8)
    assert pack3_regs is not None and bank is not None
    assert pack3_regs[1] in (2, 3)  # stale or offline
    assert pack3_regs[5] == 0xFFFF  # no voltage served for a pack that is not online
    assert bank[4] == 2  # two packs counted in the bank


# ------------------------------------------------------------------ the real `bms-gateway run` process

ROOT = REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _process(*args: str, until: str) -> AsyncIterator[list[str]]:
    """`python -m gateway.cli.main ARGS`; yields its stdout lines up to the first starting with `until`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not (lines and lines[-1].startswith(until)):
                raw = await proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"{args[0]} exited early: {lines}")
                lines.append(raw.decode().strip())
        yield lines
    finally:
        if proc.returncode is None:
            proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, f"{args[0]} exit {proc.returncode}: {err.decode()[-2000:]}"


async def test_real_gateway_process_serves_the_simulators_truth(tmp_path: Path) -> None:
    sim_port = _free_port()
    sim_args = ["--protocol", "tianpower", "--packs", "2", "--profile", "idle", "--seed", "11"]
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"

[http]
listen = "127.0.0.1:0"

[modbus]
listen = "127.0.0.1:0"
writes = true

[[bus]]
name = "b1"
url = "socket://127.0.0.1:{sim_port}"
protocol = "tianpower"
addresses = [1, 2]
request_gap_s = 0.02
response_timeout_s = 0.5
realtime_interval_s = 0.2
""",
        encoding="utf-8",
    )
    async with (
        _process("simulate", *sim_args, "--listen", f"127.0.0.1:{sim_port}", "--no-pacing", until="listen"),
        _process("run", "--config", str(config), until="modbus:") as lines,
    ):
        port = int(lines[-1].rsplit(":", 1)[1])
        twin = Simulator(SimulatorOptions(protocol="tianpower", packs=2, profile="idle", seed=11))

        def scan() -> SunSpecModbusClientDeviceTCP:
            for _ in range(200):  # until both packs are online (the bank unit answers 0x0B before)
                device = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=5)
                try:
                    device.scan()
                except Exception:
                    device.disconnect()
                    time.sleep(0.05)
                    continue
                if device.models[803][0].NStrCon.value == 2:
                    return device
                device.disconnect()
                time.sleep(0.05)
            raise AssertionError("the bank never came online over Modbus")

        device = await asyncio.to_thread(scan)
        try:
            assert [m.error_info for m in device.model_list] == [""] * len(device.model_list)
            for i, address in enumerate((1, 2)):
                truth = twin.truth(address)
                assert device.models[804][i].SoC.cvalue == pytest.approx(truth.soc_pct, abs=0.051)
                assert device.models[804][i].V.cvalue == pytest.approx(truth.voltage_v, abs=0.0051)
                cells = device.models[805][i].groups["lithium-ion-module-cell"]
                n = len(truth.cell_voltages_v)
                assert [c.CellV.cvalue for c in cells[:n]] == pytest.approx(
                    list(truth.cell_voltages_v), abs=5e-4
                )
            battery = device.models[802][0]
            battery.SoCRsvMin.cvalue = 30.0
            await asyncio.to_thread(battery.write)
            await asyncio.to_thread(battery.read)
            assert battery.SoCRsvMin.cvalue == pytest.approx(30.0)
        finally:
            device.disconnect()
