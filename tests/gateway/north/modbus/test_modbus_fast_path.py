"""The Modbus server's hot path (issue 19) answers exactly what the general path answers.

Memoised read answers (per image build), on-demand image builds and the request budget are
checked over real sockets, on the standard library's event loop (pytest-asyncio) and on uvloop.
No timing is asserted: only answers, their order and the counters.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading

import pytest

from gateway.north.modbus.server import MAX_MEMO_ANSWERS, ModbusServer
from protocol.modbus.mbap import Adu, encode_adu
from protocol.modbus.pdu import build_read_request, build_write_single_request, parse_response
from tests.support.modbus_support import NOW, RawClient, make_store, running, snapshot

NATIVE = 2
BANK = 1
SOC_NATIVE = 14  # native bank block: soc_pct (x10) at register 14 (mappings/modbus native map)


def _native_soc(client: RawClient) -> int:
    return client.request(build_read_request(0, 41), unit=NATIVE).registers[SOC_NATIVE]


async def test_memoised_answers_equal_the_general_path_and_keep_pipelined_order() -> None:
    async with running(make_store()) as server:

        def go() -> list[tuple[int, int, bytes]]:
            with RawClient(server.port or 0) as c:
                # first pass: every read goes the general way and is memoised
                c.request(build_read_request(40000, 125), unit=BANK, tid=1)
                c.request(build_read_request(0, 41), unit=NATIVE, tid=2)
                assert len(server.answers) == 2
                # one chunk: hit, miss (a write: writes are off -> 0x01), hit, miss (new range), hit
                c.send(
                    encode_adu(10, BANK, build_read_request(40000, 125))
                    + encode_adu(11, BANK, build_write_single_request(40000, 1))
                    + encode_adu(12, NATIVE, build_read_request(0, 41))
                    + encode_adu(13, BANK, build_read_request(40002, 10))
                    + encode_adu(14, BANK, build_read_request(40000, 125))
                )
                return [c.recv_adu() for _ in range(5)]

        answers = await asyncio.to_thread(go)
        assert [(tid, unit) for tid, unit, _ in answers] == [(10, 1), (11, 1), (12, 2), (13, 1), (14, 1)]
        bank = parse_response(answers[0][2]).registers
        assert bank[:2] == (0x5375, 0x6E53)
        assert answers[1][2] == bytes((0x86, 0x01))
        assert parse_response(answers[3][2]).registers == bank[2:12]
        assert answers[4][2] == answers[0][2]
        # every request counted, memoised or not
        assert server.stats.requests_by_function[3] == 6
        assert server.stats.requests_by_function[6] == 1
        assert server.stats.requests_by_unit[NATIVE] == 2
        # the same bytes as the general path produces for the same request on this build
        server.answers.clear()
        general = server.handle(Adu(10, BANK, build_read_request(40000, 125)), "127.0.0.1")
        assert general == encode_adu(10, BANK, answers[0][2])


async def test_a_new_view_is_served_at_the_next_read_and_drops_the_memo() -> None:
    store = make_store((1,))
    async with running(store) as server:
        with RawClient(server.port or 0) as c:
            before = await asyncio.to_thread(_native_soc, c)
            builds = server.stats.image_builds
            for soc in (11.0, 12.0, 13.0):  # several views without a reader: no build
                store.publish(snapshot(1, soc_pct=soc), now=NOW)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            assert server.stats.image_builds == builds
            assert server.answers == {}
            after = await asyncio.to_thread(_native_soc, c)
            assert server.stats.image_builds == builds + 1  # one build, from the newest view
    assert before != after
    assert after == 130  # soc_pct x 10 of the newest view


async def test_the_memo_is_bounded_per_build() -> None:
    async with running(make_store()) as server:

        def go() -> None:
            with RawClient(server.port or 0) as c:
                for count in range(1, MAX_MEMO_ANSWERS + 20):
                    c.request(build_read_request(40000, 1 + count % 125, function=3 + count % 2), unit=BANK)

        await asyncio.to_thread(go)
        assert len(server.answers) <= MAX_MEMO_ANSWERS


async def test_the_request_budget_also_limits_memoised_answers() -> None:
    async with running(make_store(), request_rate_per_s=5.0, request_burst=2) as server:

        def go() -> list[int]:
            with RawClient(server.port or 0, timeout_s=10) as c:
                c.request(build_read_request(40000, 2), unit=BANK, tid=1)  # warms the memo (1 token)
                c.send(b"".join(encode_adu(20 + i, BANK, build_read_request(40000, 2)) for i in range(4)))
                return [c.recv_adu()[0] for _ in range(4)]

        tids = await asyncio.to_thread(go)
        assert tids == [20, 21, 22, 23]  # all answered, in order, none refused
        assert server.stats.throttled >= 1  # ... but not at once: the budget paused the connection


def test_the_server_on_uvloop_answers_like_on_the_stdlib_loop() -> None:
    if importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed (extra 'fast'); the stdlib loop is covered by every other test")
    import uvloop

    results: dict[str, object] = {}

    async def serve(port_ready: threading.Event, stop: asyncio.Event) -> None:
        results["loop"] = type(asyncio.get_running_loop()).__module__
        async with running(make_store()) as server:
            results["server"] = server
            port_ready.set()
            await stop.wait()

    port_ready = threading.Event()
    holder: dict[str, asyncio.Event | asyncio.AbstractEventLoop] = {}

    def thread_main() -> None:
        async def main() -> None:
            holder["stop"] = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            await serve(port_ready, holder["stop"])  # type: ignore[arg-type]

        uvloop.run(main())

    t = threading.Thread(target=thread_main, daemon=True)
    t.start()
    try:
        assert port_ready.wait(10)
        server = results["server"]
        assert isinstance(server, ModbusServer)
        with RawClient(server.port or 0) as c:
            first = c.request(build_read_request(40000, 125), unit=BANK, tid=3)
            second = c.request(build_read_request(40000, 125), unit=BANK, tid=4)  # memoised
            native = c.request(build_read_request(0, 41), unit=NATIVE)
            c.send(encode_adu(5, 99, build_read_request(0, 1)))
            unknown = c.recv_adu()
    finally:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        stop = holder["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
    assert results["loop"].startswith("uvloop")  # type: ignore[union-attr]
    assert first.registers[:2] == (0x5375, 0x6E53)
    assert second == first
    assert native.registers[1] == 3  # three packs
    assert unknown == (5, 99, bytes((0x83, 0x0A)))


async def test_memoised_answers_stay_counted_when_the_memo_is_dropped() -> None:
    """Hot-path hits live on the memo until read or dropped: a new build must not lose them."""
    store = make_store((1,))
    async with running(store) as server:

        def reads(n: int) -> None:
            with RawClient(server.port or 0) as c:
                for _ in range(n):
                    _native_soc(c)

        await asyncio.to_thread(reads, 5)  # 1 through the general path, 4 from the memo
        assert any(memo.hits for memo in server.answers.values())
        store.publish(snapshot(1, soc_pct=42.0), now=NOW)  # a new view drops the memo
        for _ in range(50):
            await asyncio.sleep(0)
            if not server.answers:
                break
        assert server.answers == {}
        await asyncio.to_thread(reads, 3)
        assert server.stats.requests_by_function[3] == 8
        assert server.stats.requests_by_unit[NATIVE] == 8
        assert server.stats.as_dict()["requests_by_function"] == {3: 8}
