"""A scripted driver and a poller over a bus owner without a link, for the poller tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from gateway.app.config import BusConfig
from gateway.core.model import (
    ClockReading,
    ModelStore,
    PackIdentity,
    ParameterReading,
    ParameterSet,
    Telemetry,
)
from gateway.south.bus import BusOwner
from gateway.south.drivers.base import BusClient, Driver, Unsupported
from gateway.south.poller import BusPoller
from gateway.south.transport import Connection, TransportError
from protocol.bms.base import Frame, FrameDecoder


def telemetry(now: float, soc: float = 50.0) -> Telemetry:
    return Telemetry.build(
        measured_at=now,
        cell_voltages_v=[3.3, 3.31],
        temperatures=[],
        voltage_v=6.61,
        current_a=1.0,
        soc_pct=soc,
    )


class ScriptedDriver(Driver):
    family = "scripted"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_realtime: dict[int, Exception] = {}
        self.clock_unsupported = False

    def new_decoder(self) -> FrameDecoder:
        return _NullDecoder()

    async def read_realtime(self, bus: BusClient, address: int, now: float) -> Telemetry:
        self.calls.append(("realtime", address))
        if address in self.fail_realtime:
            raise self.fail_realtime[address]
        return telemetry(now, soc=10.0 * address)

    async def read_identity(self, bus: BusClient, address: int) -> PackIdentity:
        self.calls.append(("identity", address))
        return PackIdentity(version=f"V{address}", serial=f"SN{address}")

    async def read_parameters(self, bus: BusClient, address: int, now: float) -> ParameterSet:
        self.calls.append(("parameters", address))
        return ParameterSet.of(now, [ParameterReading("CELL_OV_Start", 3.65, "V")])

    async def read_clock(self, bus: BusClient, address: int, now: float) -> ClockReading:
        self.calls.append(("clock", address))
        if self.clock_unsupported:
            raise Unsupported("no clock")
        return ClockReading(now + 2.0, now)

    async def probe(self, bus: BusClient, address: int) -> bool:
        return True

    async def read_bank_realtime(
        self, bus: BusClient, master: int, now: float, *, addresses: Sequence[int] | None = None
    ) -> Mapping[int, Telemetry]:
        self.calls.append(("bank", master))
        assert addresses is not None and addresses[0] == master  # the poller names the bank's packs
        return {1: telemetry(now, 11.0), 2: telemetry(now, 22.0), 9: telemetry(now, 99.0)}


def make(cfg: BusConfig, driver: Driver, **kw: object) -> tuple[BusPoller, ModelStore, BusOwner]:
    store = ModelStore([(cfg.name, a) for a in cfg.addresses])
    owner = BusOwner(cfg.name, _no_link, None)
    return BusPoller(cfg, owner, store, driver, **kw), store, owner  # type: ignore[arg-type]


async def run_until(poller: BusPoller, cond: object, limit_s: float = 5.0) -> None:
    ready = asyncio.Event()
    task = asyncio.ensure_future(poller.run(ready.set))
    try:
        async with asyncio.timeout(limit_s):
            for _ in range(int(limit_s / 0.01)):
                if cond():  # type: ignore[operator]
                    break
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ready.is_set()


def cfg(**kw: object) -> BusConfig:
    base: dict[str, object] = {"name": "b1", "url": "socket://127.0.0.1:1", "addresses": [1, 2]}
    base.update(kw)
    return BusConfig.model_validate(base)


class _NullDecoder(FrameDecoder):
    def next_frame(self) -> Frame | None:
        return None


async def _no_link() -> Connection:
    raise TransportError("unused")
