"""Test support for the records and firmware tests: a simulator served on TCP with the gateway's own
bus owner (and optionally its poller) in front of it, packed into an `AppContext`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from gateway.app.config import BusConfig, parse_config
from gateway.app.context import AppContext
from gateway.core.model import ModelStore
from gateway.io.transport import SerialSettings
from gateway.north.http import HttpService, create_app
from gateway.north.http.records import install as install_records
from gateway.ops.security.auth import Principal, Role
from gateway.south.bus import BusOwner
from gateway.south.drivers.base import Driver
from gateway.south.drivers.pace import PaceDriver
from gateway.south.drivers.tianpower import TianpowerDriver
from gateway.south.poller import BusPoller
from protocol.bms import bootloader as bl
from simulator import Simulator, SimulatorOptions
from tests.support.admin_support import Stack, ThreadedGateway, admin_stack


class Who:
    """A caller (token id, role, client address), shaped like the admin channel's `Caller`."""

    def __init__(self, role: Role, token_id: str = "t-test", client: str = "127.0.0.1") -> None:
        self.principal = Principal(token_id, role)
        self.client = client


def make_sim(protocol: str = "tianpower", packs: int = 2, **kw: Any) -> Simulator:
    opts: dict[str, Any] = {
        "protocol": protocol,
        "packs": packs,
        "seed": 5,
        "pacing": False,
        "turnaround_s": 0.0,
        **kw,
    }
    return Simulator(SimulatorOptions(**opts))


def driver_for(protocol: str) -> Driver:
    return TianpowerDriver() if protocol == "tianpower" else PaceDriver()


async def wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def bus_owner(
    port: int, driver: Driver, *, gap_s: float = 0.0, timeout_s: float = 0.3, retries: int = 1
) -> AsyncIterator[BusOwner]:
    """The gateway's bus owner "sim", running and connected to socket://127.0.0.1:`port`."""
    owner = BusOwner.from_url(
        "sim",
        f"socket://127.0.0.1:{port}",
        SerialSettings(),
        driver.new_decoder,
        gap_s=gap_s,
        response_timeout_s=timeout_s,
        retries=retries,
        flush_after_connect_s=0.0,
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(owner.run(lambda: None))
        try:
            await wait_for(lambda: owner.connected, 5.0, "bus owner connection")
            yield owner
        finally:
            task.cancel()


@contextlib.asynccontextmanager
async def served_bus(
    sim: Simulator, driver: Driver, *, gap_s: float = 0.0, timeout_s: float = 0.3, retries: int = 1
) -> AsyncIterator[tuple[BusOwner, int]]:
    async with (
        sim.serve_tcp("127.0.0.1", 0) as server,
        bus_owner(server.port, driver, gap_s=gap_s, timeout_s=timeout_s, retries=retries) as owner,
    ):
        yield owner, server.port


@contextlib.asynccontextmanager
async def sim_context(
    sim: Simulator,
    tmp_path: Path,
    *,
    poll: bool = True,
    config: dict[str, Any] | None = None,
    realtime_interval_s: float = 0.2,
    timeout_s: float = 0.3,
) -> AsyncIterator[AppContext]:
    """An AppContext over the simulator's bus "sim" (its poller running when `poll`)."""
    protocol = sim.options.protocol
    driver = driver_for(protocol)
    async with served_bus(sim, driver, timeout_s=timeout_s) as (owner, port):
        bcfg = BusConfig(
            name="sim",
            url=f"socket://127.0.0.1:{port}",
            protocol=protocol,
            addresses=list(sim.addresses),
            request_gap_s=0.0,
            response_timeout_s=timeout_s,
            realtime_interval_s=realtime_interval_s,
            stale_after_s=1.0,
            offline_after_s=2.0,
        )
        cfg = parse_config({"state_dir": str(tmp_path), "bus": [bcfg.model_dump()], **(config or {})}, env={})
        store = ModelStore([("sim", a) for a in sim.addresses])
        ctx = AppContext(config=cfg, config_path=None, store=store)
        ctx.simulator = sim
        ctx.buses["sim"] = owner
        poller = BusPoller(cfg.bus[0], owner, store, driver)
        ctx.pollers["sim"] = poller
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(poller.run(lambda: None)) if poll else None
            try:
                if poll:
                    await wait_for(
                        lambda: all(s.online and s.identity.serial for s in store.view.packs.values()),
                        10.0,
                        "every pack online with its identity",
                    )
                yield ctx
            finally:
                if task is not None:
                    task.cancel()


def firmware_image() -> bytes:
    return bl.build_image("tianpower", "HY-PT003-B200LT55", NEW_VERSION, bytes(range(256)) * 12)


@contextlib.asynccontextmanager
async def records_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, httpx.AsyncClient, list[Any]]]:
    async with admin_stack(tmp_path, packs=2) as stack:
        fill_history(stack)
        services = install_records(stack.ctx)
        transport = httpx.ASGITransport(app=create_app(stack.ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield stack, client, services


async def wait_no_download(client: httpx.AsyncClient, stack: Stack) -> dict[str, Any]:
    for _ in range(1000):
        doc: dict[str, Any] = (
            await client.get("/api/history/jobs", headers=stack.auth(Role.OPERATOR))
        ).json()
        if not doc["running"]:
            return doc
        await asyncio.sleep(0.02)
    raise AssertionError("downloads did not finish")


NEW_VERSION = "HY-PT003-B200LT55-V1.2.0"


def fill_history(stack: Stack) -> None:
    now = stack.sim.epoch_s
    for address in stack.sim.addresses:
        for k in range(RECORDS, 0, -1):
            stack.sim.pack(address).record("timing", now - k * 3600)


RECORDS = 200


class RecordsGateway(ThreadedGateway):
    """The threaded admin gateway with the records API installed too."""

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with admin_stack(self.tmp, **self.options) as stack:
            self.stack = stack
            fill_history(stack)
            install_records(stack.ctx)
            http = HttpService(stack.ctx, "127.0.0.1:0")
            started = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(http.run(started.set))
                try:
                    await asyncio.wait_for(started.wait(), 10)
                    self.url = f"http://127.0.0.1:{http.port}"
                    self._ready.set()
                    await self._stop.wait()
                finally:
                    task.cancel()
