"""Test-side helpers for the Pylontech RS485 tests: synthetic bank views and an independent decoder.

The decoder here is written from the reference's field tables without using the module under test,
so that responses are checked "the other direction".
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.core.model import (
    Availability,
    BankSnapshot,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
    aggregate,
)
from mappings.flags import load_outputs
from protocol.inverter.rs485.base import BankView, Identity, Limits, ModuleView

BUS = "rs485-test"


def ref_checksum(chars: bytes) -> int:
    total = 0
    for c in chars:
        total += c
    return (0x10000 - total % 0x10000) % 0x10000


def ref_length(info_chars: int) -> int:
    s = sum((info_chars >> shift) & 0xF for shift in (0, 4, 8))
    return (((~s) + 1) & 0xF) << 12 | info_chars


def ref_frame(ver: int, adr: int, cid1: int, cid2: int, info_hex: str = "") -> bytes:
    body = f"{ver:02X}{adr:02X}{cid1:02X}{cid2:02X}{ref_length(len(info_hex)):04X}{info_hex}".encode()
    return b"~" + body + f"{ref_checksum(body):04X}".encode() + b"\r"


@dataclass
class Decoded:
    ver: int
    adr: int
    cid1: int
    rtn: int
    info: bytes


def ref_decode(raw: bytes) -> Decoded:
    assert raw[:1] == b"~" and raw[-1:] == b"\r", raw
    text = raw[1:-1].decode()
    assert ref_checksum(text[:-4].encode()) == int(text[-4:], 16), "CHKSUM"
    length = int(text[8:12], 16)
    info_hex = text[12:-4]
    assert length == ref_length(len(info_hex)), "LENGTH"
    return Decoded(
        int(text[0:2], 16),
        int(text[2:4], 16),
        int(text[4:6], 16),
        int(text[6:8], 16),
        bytes.fromhex(info_hex),
    )


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def u24(self) -> int:
        value = int.from_bytes(self.data[self.pos : self.pos + 3], "big")
        self.pos += 3
        return value

    def text(self, n: int) -> str:
        value = self.data[self.pos : self.pos + n].decode("ascii")
        self.pos += n
        return value

    @property
    def rest(self) -> int:
        return len(self.data) - self.pos


def decode_module_analog(r: Reader) -> dict[str, Any]:
    """One 0x42 module block (after INFOFLAG and the address/count byte)."""
    m = r.take("B")
    cells = [r.take("H") / 1000 for _ in range(m)]
    n = r.take("B")
    temps = [(r.take("H") - 2731) / 10 for _ in range(n)]
    current = r.take("h") / 10
    voltage = r.take("H") / 1000
    rem1 = r.take("H")
    udef = r.take("B")
    full1 = r.take("H")
    cycles = r.take("H")
    if udef == 4:
        rem_ah, full_ah = r.u24() / 1000, r.u24() / 1000
        assert rem1 == 0xFFFF and full1 == 0xFFFF
    else:
        assert udef == 2
        rem_ah, full_ah = rem1 / 1000, full1 / 1000
    return {
        "cells": cells,
        "temps": temps,
        "current": current,
        "voltage": voltage,
        "remaining_ah": rem_ah,
        "full_ah": full_ah,
        "cycles": cycles,
    }


def decode_management(r: Reader, *, system: bool = False) -> dict[str, Any]:
    """0x92 values (after the address byte) or, with `system=True`, the 0x63 ones.

    Real packs send the 0x92 discharge current limit negative (captures `FE8E`, `FDD5`); this
    decoder checks the sign and returns the magnitude. 0x63 carries the magnitude (emulators)."""
    charge_v, discharge_v, charge_a = r.take("H") / 1000, r.take("H") / 1000, r.take("h") / 10
    raw_discharge = r.take("h")
    if system:
        assert raw_discharge >= 0, raw_discharge
    else:
        assert raw_discharge <= 0, f"0x92 discharge limit {raw_discharge} is not negative"
    return {
        "charge_v": charge_v,
        "discharge_v": discharge_v,
        "charge_a": charge_a,
        "discharge_a": abs(raw_discharge) / 10,
        "status": r.take("B"),
    }


def module(
    position: int,
    *,
    fresh: bool = True,
    soc: float = 80.0,
    current: float = 10.0,
    base_mv: int = 3300,
    full_ah: float = 280.0,
    **kw: object,
) -> ModuleView:
    cells = tuple((base_mv + position * 3 + i) / 1000 for i in range(16))
    values: dict[str, object] = {
        "position": position,
        "fresh": fresh,
        "pack": (BUS, position),
        "cell_voltages_v": cells,
        "board_temperature_c": 25.0 + position,
        "cell_temperatures_c": (21.0, 22.0, 22.5, 21.0 - position),
        "mos_temperature_c": 30.0 + position,
        "voltage_v": round(sum(cells), 3),
        "current_a": current,
        "soc_pct": soc,
        "soh_pct": 100.0 - position,
        "remaining_capacity_ah": round(full_ah * soc / 100, 3),
        "full_capacity_ah": full_ah,
        "cycles": 20 + position,
        "charge_mos_on": True,
        "discharge_mos_on": True,
        "heater_on": False,
        "serial": f"SN-PACK-{position:04d}",
        "software_version": (1, 2, 3, 4, 5),
    }
    values.update(kw)
    return ModuleView(**values)  # type: ignore[arg-type]


LIMITS = Limits(
    charge_voltage_v=55.2,
    discharge_voltage_v=48.0,
    charge_current_a=150.0,
    discharge_current_a=200.0,
    charge_enabled=True,
    discharge_enabled=True,
)


def pack_of(m: ModuleView) -> PackSnapshot:
    """The pack a module view stands for (as `gateway.north.rs485.service.module_view` would show it):
    its board sensor as a board sensor, its MOS sensor (only given beside a board one) as a MOS one."""
    key = m.pack or (BUS, m.position)
    if not m.cell_voltages_v:
        return PackSnapshot(key[0], key[1], Availability.OFFLINE)
    temps = [Temperature(TempRole.CELL, i + 1, t) for i, t in enumerate(m.cell_temperatures_c)]
    if m.board_temperature_c is not None:
        temps.append(Temperature(TempRole.BOARD, 1, m.board_temperature_c))
    if m.mos_temperature_c is not None:
        temps.append(Temperature(TempRole.MOS, 1, m.mos_temperature_c))
    t = Telemetry.build(
        measured_at=0.0,
        cell_voltages_v=m.cell_voltages_v,
        temperatures=temps,
        voltage_v=m.voltage_v,
        current_a=m.current_a,
        soc_pct=m.soc_pct,
        soh_pct=m.soh_pct,
        full_capacity_ah=m.full_capacity_ah,
        remaining_capacity_ah=m.remaining_capacity_ah,
        cycles=m.cycles,
    )
    availability = Availability.ONLINE if m.fresh else Availability.STALE
    return PackSnapshot(key[0], key[1], availability, telemetry=t)


def bank_of(modules: Iterable[ModuleView]) -> BankSnapshot:
    """The model's bank over the packs the modules stand for (what the gateway hands the responders)."""
    return aggregate((pack_of(m) for m in modules), 0.0)


def bank_view(modules: tuple[ModuleView, ...], *, limits: Limits = LIMITS, **kw: object) -> BankView:
    """A view of `modules` with the bank the model computes over their packs."""
    return BankView(flag_outputs=load_outputs(), modules=modules, limits=limits, bank=bank_of(modules), **kw)  # type: ignore[arg-type]


def bank(n: int = 3, *, limits: Limits = LIMITS, **kw: object) -> BankView:
    mods = tuple(module(i) for i in range(1, n + 1))
    return bank_view(mods, limits=limits, identity=Identity(), **kw)


def ref_crc(data: bytes) -> bytes:
    """Bitwise Modbus CRC-16, independent of the codec under test."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def read_req(address: int, count: int, unit: int = 21, fc: int = 3) -> bytes:
    return rtu(unit, struct.pack(">BHH", fc, address, count))


@dataclass
class Peer:
    """The inverter's side of a transparent RS485-to-Ethernet converter (the gateway connects)."""

    server: asyncio.Server
    port: int
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(5):
            return await self.conns.get()


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await conns.put((reader, writer))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield Peer(server, server.sockets[0].getsockname()[1], conns)
    finally:
        for w in writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        server.close()
        await server.wait_closed()


INFERRED_OPT_IN = {
    "pylon_inferred_stack_replies": True,
    "pylon_inferred_system_basic": True,
    "pylon_inferred_set_management": True,
    "pylon_inferred_system_analog": True,
}


async def pylon_poll(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        return await reader.readuntil(b"\r")


def rtu(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + ref_crc(body)
