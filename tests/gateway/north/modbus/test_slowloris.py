"""Modbus slowloris (issue 20, failure 5): 16 sockets each sending a byte now and then of a request
that never completes held every slot (any byte reset the idle timeout), and 0 of 11 new clients
were served. Now a request must complete `frame_timeout_s` after its first byte, an address has its
own connection cap, and a full server lets the oldest incomplete (or long idle) connection yield
its slot to a new client. The new clients here are a third-party client (pyModbusTCP)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

from pyModbusTCP.client import ModbusClient

from protocol.modbus.mbap import encode_adu
from protocol.modbus.pdu import build_read_request
from tests.support.modbus_support import RawClient, make_store, running

SUNS = [0x5375, 0x6E53]
FRAME = encode_adu(9, 1, build_read_request(40000, 2))  # 12 bytes; the slow sockets never send the last


class Dribblers:
    """`n` sockets that each send one byte of FRAME every `every_s`, never the last byte."""

    def __init__(self, port: int, n: int, every_s: float, sources: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.socks = [
            socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(sources[k % len(sources)], 0)
            )
            for k in range(n)
        ]
        self.closed_by_server: set[int] = set()
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(len(FRAME) - 1):
            for k, s in enumerate(self.socks):
                if k in self.closed_by_server:
                    continue
                try:
                    s.sendall(FRAME[i : i + 1])
                except OSError:
                    self.closed_by_server.add(k)
            if self._stop.wait(self._every_s):
                return
        self._stop.wait(30)  # hold the sockets (bounded) until the test ends

    def still_open(self) -> int:
        """Sockets the server has not closed (a closed one reads EOF or a reset)."""
        open_ = 0
        for k, s in enumerate(self.socks):
            if k in self.closed_by_server:
                continue
            s.setblocking(False)
            try:
                data = s.recv(16)
                if data == b"":
                    self.closed_by_server.add(k)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                self.closed_by_server.add(k)
                continue
            finally:
                with contextlib.suppress(OSError):
                    s.setblocking(True)
            open_ += 1
        return open_

    def __enter__(self) -> Dribblers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


def _read_with_a_real_client(port: int) -> list[int] | None:
    client = ModbusClient(host="127.0.0.1", port=port, unit_id=1, timeout=5.0, auto_open=True)
    try:
        return client.read_holding_registers(40000, 2)
    finally:
        client.close()


async def test_sixteen_slow_sockets_cannot_keep_new_clients_out() -> None:
    # the frame deadline far away: only the slot yielding can serve the new clients
    async with running(make_store(), max_connections=16, frame_timeout_s=60.0) as server:
        port = server.port or 0

        def go() -> tuple[list[list[int] | None], int]:
            # two attacker addresses, 8 each (the per-address cap), fill all 16 slots
            with Dribblers(port, 16, every_s=0.5, sources=("127.0.0.10", "127.0.0.11")) as slow:
                deadline = time.monotonic() + 10
                while server.stats.connections < 16 or not all(c.incomplete() for c in server._connections):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                served = [_read_with_a_real_client(port) for _ in range(11)]
                return served, slow.still_open()

        served, still_open = await asyncio.to_thread(go)
        assert served == [SUNS] * 11  # 11 of 11 new clients served (was 0 of 11)
        assert server.stats.connections_yielded >= 1 and server.stats.connections_rejected == 0
        # the oldest incomplete connection gave way (each new client leaves its slot free again)
        assert still_open < 16


async def test_a_request_must_complete_within_its_deadline() -> None:
    async with running(make_store(), frame_timeout_s=0.5) as server:
        port = server.port or 0

        def go() -> int:
            with Dribblers(port, 4, every_s=0.2) as slow:
                deadline = time.monotonic() + 10
                while slow.still_open():  # a byte every 0.2 s no longer keeps a slot
                    assert time.monotonic() < deadline, "slow sockets were never closed"
                    time.sleep(0.05)
                # a request split over writes but complete in time is served
                with RawClient(port) as c:
                    c.send(FRAME[:5])
                    time.sleep(0.1)
                    c.send(FRAME[5:])
                    return c.recv_adu()[0]

        assert await asyncio.to_thread(go) == 9
        assert server.stats.frames_timed_out == 4


async def test_one_address_cannot_take_every_slot() -> None:
    async with running(make_store(), max_connections=16, max_connections_per_client=3) as server:
        port = server.port or 0

        def go() -> tuple[bytes, list[int] | None]:
            busy = [RawClient(port) for _ in range(3)]
            try:
                for c in busy:  # each just completed a request: neither idle nor incomplete
                    assert list(c.request(build_read_request(40000, 2)).registers) == SUNS
                with RawClient(port) as extra:
                    try:
                        extra.send(FRAME)
                        refused = extra.sock.recv(100)
                    except ConnectionError:
                        refused = b""
                other = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
                )
                with contextlib.closing(other):
                    other.sendall(FRAME)
                    answer = other.recv(100)
                return refused, _registers(answer)
            finally:
                for c in busy:
                    c.close()

        refused, other = await asyncio.to_thread(go)
        assert refused == b"" and server.stats.connections_rejected == 1  # the 4th from one address
        assert other == SUNS  # another address is admitted


def _registers(answer: bytes) -> list[int]:
    pdu = answer[7:]
    assert pdu[0] == 3 and pdu[1] == 4, answer
    return [int.from_bytes(pdu[2:4], "big"), int.from_bytes(pdu[4:6], "big")]
