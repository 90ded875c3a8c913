"""The inverter RS485 port service end to end over TCP: a test peer plays the inverter (and converter)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.app.config import InverterRs485Config, PolicyConfig, parse_config
from gateway.core.controls import Controls
from gateway.core.model import (
    Availability,
    ModelStore,
    ModelView,
    PackIdentity,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.core.policy.decisions import DecisionStore
from gateway.core.policy.engine import PolicyEngine
from gateway.north.rs485.service import (
    EnergyCounter,
    Rs485InverterService,
    build_bank_view,
    version_numbers,
)
from protocol.inverter.rs485.pylon_peer import build_request
from tests.support.flags import named
from tests.support.pylon_rs485_helpers import (
    INFERRED_OPT_IN,
    Peer,
    Reader,
    decode_management,
    decode_module_analog,
    peer,
    pylon_poll,
    ref_decode,
    ref_frame,
)

NOW = 1_700_000_000.0


def telemetry(address: int, *, current: float = -12.0, measured_at: float = NOW, **kw: object) -> Telemetry:
    cells = [3.30 + 0.001 * (address + i) for i in range(16)]
    values: dict[str, object] = {
        "measured_at": measured_at,
        "cell_voltages_v": cells,
        "temperatures": [
            *(Temperature(TempRole.CELL, i, 20.0 + i + address) for i in range(1, 5)),
            Temperature(TempRole.MOS, 1, 30.0 + address),
            Temperature(TempRole.AMBIENT, 1, 25.0),
        ],
        "voltage_v": round(sum(cells), 2),
        "current_a": current,
        "soc_pct": 60.0 + address,
        "soh_pct": 99.0,
        "full_capacity_ah": 280.0,
        "remaining_capacity_ah": 280.0 * (60.0 + address) / 100,
        "cycles": 10 * address,
        "charge_mos_on": True,
        "discharge_mos_on": True,
    }
    values.update(kw)
    return Telemetry.build(**values)  # type: ignore[arg-type]


def snapshot(address: int, availability: Availability = Availability.ONLINE, **kw: Any) -> PackSnapshot:
    return PackSnapshot(
        bus="bus1",
        address=address,
        availability=availability,
        telemetry=telemetry(address, **kw),
        identity=PackIdentity(version="HY-CW007-B200LT55-V1.0.3", serial=f"SN{address:06d}"),
    )


def make_store(n: int = 3) -> ModelStore:
    store = ModelStore([("bus1", a) for a in range(1, n + 1)])
    store.publish(*(snapshot(a) for a in range(1, n + 1)), now=NOW)
    return store


def decide(store: ModelStore, decisions: DecisionStore, now: float = NOW) -> None:
    engine = PolicyEngine(PolicyConfig(current_rise_time_constant_s=0.0))
    decisions.publish(engine.evaluate(store.view, Controls().state(now), now))


# --- unit tests of the view ------------------------------------------------------------------


def test_version_numbers() -> None:
    assert version_numbers("HY-CW007-B200LT55-V1.0.3") == (1, 0, 3)
    assert version_numbers("no version") == ()
    assert version_numbers(None) == ()


def test_bank_view_from_model_and_decision() -> None:
    store = make_store(2)
    decisions = DecisionStore()
    decide(store, decisions)
    d = decisions.latest
    assert d is not None and d.has_data and not d.stale
    view = build_bank_view(store.view, d)
    assert [m.position for m in view.modules] == [1, 2]
    m1 = view.modules[0]
    assert m1.fresh and m1.serial == "SN000001" and m1.software_version == (1, 0, 3)
    assert m1.board_temperature_c == 31.0 and m1.mos_temperature_c is None  # MOS stands in for the board
    assert m1.cell_temperatures_c == (22.0, 23.0, 24.0, 25.0)
    assert view.limits.charge_current_a == d.charge_current_a
    assert view.limits.charge_voltage_v == d.charge_voltage_v
    assert not view.stale


def test_bank_view_without_decision_is_blocked() -> None:
    store = make_store(1)
    view = build_bank_view(store.view, None)
    assert view.stale and view.effective_limits.charge_current_a == 0
    assert view.effective_limits.charge_voltage_v > 40  # never a zero voltage limit


def test_pack_flags_become_their_meanings_by_level() -> None:
    store = ModelStore([("bus1", 1)])
    flags = named("CELL_OV_Prot", "DISC_OT_Alarm", "NTC_Short_Circuit", "Hot_Failure", "Charging")
    store.publish(snapshot(1, flags=flags), now=NOW)
    view = build_bank_view(store.view, None)
    assert view.modules[0].protections == frozenset({"cell_overvoltage"})
    # the sensor and fan faults block nothing: warnings, never a short circuit or a temperature
    assert view.modules[0].alarms == frozenset({"discharge_overtemperature", "ntc_fault", "fan_fault"})


def test_energy_counter_integrates_both_directions() -> None:
    store = ModelStore([("bus1", 1)])
    counter = EnergyCounter()
    for i, current in enumerate([10.0, 10.0, -20.0, -20.0]):
        store.publish(snapshot(1, current=current, measured_at=NOW + i * 10), now=NOW + i * 10)
        counter.update(store.view)
    v = store.view.bank.voltage_v
    assert v is not None
    # 0-10 s at +10 A; 10-20 s linear from +10 A to -20 A (zero at 3.33 s); 20-30 s at -20 A
    assert counter.charged_wh == pytest.approx((100 + 10 * (10 / 3) / 2) * v / 3600)
    assert counter.discharged_wh == pytest.approx((20 * (20 / 3) / 2 + 200) * v / 3600)


# --- end to end over TCP -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(service: Rs485InverterService) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready.set))
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def config(port: int, **kw: object) -> InverterRs485Config:
    return parse_config(
        {"inverter_rs485": {"enabled": True, "url": f"socket://127.0.0.1:{port}", **kw}}
    ).inverter_rs485


async def test_pylon_poll_every_command_over_tcp() -> None:
    store = make_store(3)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(config(p.port, **INFERRED_OPT_IN), store, decisions)
        async with running(service):
            reader, writer = await p.accept()
            truth = store.view.ordered()
            # module level, each pack at ADR 2, 3, 4
            for position, pack in enumerate(truth, start=1):
                adr = 1 + position
                d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, adr, 0x42, bytes([adr]))))
                assert d.rtn == 0 and d.adr == adr
                r = Reader(d.info)
                assert (r.take("B"), r.take("B")) == (0, adr)
                values = decode_module_analog(r)
                t = pack.telemetry
                assert t is not None
                assert values["cells"] == pytest.approx(list(t.cell_voltages_v), abs=0.0005)
                assert values["current"] == pytest.approx(t.current_a, abs=0.05)
                assert values["voltage"] == pytest.approx(t.voltage_v, abs=0.0005)
                assert values["remaining_ah"] == pytest.approx(t.remaining_capacity_ah, abs=0.001)
                assert values["cycles"] == t.cycles
                assert values["temps"][0] == pytest.approx(30.0 + pack.address)  # board <- MOS
                for cmd in (0x44, 0x92, 0x93, 0x96):
                    d = ref_decode(
                        await pylon_poll(reader, writer, build_request(0x20, adr, cmd, bytes([adr])))
                    )
                    # 0x44 starts with INFOFLAG like real packs; 0x92/0x93/0x96 with the address
                    assert d.rtn == 0 and d.info[1 if cmd == 0x44 else 0] == adr, hex(cmd)
            for cmd in (0x4F, 0x51, 0x47, 0x60, 0x62):
                d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, cmd)))
                assert d.rtn == 0, hex(cmd)
            # system level
            d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x61)))
            r = Reader(d.info)
            bank = store.view.bank
            assert bank.voltage_v is not None and bank.current_a is not None and bank.soc_pct is not None
            assert r.take("H") == round(bank.voltage_v * 1000)
            assert r.take("h") == round(bank.current_a * 100)
            assert r.take("B") == round(bank.soc_pct)
            decision = decisions.latest
            assert decision is not None
            d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x63)))
            got = decode_management(Reader(d.info), system=True)
            assert got["charge_v"] == pytest.approx(decision.charge_voltage_v, abs=0.001)
            assert got["charge_a"] == pytest.approx(decision.charge_current_a, abs=0.05)
            assert got["discharge_a"] == pytest.approx(decision.discharge_current_a, abs=0.05)
            assert got["status"] & 0xC0 == 0xC0
            d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x42, b"\xff")))
            assert d.info[1] == 3
            stats = service.stats()
            assert stats.valid_polls == stats.requests == 3 * 5 + 5 + 3
            assert stats.inverter_present is True and stats.connected


async def test_malformed_requests_get_error_answers_and_service_keeps_answering() -> None:
    store = make_store(2)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(config(p.port), store, decisions)
        async with running(service):
            reader, writer = await p.accept()
            good = build_request(0x20, 2, 0x4F)
            bad_checksum = good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\r"
            assert ref_decode(await pylon_poll(reader, writer, bad_checksum)).rtn == 0x02
            body = b"20024642F00202"
            from tests.support.pylon_rs485_helpers import ref_checksum

            bad_l = b"~" + body + f"{ref_checksum(body):04X}".encode() + b"\r"
            assert ref_decode(await pylon_poll(reader, writer, bad_l)).rtn == 0x03
            # truncated request, garbage and a response frame: ignored, then a good poll is answered
            writer.write(b"~20024642E002" + b"\x00\xffnoise" + ref_frame(0x20, 2, 0x46, 0x00))
            assert ref_decode(await pylon_poll(reader, writer, good)) == ref_decode(
                ref_frame(0x20, 2, 0x46, 0x00)
            )
            stats = service.stats()
            assert stats.outcomes["checksum"] == 1 and stats.outcomes["lchksum"] == 1
            assert stats.outcomes["ignored"] >= 1
            assert stats.valid_polls == 1
            assert stats.errors == 2


async def test_stale_data_gives_blocking_answer_not_silence() -> None:
    store = make_store(2)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(config(p.port), store, decisions)
        async with running(service):
            reader, writer = await p.accept()
            req = build_request(0x20, 2, 0x63)
            got = decode_management(
                Reader(ref_decode(await pylon_poll(reader, writer, req)).info), system=True
            )
            assert got["status"]
            # the packs go stale; the policy re-evaluates later in time
            store.publish(
                *(snapshot(a, Availability.STALE) for a in (1, 2)),
                now=NOW + 60,
            )
            decide(store, decisions, now=NOW + 60)
            got = decode_management(
                Reader(ref_decode(await pylon_poll(reader, writer, req)).info), system=True
            )
            assert got["status"] == 0 and got["charge_a"] == 0 and got["discharge_a"] == 0
            assert got["charge_v"] > 40
            alarm = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x62)))
            assert alarm.info[1] & 0x10  # internal communication failure
            analog = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x42, b"\x02")))
            assert analog.rtn == 0x91


def rtu(unit: int, pdu: bytes) -> bytes:
    from tests.support.pylon_rs485_helpers import ref_crc

    body = bytes([unit]) + pdu
    return body + ref_crc(body)


async def test_set_protocol_at_run_time_and_byd_poll() -> None:
    store = make_store(2)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(config(p.port), store, decisions)
        async with running(service):
            reader, writer = await p.accept()
            assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x4F))).rtn == 0
            service.set_protocol("byd-modbus")
            with pytest.raises(ValueError, match="unknown"):
                service.set_protocol("growatt")
            writer.write(rtu(21, struct.pack(">BHH", 3, 300, 4)))
            async with asyncio.timeout(5):
                response = await reader.readexactly(3 + 8 + 2)
            assert response[:3] == bytes([21, 3, 8])
            state, _, status, soc = struct.unpack(">4H", response[3:11])
            bank = store.view.bank
            assert bank.soc_pct is not None
            assert (state, status, soc) == (3, 130, round(bank.soc_pct * 100))
            stats = service.stats()
            assert stats.protocol == "byd-modbus" and stats.protocol_switches == 1
            assert stats.commands["fc3"] == 1 and stats.commands["0x4F"] == 1


@contextlib.asynccontextmanager
async def converter(p: Peer) -> AsyncIterator[int]:
    """A second listening port relaying a client's bytes to the gateway's connection and back."""
    gw_reader, gw_writer = await p.accept()
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        tasks.append(asyncio.create_task(pump(reader, gw_writer)))
        tasks.append(asyncio.create_task(pump(gw_reader, writer)))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for w in writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        server.close()
        await server.wait_closed()


async def test_byd_modbus_rtu_poll_with_pymodbus_over_tcp(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.north.rs485.service")
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    store = make_store(2)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(config(p.port, protocol="byd-modbus"), store, decisions)
        async with running(service), converter(p) as port:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=3, retries=1)
            try:
                assert await client.connect()
                ident = await client.read_holding_registers(100, count=68, device_id=21)
                assert not ident.isError()
                raw = b"".join(r.to_bytes(2, "big") for r in ident.registers)
                assert raw[0:2] == b"SI" and raw[4:7] == b"BYD"
                assert raw[36:62] == b"BYD Battery-Box Premium HV"
                live = await client.read_holding_registers(300, count=24, device_id=21)
                assert not live.isError()
                regs = live.registers
                bank = store.view.bank
                decision = decisions.latest
                assert bank.voltage_v is not None and bank.soc_pct is not None and decision is not None
                assert regs[0] == 3 and regs[2] == 130
                assert regs[3] == round(bank.soc_pct * 100)
                assert regs[6] == min(30000, round(decision.discharge_current_a * bank.voltage_v))
                assert regs[8] == round(bank.voltage_v * 10)
                ratings = await client.read_holding_registers(205, count=2, device_id=21)
                assert ratings.registers == [
                    round(decision.charge_voltage_v * 10),
                    round(decision.discharge_voltage_v * 10),
                ]
                wrote = await client.write_register(401, 0x00FF, device_id=21)
                assert not wrote.isError()
                refused = await client.write_register(300, 1, device_id=21)
                assert refused.isError()
                too_far = await client.read_holding_registers(29999, count=2, device_id=21)
                assert too_far.isError()
                after = await client.read_holding_registers(303, count=1, device_id=21)
                assert after.registers == [round(bank.soc_pct * 100)]
            finally:
                client.close()
            stats = service.stats()
            assert stats.heartbeat_ok is True
            assert stats.outcomes["exception_02"] == 2
            assert any("heartbeat" in r.message for r in caplog.records)


async def test_presence_supervised_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    store = make_store(1)
    async with peer() as p:
        service = Rs485InverterService(
            config(p.port, presence_timeout_s=5.0), store, None, monotonic=lambda: clock[0]
        )
        async with running(service):
            reader, writer = await p.accept()
            assert service.check_presence() is None
            assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x4F))).rtn == 0
            assert service.stats().inverter_present is True
            caplog.set_level(logging.WARNING, logger="gateway.north.rs485.service")
            clock[0] += 6.0
            assert service.check_presence() is False
            assert any("missing" in r.message for r in caplog.records)
            assert service.stats().inverter_present is False
            # without a decision the gateway still answers, with the blocking management answer
            d = ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x92, b"\x02")))
            r = Reader(d.info)
            r.take("B")
            assert decode_management(r)["status"] == 0
            assert service.check_presence() is True


async def test_reconnects_after_the_converter_drops() -> None:
    store = make_store(1)
    async with peer() as p:
        service = Rs485InverterService(config(p.port), store, None)
        async with running(service):
            reader, writer = await p.accept()
            assert ref_decode(await pylon_poll(reader, writer, build_request(0x20, 2, 0x4F))).rtn == 0
            writer.close()
            await writer.wait_closed()
            reader2, writer2 = await p.accept()
            assert ref_decode(await pylon_poll(reader2, writer2, build_request(0x20, 2, 0x4F))).rtn == 0
            stats = service.stats()
            assert stats.connects == 2 and stats.disconnects == 1


async def test_unreachable_port_reports_ready_and_retries() -> None:
    async with peer() as p:
        port = p.port
    service = Rs485InverterService(config(port), make_store(1), None)
    async with running(service):
        for _ in range(500):
            if service.stats().connect_failures >= 1:
                break
            await asyncio.sleep(0.01)
        assert service.stats().connect_failures >= 1
        assert not service.stats().connected


def test_model_view_type_is_what_the_service_reads() -> None:
    store = make_store(1)
    assert isinstance(store.view, ModelView)


async def test_byd_malformed_requests_are_ignored_and_service_keeps_answering() -> None:
    store = make_store(1)
    decisions = DecisionStore()
    decide(store, decisions)
    async with peer() as p:
        service = Rs485InverterService(
            config(p.port, protocol="byd-modbus", idle_gap_s=0.05), store, decisions
        )
        async with running(service):
            reader, writer = await p.accept()
            good = rtu(21, struct.pack(">BHH", 3, 303, 1))
            bad_crc = good[:-1] + bytes([good[-1] ^ 0x55])
            other_unit = rtu(7, struct.pack(">BHH", 3, 303, 1))
            writer.write(bad_crc + other_unit + good[:4])  # the last one truncated
            await writer.drain()
            for _ in range(200):  # until the service has seen the line go quiet
                if service.stats().outcomes.get("ignored"):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            writer.write(good)
            async with asyncio.timeout(5):
                response = await reader.readexactly(7)
            assert response[:3] == bytes([21, 3, 2])
            stats = service.stats()
            assert stats.outcomes["checksum"] >= 1 and stats.outcomes["ignored"] == 1
            assert stats.valid_polls == 1 and stats.answered == 1
