"""Shared helpers for the Modbus tests: synthetic pack snapshots, a running server, a raw client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Iterable

from gateway.app.config import ModbusConfig
from gateway.core.controls import Controls
from gateway.core.model import (
    Availability,
    LinkStats,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.modbus.server import ModbusServer
from protocol.modbus.mbap import encode_adu
from protocol.modbus.pdu import Response, parse_response
from tests.support.flags import by_kind

NOW = 1_790_000_000.0


def telemetry(
    address: int,
    *,
    cells: int = 16,
    current_a: float = 12.34,
    soc_pct: float = 76.5,
    balancing: Iterable[int] = (3,),
    protections: Iterable[str] = (),
    alarms: Iterable[str] = (),
) -> Telemetry:
    volts = [round(3.300 + 0.001 * ((i * 7 + address * 3) % 23), 3) for i in range(cells)]
    return Telemetry.build(
        measured_at=NOW - 1,
        cell_voltages_v=volts,
        temperatures=[
            Temperature(TempRole.CELL, 1, 21.0 + address),
            Temperature(TempRole.CELL, 2, 22.5),
            Temperature(TempRole.CELL, 3, 23.1),
            Temperature(TempRole.CELL, 4, 20.4),
            Temperature(TempRole.MOS, 1, 30.2),
        ],
        voltage_v=round(sum(volts), 2),
        current_a=current_a,
        soc_pct=soc_pct,
        soh_pct=98.0,
        full_capacity_ah=100.0,
        remaining_capacity_ah=soc_pct,
        nominal_capacity_ah=100.0,
        cycles=120 + address,
        charge_mos_on=True,
        discharge_mos_on=True,
        heater_on=False,
        fan_on=False,
        balancing_cells=balancing,
        flags=by_kind(protections, alarms),
    )


def snapshot(address: int, online: bool = True, bus: str = "bus1", **kw: object) -> PackSnapshot:
    return PackSnapshot(
        bus=bus,
        address=address,
        availability=Availability.ONLINE if online else Availability.OFFLINE,
        telemetry=telemetry(address, **kw) if online else None,  # type: ignore[arg-type]
        identity=PackIdentity(version="TP-LT55 V1.2", serial=f"SN{address:04d}", protocol="tianpower"),
        link=LinkStats(requests=10, responses=9, last_success_at=NOW - 1),
    )


def make_store(addresses: Iterable[int] = (1, 2, 3), offline: Iterable[int] = ()) -> ModelStore:
    addresses = list(addresses)
    store = ModelStore([("bus1", a) for a in addresses])
    off = set(offline)
    store.publish(*(snapshot(a, online=a not in off) for a in addresses), now=NOW)
    return store


@contextlib.asynccontextmanager
async def running(
    store: ModelStore, controls: Controls | None = None, **config: object
) -> AsyncIterator[ModbusServer]:
    cfg = ModbusConfig(listen="127.0.0.1:0", **config)  # type: ignore[arg-type]
    server = ModbusServer(cfg, store, controls or Controls())
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RawClient:
    """A blocking raw-socket Modbus/TCP client (run it in a thread from async tests)."""

    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_adu(self) -> tuple[int, int, bytes]:
        header = self._recv_exact(7)
        tid, _proto, length, unit = struct.unpack(">HHHB", header)
        return tid, unit, self._recv_exact(length - 1)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        return buf

    def request(self, pdu: bytes, unit: int = 1, tid: int = 7) -> Response:
        self.send(encode_adu(tid, unit, pdu))
        rtid, runit, rpdu = self.recv_adu()
        assert (rtid, runit) == (tid, unit)
        return parse_response(rpdu)
