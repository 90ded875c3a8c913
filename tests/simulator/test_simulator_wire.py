"""The simulated bus on real byte streams: TCP, pacing, several masters, faults on the wire, pty, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import TianpowerDecoder, TpFrame
from protocol.errors import RemoteProtocolError
from simulator import FaultSpec, Simulator, SimulatorOptions

REALTIME_1 = m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME))


def _sim(**kw: object) -> Simulator:
    opts = {"protocol": "tianpower", "packs": 2, "seed": 11, "pacing": False, "turnaround_s": 0.0, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


async def _read_frames(reader: asyncio.StreamReader, want: int, timeout_s: float = 5.0) -> list[TpFrame]:
    decoder = TianpowerDecoder()
    frames: list[TpFrame] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out with {len(frames)} of {want} frames"
        data = await asyncio.wait_for(reader.read(4096), left)
        assert data, "connection closed"
        decoder.feed(data)
        frames += [f for f in decoder.frames() if isinstance(f, TpFrame)]
    return frames


async def test_response_takes_at_least_its_wire_time_plus_turnaround() -> None:
    baud, turnaround = 9600, 0.05
    sim = _sim(pacing=True, baud=baud, turnaround_s=turnaround)
    expected_len = len(await sim.handle(REALTIME_1))
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            start = time.monotonic()
            writer.write(REALTIME_1)
            await writer.drain()
            (frame,) = await _read_frames(reader, 1)
            elapsed = time.monotonic() - start
        finally:
            writer.close()
            await writer.wait_closed()
    assert len(frame.raw) == expected_len == 130
    lower_bound = expected_len * 10 / baud + turnaround
    assert elapsed >= lower_bound  # a lower bound only: the machine may be slower, never faster


async def test_several_masters_share_the_bus() -> None:
    sim = _sim()
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        ra, wa = await asyncio.open_connection("127.0.0.1", server.port)
        rb, wb = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await asyncio.sleep(0.05)  # both connected before anything is sent
            wa.write(REALTIME_1)
            await wa.drain()
            got_a = await _read_frames(ra, 1)
            got_b = await _read_frames(rb, 2)  # B hears A's request and the answer
            assert got_a[0].address == 1 and not got_a[0].is_request
            assert got_b[0].is_request and got_b[0].raw == REALTIME_1
            assert got_b[1].raw == got_a[0].raw
            # Requests from both masters, back to back: one answer at a time, in order.
            wb.write(m.encode_request(m.ReadRequest(2, m.Cmd.VERSION)))
            wa.write(m.encode_request(m.ReadRequest(1, m.Cmd.BARCODE)))
            await wb.drain()
            await wa.drain()
            answers = [f for f in await _read_frames(ra, 3) if not f.is_request]
            assert [(f.address, f.command) for f in answers[:2]] == [(2, 0x33), (1, 0x42)] or [
                (f.address, f.command) for f in answers[:2]
            ] == [(1, 0x42), (2, 0x33)]
        finally:
            for w in (wa, wb):
                w.close()
                await w.wait_closed()
    counters = sim.fault_counters
    assert counters["responses"] == 3 and sum(v for k, v in counters.items() if k != "responses") == 0


async def test_corrupted_responses_fail_their_checksum_on_the_wire() -> None:
    sim = _sim(faults=FaultSpec(corrupt_byte_prob=0.01))
    n = 60
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            valid = errors = 0
            decoder = TianpowerDecoder()
            for _ in range(n):
                writer.write(REALTIME_1)
                await writer.drain()
                # Read exactly one response's bytes (the length never changes: LEN is protected).
                data = await asyncio.wait_for(reader.readexactly(130), 5.0)
                decoder.feed(data)
                for item in decoder.frames():
                    if isinstance(item, RemoteProtocolError):
                        errors += 1
                    else:
                        valid += 1
                decoder.clear()  # a rejected frame leaves its tail behind: drop it before the next
        finally:
            writer.close()
            await writer.wait_closed()
    corrupted = sim.fault_counters["corrupted_responses"]
    assert corrupted > 0
    assert valid == n - corrupted


async def test_pty_carries_the_bus() -> None:
    sim = _sim()
    async with sim.serve_tcp("127.0.0.1", 0, pty=True) as server:
        assert server.pty_path is not None and server.pty_path.startswith("/dev/")
        fd = os.open(server.pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            os.write(fd, REALTIME_1)
            decoder = TianpowerDecoder()
            frames: list[TpFrame] = []
            for _ in range(200):
                await asyncio.sleep(0.01)
                try:
                    decoder.feed(os.read(fd, 4096))
                except BlockingIOError:
                    continue
                frames += [f for f in decoder.frames() if isinstance(f, TpFrame)]
                if frames:
                    break
            assert frames and frames[0].command == 0x01 and frames[0].address == 1
        finally:
            os.close(fd)


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_cli_simulate_prints_where_it_listens_and_serves(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.simulate", "--protocol", "pace", "--packs", "2", "--listen",
         "127.0.0.1:0", "--no-pacing", "--seed", "4", "--state", str(state), "--faults", "echo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening: 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        async def poll() -> bytes:
            from protocol.bms.pace import commands as pc

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                req = pc.analog_request(1)
                writer.write(req)
                await writer.drain()
                data = b""
                while data.count(b"\r") < 2:  # the echo, then the answer
                    data += await asyncio.wait_for(reader.read(4096), 5.0)
                return data
            finally:
                writer.close()
                await writer.wait_closed()

        data = asyncio.run(poll())
        assert data.startswith(b"~25014642") and b"~25014600" in data
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "fault echoed: 1" in out
        assert state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    from gateway.cli.simulate import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--state", str(blocker / "state.json")]) == 2  # its directory is a file
    assert main(["--faults", "corrupt=2"]) == 2
    assert main(["--packs", "16"]) == 2
    assert main(["--faults", "bogus"]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["--listen", f"127.0.0.1:{busy.getsockname()[1]}"]) == 3
