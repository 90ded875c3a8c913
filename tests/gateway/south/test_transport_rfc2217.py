"""`rfc2217://` end to end: a minimal RFC 2217 server (pyserial's PortManager over a loop://
device, in threads) and the gateway's threaded connection talking to it, including the server
closing the connection."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import warnings
from collections.abc import Iterator

import pytest
import serial
from serial import rfc2217

from gateway.south.transport import ConnectionClosed, SerialSettings, open_connection


class _SockWriter:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._sock.sendall(data)


@contextlib.contextmanager
def rfc2217_server() -> Iterator[tuple[int, threading.Event, list[int]]]:
    """Serve one client; yields (port, a 'hang up now' event, the baud rates the client set)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    hang_up = threading.Event()
    bauds: list[int] = []
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        device = serial.serial_for_url("loop://", timeout=0.02)
        manager = rfc2217.PortManager(device, _SockWriter(conn))
        conn.settimeout(0.02)
        try:
            while not hang_up.is_set():
                with contextlib.suppress(TimeoutError):
                    data = conn.recv(1024)
                    if not data:
                        break
                    device.write(b"".join(manager.filter(data)))
                    if device.baudrate not in bauds:
                        bauds.append(device.baudrate)
                echoed = device.read(device.in_waiting or 1)
                if echoed:
                    conn.sendall(b"".join(manager.escape(echoed)))
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
            device.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, hang_up, bauds
    finally:
        hang_up.set()
        thread.join(5)
        listener.close()


# pyserial 3.5 rfc2217 client: Thread.setDaemon()/setName() warnings are pyserial's, not ours
@pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning", "ignore:setName:DeprecationWarning")
async def test_rfc2217_roundtrip_settings_and_hang_up() -> None:
    with rfc2217_server() as (port, hang_up, bauds):
        conn = await open_connection(f"rfc2217://127.0.0.1:{port}", SerialSettings(baudrate=19200))
        try:
            frame = bytes.fromhex("7e0101000d0d") + b"\x7e\xff"  # 0xFF is telnet IAC: must be escaped
            await conn.write(frame)
            got = b""
            for _ in range(50):
                got += await conn.read(0.1)
                if len(got) >= len(frame):
                    break
            assert got == frame  # the loop:// device echoed it through the telnet layer
            assert 19200 in bauds  # the remote port was configured over RFC 2217
            hang_up.set()
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await conn.write(b"x")
                    await conn.read(0.05)
        finally:
            await conn.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # no leaked socket
