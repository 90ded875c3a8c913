"""End to end: the gateway (built by `gateway.app.wiring` on the built-in simulator) answers an inverter peer
over TCP with the simulator's truth, for module and system commands, in both protocols."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from gateway.app.config import parse_config
from gateway.app.context import AppContext
from gateway.app.wiring import Supervisor, build_context, build_services
from gateway.core.model import ModelView
from gateway.core.policy.decisions import DecisionStore
from gateway.north.rs485.service import Rs485InverterService
from protocol.inverter.rs485.pylon_peer import build_request
from simulator import Simulator, SimulatorOptions
from tests.support.pylon_rs485_helpers import (
    INFERRED_OPT_IN,
    Reader,
    decode_management,
    decode_module_analog,
    peer,
    pylon_poll,
    ref_crc,
    ref_decode,
)

pytestmark = pytest.mark.e2e

PACKS = 2


@contextlib.asynccontextmanager
async def gateway(
    port: int, protocol: str = "pylon-rs485", **rs485: object
) -> AsyncIterator[tuple[AppContext, Simulator]]:
    """The gateway on a simulated bus (served on TCP like a converter) with short poll intervals."""
    sim = Simulator(SimulatorOptions(protocol="tianpower", packs=PACKS, profile="idle", seed=7, pacing=False))
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        config = parse_config(
            {
                "bus": [
                    {
                        "name": "sim",
                        "url": f"socket://127.0.0.1:{server.port}",
                        "protocol": "tianpower",
                        "addresses": list(range(1, PACKS + 1)),
                        "request_gap_s": 0.01,
                        "response_timeout_s": 0.5,
                        "retries": 0,
                        "realtime_interval_s": 0.3,
                        "stale_after_s": 3.0,
                        "offline_after_s": 6.0,
                    }
                ],
                "http": {"listen": "127.0.0.1:0"},
                "modbus": {"enabled": False},
                "inverter_rs485": {
                    "enabled": True,
                    "url": f"socket://127.0.0.1:{port}",
                    "protocol": protocol,
                    **rs485,
                },
                "policy": {"current_rise_time_constant_s": 0.0},
            }
        )
        ctx = build_context(config)
        services = build_services(ctx)
        assert [s for s in services if isinstance(s, Rs485InverterService)] == [ctx.rs485]
        supervisor = Supervisor(ctx, services)
        task = asyncio.create_task(supervisor.run())
        try:
            yield ctx, sim
        finally:
            supervisor.stop()
            async with asyncio.timeout(15):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def all_online(ctx: AppContext) -> ModelView:
    async with asyncio.timeout(20):
        async for view in ctx.store.subscribe():
            if all(p.online for p in view.packs.values()) and len(view.packs) == PACKS:
                return view
    raise AssertionError("unreachable")


async def identities_known(ctx: AppContext) -> None:
    """Identity is read after the first telemetry; wait until every pack's serial is in the model."""
    async with asyncio.timeout(20):
        async for view in ctx.store.subscribe():
            if len(view.packs) == PACKS and all(p.identity.serial for p in view.packs.values()):
                return


async def fresh_decision(ctx: AppContext) -> None:
    decisions = ctx.decisions
    assert isinstance(decisions, DecisionStore)
    await asyncio.wait_for(decisions.wait_for(lambda d: d.has_data and not d.stale), 20)


async def test_pylon_module_and_system_commands_equal_simulator_truth() -> None:
    async with peer() as p, gateway(p.port, **INFERRED_OPT_IN) as (ctx, sim):
        reader, writer = await p.accept()
        await all_online(ctx)
        await identities_known(ctx)
        await fresh_decision(ctx)
        view = ctx.store.view
        for position, pack in enumerate(view.ordered(), start=1):
            truth = sim.truth(pack.address)
            adr = 1 + position
            d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, adr, 0x42, bytes([adr]))))
            assert d.rtn == 0
            r = Reader(d.info)
            assert (r.take("B"), r.take("B")) == (0, adr)
            values = decode_module_analog(r)
            assert values["cells"] == pytest.approx(list(truth.cell_voltages_v), abs=0.0011)
            assert values["current"] == pytest.approx(truth.current_a, abs=0.06)
            assert values["voltage"] == pytest.approx(truth.voltage_v, abs=0.011)
            assert values["full_ah"] == pytest.approx(truth.full_capacity_ah, abs=0.011)
            assert values["remaining_ah"] == pytest.approx(truth.remaining_capacity_ah, abs=0.011)
            assert values["cycles"] == truth.cycles
            cell_temps = values["temps"][1 : 1 + len(truth.cell_temperatures_c)]
            assert cell_temps == pytest.approx(list(truth.cell_temperatures_c), abs=0.11)
            for cmd in (0x44, 0x92, 0x93, 0x96):
                d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, adr, cmd, bytes([adr]))))
                info = d.info[1:] if cmd == 0x44 else d.info  # 0x44 starts with INFOFLAG (real packs)
                assert d.rtn == 0 and info[0] == adr, hex(cmd)
                if cmd == 0x44:  # cell count, then Status2 after the per-cell/sensor/current states
                    cells = info[1]
                    assert cells == len(truth.cell_voltages_v)
                    status2 = info[2 + cells + 1 + info[2 + cells] + 3 + 1]
                    assert bool(status2 & 0x04) == truth.discharge_mos_on
                    assert bool(status2 & 0x02) == truth.charge_mos_on
                elif cmd == 0x93:
                    assert d.info[1:].decode("ascii").rstrip() == truth.identity.serial
                elif cmd == 0x96:
                    assert d.info[1:4] == bytes([1, 0, 3])  # firmware "...-V1.0.3"
                    assert truth.identity.version.endswith("V1.0.3")
        truths = [sim.truth(pack.address) for pack in view.ordered()]
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x61)))
        r = Reader(d.info)
        assert r.take("H") / 1000 == pytest.approx(sum(t.voltage_v for t in truths) / PACKS, abs=0.011)
        assert r.take("h") / 100 == pytest.approx(sum(t.current_a for t in truths), abs=0.06)
        soc = sum(t.soc_pct * t.full_capacity_ah for t in truths) / sum(t.full_capacity_ah for t in truths)
        assert r.take("B") == pytest.approx(soc, abs=1)
        r.pos += 2 + 2 + 1 + 1  # cycles (average, max), SOH (average, min)
        cells = {(p, c): v for p, t in enumerate(truths, 1) for c, v in enumerate(t.cell_voltages_v, 1)}
        v_max = r.take("H") / 1000
        assert v_max == pytest.approx(max(cells.values()), abs=0.0011)
        location = r.take("H")  # pack, cell numbered from 1 (the opted-in *inferred* numbering)
        assert cells[(location >> 8, location & 0xFF)] == pytest.approx(v_max, abs=0.0011)
        v_min = r.take("H") / 1000
        assert v_min == pytest.approx(min(cells.values()), abs=0.0011)
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x63)))
        got = decode_management(Reader(d.info), system=True)
        decision = ctx.decisions.latest
        assert got["charge_v"] == pytest.approx(decision.charge_voltage_v, abs=0.001)
        assert got["discharge_a"] == pytest.approx(decision.discharge_current_a, abs=0.05)
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x42, b"\xff")))
        assert d.rtn == 0 and d.info[1] == PACKS
        for cmd in (0x4F, 0x51, 0x47, 0x60, 0x62, 0x64):
            assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, cmd))).rtn == 0
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x44, b"\xff")))
        assert d.rtn == 0 and d.info[:2] == bytes([0, PACKS])  # INFOFLAG, module count
        setting = bytes([3]) + struct.pack(">HHhh", 54000, 47000, 50, 500)
        assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 3, 0x94, setting))).rtn == 0
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 3, 0x92, b"\x03")))
        r = Reader(d.info)
        r.take("B")
        held = decode_management(r)
        assert held["charge_v"] == pytest.approx(min(54.0, decision.charge_voltage_v), abs=0.001)
        assert held["charge_a"] <= 5.0
        assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 3, 0x95, b"\x03"))).rtn == 0
        rs485 = ctx.rs485
        assert isinstance(rs485, Rs485InverterService)
        stats = rs485.stats()
        assert stats.turn_off_requests == 2 and stats.inverter_present is True
        assert stats.errors == 0


async def test_pack_going_offline_gives_rtn_91_and_blocked_module() -> None:
    async with peer() as p, gateway(p.port) as (ctx, sim):
        reader, writer = await p.accept()
        await all_online(ctx)
        last = ctx.store.view.ordered()[-1]
        sim.set_online(last.address, False)
        async with asyncio.timeout(20):
            async for view in ctx.store.subscribe():
                if not view.packs[last.key].online:
                    break
        adr = 1 + PACKS
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, adr, 0x42, bytes([adr]))))
        assert d.rtn == 0x91
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, adr, 0x92, bytes([adr]))))
        r = Reader(d.info)
        r.take("B")
        assert decode_management(r)["status"] == 0
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x42, b"\x02")))
        assert d.rtn == 0
        # the configuration's defaults leave the *inferred* layouts off: the protocol's error answers
        assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x61))).rtn == 0x04
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x44, b"\xff")))
        assert d.rtn == 0x90
        # the whole-stack 0x42 answer is the captured layout of real packs: always served
        d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x42, b"\xff")))
        assert d.rtn == 0 and d.info[0] == 0


async def test_byd_modbus_poll_equals_simulator_truth() -> None:
    async with peer() as p, gateway(p.port, protocol="byd-modbus") as (ctx, sim):
        reader, writer = await p.accept()
        await all_online(ctx)
        await fresh_decision(ctx)
        truths = [sim.truth(pack.address) for pack in ctx.store.view.ordered()]
        body = bytes([21]) + struct.pack(">BHH", 3, 300, 24)
        writer.write(body + ref_crc(body))
        async with asyncio.timeout(5):
            response = await reader.readexactly(3 + 48 + 2)
        assert response[-2:] == ref_crc(response[:-2])
        regs = struct.unpack(">24H", response[3:51])
        soc = sum(t.soc_pct * t.full_capacity_ah for t in truths) / sum(t.full_capacity_ah for t in truths)
        voltage = sum(t.voltage_v for t in truths) / PACKS
        assert regs[0] == 3
        assert regs[3] == pytest.approx(max(1.0, soc) * 100, abs=2)
        assert regs[10] == pytest.approx(voltage * 10, abs=1)
        temps = [c for t in truths for c in t.cell_temperatures_c]
        assert regs[12] == pytest.approx(min(temps) * 10, abs=1)
        assert regs[13] == pytest.approx(max(temps) * 10, abs=1)
