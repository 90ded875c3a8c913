"""Shutting the simulated bus down while masters are still connected: clean, nothing logged as an error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import TianpowerDecoder, TpFrame
from simulator import FaultSpec, Simulator, SimulatorOptions

REALTIME_1 = m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME))


async def _one_answer(reader: asyncio.StreamReader) -> TpFrame:
    decoder = TianpowerDecoder()
    for _ in range(50):
        data = await asyncio.wait_for(reader.read(4096), 5.0)
        assert data, "connection closed before the answer"
        decoder.feed(data)
        frames = [f for f in decoder.frames() if isinstance(f, TpFrame)]
        if frames:
            return frames[0]
    raise AssertionError("no answer")


async def test_close_with_connected_clients_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(SimulatorOptions(packs=2, pacing=False, turnaround_s=0.0))
    caplog.set_level(logging.WARNING)
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with sim.serve_tcp("127.0.0.1", 0) as server:
            for _ in range(3):
                clients.append(await asyncio.open_connection("127.0.0.1", server.port))
            reader, writer = clients[0]
            writer.write(REALTIME_1)
            await writer.drain()
            assert (await _one_answer(reader)).address == 1  # the bus served while clients were on
        # The server side is gone: every client sees the end of its stream.
        for reader, _writer in clients:
            await asyncio.wait_for(reader.read(), 5.0)  # whatever was still on the wire, then EOF
            assert reader.at_eof()
        for _ in range(5):  # let asyncio run the handlers' done-callbacks
            await asyncio.sleep(0)
    finally:
        for _reader, writer in clients:
            writer.close()
            await writer.wait_closed()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


async def test_close_while_an_answer_is_being_paced_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    # 1200 baud: the 130-byte answer takes about 1.1 s on the wire, close() lands in the middle.
    sim = Simulator(SimulatorOptions(packs=1, pacing=True, baud=1200, turnaround_s=0.0))
    caplog.set_level(logging.WARNING)
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(REALTIME_1)
        await writer.drain()
        first = await asyncio.wait_for(reader.read(1), 5.0)
        assert first == b"\x7e"  # the answer started
    try:
        rest = await asyncio.wait_for(reader.read(), 5.0)
        assert len(first + rest) < 130  # cut short by the shutdown, not finished first
    finally:
        writer.close()
        await writer.wait_closed()
    for _ in range(5):
        await asyncio.sleep(0)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


async def test_without_pacing_an_injected_delay_still_holds_the_answer_back() -> None:
    # --no-pacing drops the wire time and the turnaround (30 s here: applied, it would time the read
    # out), not the faults: a slow pack stays slow.
    # A lower bound only; a loaded machine can be slower, never faster.
    slow_s = 0.25
    sim = Simulator(
        SimulatorOptions(packs=2, pacing=False, turnaround_s=30.0, faults=FaultSpec(slow={1: slow_s}))
    )
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            writer.write(REALTIME_1)
            await writer.drain()
            frame = await _one_answer(reader)
            elapsed = loop.time() - start
        finally:
            writer.close()
            await writer.wait_closed()
    assert frame.address == 1 and elapsed >= slow_s
    assert sim.fault_counters["slow_responses"] == 1
