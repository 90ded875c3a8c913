"""Modbus/TCP server conformance over real sockets: framing, pipelining, exception codes, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app.config import ConfigError, ModbusConfig
from gateway.core.controls import Controls, OperationRequest, Source
from gateway.core.model import ModelStore
from gateway.north.modbus.server import ModbusServer
from protocol.modbus.mbap import Adu, encode_adu
from protocol.modbus.pdu import (
    build_read_request,
    build_read_write_request,
    build_write_multiple_request,
    build_write_single_request,
    parse_response,
)
from tests.support.modbus_support import NOW, RawClient, make_store, running, snapshot

SUNS = [0x5375, 0x6E53]
M802 = 40070  # model 802 starts here in the bank unit (after SunS and model 1)
NATIVE = 2


def _offset(name: str) -> int:
    offsets = {"SocRsvMax": 9, "SoCRsvMin": 10, "SoC": 11, "CtrlHb": 19, "AlmRst": 20, "SetOp": 50}
    return M802 + offsets[name]


async def test_pipelined_requests_all_answered_in_order() -> None:
    async with running(make_store()) as server:

        def go() -> list[tuple[int, int, bytes]]:
            with RawClient(server.port or 0) as c:
                c.send(
                    encode_adu(11, 1, build_read_request(40000, 2))
                    + encode_adu(12, 2, build_read_request(0, 1, function=4))
                    + encode_adu(13, 255, build_read_request(40000, 200 // 2))
                )
                return [c.recv_adu() for _ in range(3)]

        answers = await asyncio.to_thread(go)
    assert [(tid, unit) for tid, unit, _ in answers] == [(11, 1), (12, 2), (13, 255)]
    assert parse_response(answers[0][2]).registers == tuple(SUNS)
    assert parse_response(answers[1][2]).registers == (1,)  # native map version
    assert len(parse_response(answers[2][2]).registers) == 100


async def test_request_split_across_writes_and_tid_zero() -> None:
    async with running(make_store()) as server:

        def go() -> tuple[int, int, bytes]:
            with RawClient(server.port or 0) as c:
                frame = encode_adu(0, 1, build_read_request(40000, 4))
                for i in range(len(frame)):
                    c.send(frame[i : i + 1])
                return c.recv_adu()

        tid, unit, pdu = await asyncio.to_thread(go)
    assert (tid, unit) == (0, 1)
    assert parse_response(pdu).registers[:2] == tuple(SUNS)


@pytest.mark.parametrize(
    ("unit", "pdu", "code"),
    [
        (1, bytes.fromhex("2B0E0100"), 0x01),  # unsupported function
        (1, bytes.fromhex("0100000001"), 0x01),  # coils
        (1, build_read_request(0, 3), 0x02),  # probe at 0: not mapped
        (1, build_read_request(50000, 3), 0x02),  # probe at 50000: not mapped
        (1, build_read_request(40000, 126), 0x03),  # over 125
        (1, build_read_request(40000, 0), 0x03),
        (2, build_read_request(5000, 1), 0x02),  # native map: no such pack block
        (9, build_read_request(40000, 2), 0x0A),  # unit not configured
        (1, build_write_single_request(40000, 1), 0x01),  # writes disabled by default
        (1, bytes.fromhex("109C40007CF8") + b"\0" * 240, 0x03),  # FC16 quantity 124 > 123
        (1, bytes.fromhex("179C4000019C40007AF4") + b"\0" * 200, 0x03),  # FC23 write 122 > 121
        (1, build_read_write_request(40000, 126, 40000, [1]), 0x03),  # FC23 read over 125
    ],
)
async def test_exception_codes(unit: int, pdu: bytes, code: int) -> None:
    async with running(make_store()) as server:

        def go() -> tuple[int, int, bytes]:
            with RawClient(server.port or 0) as c:
                c.send(encode_adu(77, unit, pdu))
                return c.recv_adu()

        tid, runit, answer = await asyncio.to_thread(go)
        assert server.stats.exceptions_by_code[code] == 1
    assert (tid, runit) == (77, unit)
    assert answer == bytes((pdu[0] | 0x80, code))


async def test_offline_units_answer_0x0b() -> None:
    store = make_store((1, 2), offline=(1, 2))
    async with running(store, per_pack_unit_base=10) as server:

        def go() -> list[bytes]:
            out = []
            with RawClient(server.port or 0) as c:
                for unit in (1, 0, 11, 12, 2):
                    c.send(encode_adu(1, unit, build_read_request(40000 if unit != 2 else 0, 2)))
                    out.append(c.recv_adu()[2])
            return out

        bank, alias, pack1, pack2, native = await asyncio.to_thread(go)
        assert bank == alias == pack1 == pack2 == bytes((0x83, 0x0B))
        assert parse_response(native).registers == (1, 2)  # the native unit answers: version, packs
        # pack 1 comes back: its own unit and the bank answer again, pack 2 still 0x0B
        store.publish(snapshot(1), now=NOW)
        for _ in range(100):
            if server.units[11].online:
                break
            await asyncio.sleep(0.01)

        def again() -> list[bytes]:
            out = []
            with RawClient(server.port or 0) as c:
                for unit in (1, 11, 12):
                    c.send(encode_adu(1, unit, build_read_request(40000, 2)))
                    out.append(c.recv_adu()[2])
            return out

        bank, pack1, pack2 = await asyncio.to_thread(again)
    assert parse_response(bank).registers == tuple(SUNS)
    assert parse_response(pack1).registers == tuple(SUNS)
    assert pack2 == bytes((0x83, 0x0B))


async def test_fc3_and_fc4_read_the_same_image_on_every_bank_alias() -> None:
    async with running(make_store()) as server:

        def go() -> list[tuple[int, ...]]:
            with RawClient(server.port or 0) as c:
                return [
                    c.request(build_read_request(40000, 125, function=fc), unit=unit).registers
                    for fc in (3, 4)
                    for unit in (1, 0, 255)
                ]

        results = await asyncio.to_thread(go)
    assert all(r == results[0] for r in results)
    assert list(results[0][:2]) == SUNS


async def test_malformed_header_closes_only_that_connection() -> None:
    async with running(make_store()) as server:

        def go() -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
            with RawClient(server.port or 0) as good, RawClient(server.port or 0) as bad:
                # one valid request, then a header with protocol id 1: answer the first, then close
                bad.send(
                    encode_adu(1, 1, build_read_request(40000, 2))
                    + bytes.fromhex("0002 0001 0006 01 03 9C40 0002")
                )
                first = bad.recv_adu()[2]
                closed = bad.sock.recv(100)
                still = good.request(build_read_request(40000, 2)).registers
                with RawClient(server.port or 0) as fresh:
                    after = fresh.request(build_read_request(40000, 2)).registers
                return closed, still, after + parse_response(first).registers

        closed, still, after = await asyncio.to_thread(go)
        assert server.stats.malformed_frames == 1
    assert closed == b""
    assert list(still) == SUNS and list(after) == SUNS * 2


async def test_length_field_out_of_range_closes() -> None:
    async with running(make_store()) as server:

        def go() -> bytes:
            with RawClient(server.port or 0) as c:
                c.send(struct.pack(">HHHB", 1, 0, 300, 1) + b"\x03" * 10)
                return c.sock.recv(100)

        assert await asyncio.to_thread(go) == b""
        assert server.stats.malformed_frames == 1


async def test_connection_limit() -> None:
    async with running(make_store(), max_connections=2) as server:

        def go() -> tuple[bytes, tuple[int, ...]]:
            with RawClient(server.port or 0) as a, RawClient(server.port or 0) as b:
                a.request(build_read_request(40000, 1))
                b.request(build_read_request(40000, 1))
                with RawClient(server.port or 0) as c:
                    try:
                        c.send(encode_adu(1, 1, build_read_request(40000, 1)))
                        refused = c.sock.recv(100)
                    except ConnectionError:
                        refused = b""
                return refused, a.request(build_read_request(40000, 2)).registers

        refused, still = await asyncio.to_thread(go)
        assert server.stats.connections_rejected == 1
    assert refused == b""
    assert list(still) == SUNS


async def test_idle_connections_are_closed() -> None:
    async with running(make_store(), idle_timeout_s=0.2) as server:

        def go() -> bytes:
            with RawClient(server.port or 0, timeout_s=10) as c:
                c.request(build_read_request(40000, 1))
                return c.sock.recv(100)  # blocks until the server closes the idle connection

        assert await asyncio.to_thread(go) == b""
        assert server.stats.connections_idle_closed == 1


async def test_request_budget_delays_but_answers_everything() -> None:
    async with running(make_store(), request_rate_per_s=200.0, request_burst=5) as server:

        def go() -> list[int]:
            with RawClient(server.port or 0) as c:
                c.send(b"".join(encode_adu(t, 1, build_read_request(40000, 2)) for t in range(30)))
                return [c.recv_adu()[0] for _ in range(30)]

        tids = await asyncio.to_thread(go)
        assert server.stats.throttled > 0
    assert tids == list(range(30))


async def test_image_follows_the_model_and_is_never_torn() -> None:
    store = make_store((1,))
    async with running(store) as server:
        started, stop = threading.Event(), threading.Event()

        async def publisher() -> None:
            for _ in range(1000):  # until the reader has its first sample (bounded)
                if started.is_set():
                    break
                await asyncio.sleep(0.005)
            for i in range(60):
                store.publish(snapshot(1, soc_pct=float(10 + i % 50)), now=NOW)
                await asyncio.sleep(0.002)
            stop.set()

        def reader() -> list[tuple[int, ...]]:
            out: list[tuple[int, ...]] = []
            with RawClient(server.port or 0) as c:
                while not stop.is_set() and len(out) < 20000:
                    out.append(c.request(build_read_request(0, 41), unit=NATIVE).registers)
                    started.set()
            return out

        pub = asyncio.create_task(publisher())
        samples = await asyncio.to_thread(reader)
        await pub
    assert len({s[40] for s in samples}) > 1  # the image changed while we read
    for s in samples:
        # update_counter (40) and soc (14) come from the same view: view 1 is make_store's (76.5 %),
        # view k >= 2 the (k-2)th publish above (10 + (k - 2) % 50 %)
        expected = 76.5 if s[40] == 1 else 10 + (s[40] - 2) % 50
        assert s[14] == round(10 * expected)


async def test_per_pack_units_must_not_collide() -> None:
    store = ModelStore([("a", 1), ("b", 1)])
    with pytest.raises(ConfigError, match="share unit"):
        ModbusServer(ModbusConfig(per_pack_unit_base=10), store, Controls())
    with pytest.raises(ConfigError, match="used by"):
        ModbusServer(ModbusConfig(per_pack_unit_base=1), ModelStore([("a", 1)]), Controls())


# ------------------------------------------------------------------ writes


async def test_writes_become_caps_and_requests(caplog: pytest.LogCaptureFixture) -> None:
    controls = Controls()
    caplog.set_level(logging.INFO, logger="gateway.north.modbus.writes")
    async with running(make_store(), controls, writes=True, cap_timeout_s=120) as server:

        def go() -> dict[str, object]:
            out: dict[str, object] = {}
            with RawClient(server.port or 0) as c:
                out["setop"] = c.request(build_write_single_request(_offset("SetOp"), 2))
                out["rsv"] = c.request(build_write_single_request(_offset("SoCRsvMin"), 205))
                out["readback"] = c.request(build_read_request(_offset("SoCRsvMin"), 1)).registers
                out["hb_alm"] = c.request(build_write_multiple_request(_offset("CtrlHb"), [7, 1]))
                out["ro"] = c.request(build_write_single_request(_offset("SoC"), 500))
                out["range"] = c.request(build_write_single_request(_offset("SoCRsvMin"), 1001))
                out["setop_bad"] = c.request(build_write_single_request(_offset("SetOp"), 3))
                out["span_ro"] = c.request(build_write_multiple_request(_offset("SoCRsvMin"), [100, 100]))
                out["native_cap"] = c.request(build_write_single_request(100, 456), unit=NATIVE)
                out["native_read"] = c.request(build_read_request(100, 10), unit=NATIVE).registers
            return out

        out = await asyncio.to_thread(go)
        state = controls.state()
    assert out["readback"] == (205,)
    for key in ("setop", "rsv", "hb_alm", "native_cap"):
        assert not out[key].is_exception  # type: ignore[attr-defined]
    assert out["ro"].exception == 0x02  # type: ignore[attr-defined]
    assert out["range"].exception == 0x03  # type: ignore[attr-defined]
    assert out["setop_bad"].exception == 0x03  # type: ignore[attr-defined]
    assert out["span_ro"].exception == 0x02  # type: ignore[attr-defined]
    assert state.operation is OperationRequest.DISCONNECT
    assert state.value("soc_reserve_min_pct") == pytest.approx(20.5)
    assert state.value("max_charge_current_a") == pytest.approx(45.6)
    assert state.alarm_reset_requested_at is not None
    cap = controls.raw()[("soc_reserve_min_pct", Source.EMS)]
    assert cap.expires_at is not None and cap.expires_at - cap.set_at == pytest.approx(120)
    native: tuple[int, ...] = out["native_read"]  # type: ignore[assignment]
    assert (
        native[0] == 456 and native[1] == 0xFFFF and native[4] == 205 and native[6] == 120 and native[7] == 2
    )
    logged = [r.getMessage() for r in caplog.records if "write accepted" in r.getMessage()]
    assert any("point=802.SetOp value=2" in m for m in logged)
    assert any("point=native.max_charge_current_a value=45.6" in m for m in logged)
    assert all("client=127.0.0.1" in m for m in logged)
    assert len(logged) == 5  # SetOp, SoCRsvMin, CtrlHb, AlmRst, native cap; refused writes are not


async def test_model_124_limits_and_revert() -> None:
    controls = Controls()
    async with running(make_store(), controls, writes=True) as server:
        m124 = 40774  # after 803 and three 804/805 pairs (see the pysunspec2 test for the layout)

        def go() -> tuple[int, ...]:
            with RawClient(server.port or 0) as c:
                assert c.request(build_read_request(m124, 2)).registers == (124, 24)
                # evcc "hold": revert after 60 s, discharge limit active, discharge rate 0 %
                c.request(build_write_single_request(m124 + 15, 60))
                c.request(build_write_multiple_request(m124 + 5, [2]))
                c.request(build_write_single_request(m124 + 12, 0))
                return c.request(build_read_request(m124, 26)).registers

        regs = await asyncio.to_thread(go)
    raw = controls.raw()
    cap = raw[("max_discharge_current_a", Source.EMS)]
    assert cap.value == 0.0
    assert cap.expires_at is not None and cap.expires_at - cap.set_at == pytest.approx(60)
    assert controls.state(now=cap.set_at + 61).value("max_discharge_current_a") is None  # reverted
    assert regs[5] == 2 and regs[12] == 0 and regs[15] == 60


async def test_writes_refused_for_clients_not_on_the_allowlist() -> None:
    controls = Controls()
    async with running(make_store(), controls, writes=True, write_allowlist=["10.1.1.1"]) as server:

        def go() -> int | None:
            with RawClient(server.port or 0) as c:
                return c.request(build_write_single_request(_offset("SetOp"), 2)).exception

        assert await asyncio.to_thread(go) == 0x01
    assert controls.state().operation is OperationRequest.CONNECT


async def test_stop_closes_open_connections() -> None:
    store = make_store()
    server = ModbusServer(ModbusConfig(listen="127.0.0.1:0"), store, Controls())
    port = await server.start()

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    sock = await asyncio.to_thread(connect)
    for _ in range(100):
        if server.stats.connections == 1:
            break
        await asyncio.sleep(0.01)
    await server.stop()
    data = await asyncio.to_thread(sock.recv, 10)
    sock.close()
    assert data == b""
    assert server.stats.connections == 0


async def test_charge_policy_limits_are_served() -> None:
    from gateway.app.config import PolicyConfig
    from gateway.core.policy.decisions import DecisionStore
    from gateway.core.policy.engine import PolicyEngine

    store = make_store()
    decisions = DecisionStore()
    server = ModbusServer(ModbusConfig(listen="127.0.0.1:0"), store, Controls(), decisions=decisions)
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        decision = PolicyEngine(PolicyConfig()).evaluate(store.view, Controls().state(NOW), NOW)
        assert decision.has_data
        decisions.publish(decision)
        for _ in range(200):
            if server.units[NATIVE].image.registers(43, 1)[0] != 0xFFFF:
                break
            await asyncio.sleep(0.01)

        def go() -> tuple[tuple[int, ...], tuple[int, ...]]:
            with RawClient(server.port or 0) as c:
                return (
                    c.request(build_read_request(M802 + 45, 2)).registers,
                    c.request(build_read_request(0, 45), unit=NATIVE).registers,
                )

        sunspec, native = await asyncio.to_thread(go)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sunspec == (round(decision.charge_current_a * 10), round(decision.discharge_current_a * 10))
    assert native[41] == round(decision.charge_voltage_v * 100)
    assert native[43] == round(decision.charge_current_a * 10)
    assert native[44] == round(decision.discharge_current_a * 10)
    assert bool(native[7] & (1 << 8))  # limits valid
    assert bool(native[7] & (1 << 9)) == decision.charge_enabled


@given(unit=st.integers(0, 255), pdu=st.binary(min_size=1, max_size=253))
@settings(max_examples=100, deadline=None)
def test_any_request_gets_an_answer_and_never_raises(unit: int, pdu: bytes) -> None:
    server = ModbusServer(ModbusConfig(writes=True, per_pack_unit_base=10), make_store(), Controls())
    answer = server.handle(Adu(1, unit, pdu), "127.0.0.1")
    assert answer[:2] == b"\x00\x01" and answer[6] == unit
    assert answer[7] & 0x7F == pdu[0] & 0x7F


async def test_pack_units_are_read_only() -> None:
    async with running(make_store(), writes=True, per_pack_unit_base=10) as server:

        def go() -> int | None:
            with RawClient(server.port or 0) as c:
                return c.request(build_write_single_request(_offset("SetOp"), 2), unit=11).exception

        assert await asyncio.to_thread(go) == 0x02


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_a_client_that_does_not_read_is_not_read_either() -> None:
    from gateway.north.modbus.server import _Connection

    server = ModbusServer(ModbusConfig(), make_store(), Controls())
    conn = _Connection(server)
    transport = _FakeTransport()
    conn.connection_made(transport)
    conn.pause_writing()  # the transport's write buffer is above its high-water mark
    assert not transport.reading
    conn.data_received(
        encode_adu(1, 1, build_read_request(40000, 2)) + encode_adu(2, 1, build_read_request(40000, 2))
    )
    assert transport.written == []  # nothing processed while the client is not reading
    conn.resume_writing()
    assert transport.reading
    answers = b"".join(transport.written)
    assert [answers[0:2], answers[13:15]] == [b"\x00\x01", b"\x00\x02"]
    conn.connection_lost(None)
    assert server.stats.connections == 0


async def test_app_wiring_and_status_endpoint() -> None:
    import httpx

    from gateway.app.config import Config
    from gateway.app.context import AppContext
    from gateway.north.http.app import create_app

    ctx = AppContext(Config(modbus=ModbusConfig(listen="127.0.0.1:0")), None, make_store())
    server = ModbusServer.from_context(ctx)
    assert ctx.extras["modbus"] is server
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert ctx.endpoints["modbus"] == f"modbus-tcp://127.0.0.1:{server.port}"

        def go() -> None:
            with RawClient(server.port or 0) as c:
                c.request(build_read_request(40000, 2))
                c.request(build_read_request(0, 3))  # 0x02

        await asyncio.to_thread(go)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = (await client.get("/api/modbus")).json()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert body["port"] == server.port and body["writes"] is False
    assert body["units"]["1"]["kind"] == "sunspec-bank" and body["units"]["1"]["online"] is True
    assert body["units"]["2"]["kind"] == "native" and body["units"]["0"] == body["units"]["1"]
    assert body["stats"]["requests_by_function"] == {"3": 2}
    assert body["stats"]["exceptions_by_code"] == {"2": 1}


async def test_fc23_writes_then_reads_in_one_request() -> None:
    async with running(make_store(), writes=True) as server:

        def go() -> tuple[tuple[int, ...], int | None]:
            with RawClient(server.port or 0) as c:
                both = c.request(build_read_write_request(_offset("CtrlHb"), 2, _offset("CtrlHb"), [4321]))
                refused = c.request(build_read_write_request(40000, 1, _offset("SoC"), [1]))
                return both.registers, refused.exception

        registers, refused = await asyncio.to_thread(go)
    assert registers == (4321, 0)  # CtrlHb as just written, AlmRst reads 0
    assert refused == 0x02  # SoC is read-only


async def test_fc23_refused_when_writes_are_off() -> None:
    async with running(make_store()) as server:

        def go() -> int | None:
            with RawClient(server.port or 0) as c:
                return c.request(build_read_write_request(40000, 2, _offset("CtrlHb"), [1])).exception

        assert await asyncio.to_thread(go) == 0x01
