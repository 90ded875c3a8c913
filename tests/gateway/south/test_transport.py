"""Transports: socket://, serial device paths (a pty), pyserial URL handlers in a thread, backoff."""

from __future__ import annotations

import asyncio
import os
import random
import tty

import pytest

from gateway.south.transport import (
    Backoff,
    ConnectionClosed,
    SerialSettings,
    TransportError,
    open_connection,
    parse_url,
)


def test_parse_url_kinds_and_errors() -> None:
    assert parse_url("/dev/ttyUSB0").kind == "serial"
    s = parse_url("socket://10.0.0.5:4001")
    assert (s.kind, s.host, s.port) == ("socket", "10.0.0.5", 4001)
    assert parse_url("rfc2217://host:2217").kind == "threaded"
    assert parse_url("loop://").kind == "threaded"
    with pytest.raises(ValueError, match="socket://HOST:PORT"):
        parse_url("socket://nohost")
    with pytest.raises(ValueError, match="unsupported bus URL scheme 'http'"):
        parse_url("http://x:1")
    with pytest.raises(ValueError, match="empty"):
        parse_url("  ")


def test_bits_per_byte() -> None:
    assert SerialSettings().bits_per_byte() == 10
    assert SerialSettings(parity="E", stopbits=2).bits_per_byte() == 12


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.25, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(6)]
    nominal = [1, 2, 4, 8, 8, 8]
    for d, n in zip(delays, nominal, strict=True):
        assert n * 0.75 <= d <= n * 1.25
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    b.reset()
    assert b.failures == 0 and b.nominal() == 1.0
    with pytest.raises(ValueError):
        Backoff(initial_s=0)


async def test_socket_roundtrip_flush_and_peer_close() -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = await open_connection(f"socket://127.0.0.1:{port}")
        r, w = await accepted.get()
        w.write(b"stale bytes from before")
        await w.drain()
        await asyncio.sleep(0.05)
        assert await conn.flush_input() == len(b"stale bytes from before")
        await conn.write(b"\x7e\x01\x01\x00")
        assert await r.readexactly(4) == b"\x7e\x01\x01\x00"
        w.write(b"answer")
        await w.drain()
        got = b""
        for _ in range(20):
            got += await conn.read(0.5)
            if len(got) >= 6:
                break
        assert got == b"answer"
        assert await conn.read(0.01) == b""  # timeout: nothing
        w.close()
        await w.wait_closed()
        with pytest.raises(ConnectionClosed):
            for _ in range(20):
                await conn.read(0.5)
        await conn.close()


async def test_socket_refused_is_transport_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(TransportError, match=str(port)):
        await open_connection(f"socket://127.0.0.1:{port}")
    with pytest.raises(TransportError, match="unsupported"):
        await open_connection("ftp://x:1")


async def test_serial_device_path_on_a_pty() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    name = os.ttyname(slave)
    try:
        conn = await open_connection(name, SerialSettings(baudrate=9600, parity="N", stopbits=2))
        await conn.write(b"ping")
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, os.read, master, 16)
        assert data == b"ping"
        os.write(master, b"pong")
        got = b""
        for _ in range(20):
            got += await conn.read(0.5)
            if len(got) >= 4:
                break
        assert got == b"pong"
        await conn.close()
    finally:
        os.close(master)
        os.close(slave)


async def test_threaded_handler_loop_url() -> None:
    conn = await open_connection("loop://", SerialSettings())
    await conn.write(b"\x7e\x02\x01\x00\x03\x0d")
    got = b""
    for _ in range(20):
        got += await conn.read(0.2)
        if len(got) >= 6:
            break
    assert got == b"\x7e\x02\x01\x00\x03\x0d"
    assert await conn.read(0.05) == b""
    await conn.close()
    with pytest.raises(ConnectionClosed):
        await conn.write(b"x")


async def test_missing_serial_device_is_transport_error() -> None:
    with pytest.raises(TransportError, match="/dev/does-not-exist"):
        await open_connection("/dev/does-not-exist-bms")
