"""Poller + bus owner + real drivers against the simulator on TCP: auto-detection, PACE bank
through the master, and the scan command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.app.config import BusConfig
from gateway.cli import scan as scan_cmd
from gateway.core.model import Availability, ModelStore
from gateway.south.bus import BusOwner
from gateway.south.poller import BusPoller, available_families, load_driver
from gateway.south.transport import SerialSettings
from simulator import Simulator, SimulatorOptions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def sim(protocol: str, packs: int = 3) -> Simulator:
    return Simulator(
        SimulatorOptions(protocol=protocol, packs=packs, profile="idle", pacing=False, turnaround_s=0.002)  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def polling(cfg: BusConfig) -> AsyncIterator[tuple[BusPoller, ModelStore]]:
    store = ModelStore([(cfg.name, a) for a in cfg.addresses])
    driver = None if cfg.protocol == "auto" else load_driver(cfg.protocol)
    owner = BusOwner.from_url(
        cfg.name,
        cfg.url,
        SerialSettings(),
        driver.new_decoder if driver else None,
        gap_s=cfg.request_gap_s,
        response_timeout_s=cfg.response_timeout_s,
        retries=cfg.retries,
    )
    poller = BusPoller(cfg, owner, store, driver)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(owner.run(lambda: None)), tg.create_task(poller.run(lambda: None))]
        try:
            yield poller, store
        finally:
            for t in tasks:
                t.cancel()


async def until(cond: object, limit_s: float = 15.0) -> None:
    for _ in range(int(limit_s / 0.02)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def bus_cfg(port: int, **kw: object) -> BusConfig:
    base: dict[str, object] = {
        "name": "b",
        "url": f"socket://127.0.0.1:{port}",
        "addresses": [1, 2, 3],
        "request_gap_s": 0.0,
        "response_timeout_s": 0.3,
        "realtime_interval_s": 0.1,
    }
    base.update(kw)
    return BusConfig.model_validate(base)


@pytest.mark.parametrize("family", ["tianpower", "pace"])
async def test_auto_detects_the_family_and_polls(family: str) -> None:
    s = sim(family)
    async with (
        s.serve_tcp("127.0.0.1", 0) as server,
        polling(bus_cfg(server.port, protocol="auto")) as (p, store),
    ):
        await until(lambda: all(x.availability is Availability.ONLINE for x in store.view.packs.values()))
        assert p.detected_family == family and p.driver is not None and p.driver.family == family
        snap = store.view.pack("b", 2)
        assert snap is not None and snap.telemetry is not None
        assert snap.telemetry.soc_pct == pytest.approx(s.truth(2).soc_pct, abs=0.01)
        assert snap.identity.protocol == family


async def test_pace_bank_through_the_master_only() -> None:
    s = sim("pace")
    async with s.serve_tcp("127.0.0.1", 0) as server:
        cfg = bus_cfg(server.port, protocol="pace", pace_master_only=True)
        async with polling(cfg) as (p, store):
            await until(lambda: all(x.telemetry is not None for x in store.view.packs.values()))
            for addr in (1, 2, 3):
                t = store.view.pack("b", addr).telemetry  # type: ignore[union-attr]
                assert t is not None
                assert t.cell_voltages_v == pytest.approx(s.truth(addr).cell_voltages_v, abs=1e-3)
            counters = p.owner.counters
            assert p.owner.pack_counters(2).requests == 0  # nothing addressed to the slaves
            assert counters.requests == p.owner.pack_counters(1).requests


async def test_scan_finds_family_and_addresses() -> None:
    s = Simulator(
        SimulatorOptions(protocol="tianpower", packs=2, first_address=4, pacing=False, turnaround_s=0.002)
    )
    async with s.serve_tcp("127.0.0.1", 0) as server:
        url = f"socket://127.0.0.1:{server.port}"
        args = argparse.Namespace(
            url=url, baud=9600, parity="N", stopbits=1, gap=0.0, timeout=0.15, addresses=list(range(1, 8))
        )
        code, found = await scan_cmd._scan(args, available_families())
    assert code == 0 and found == {"tianpower": [4, 5]}
    snippet = scan_cmd.snippet("bus1", url, found)
    assert 'protocol = "tianpower"' in snippet and "addresses = [4, 5]" in snippet


def test_scan_command_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    assert main(["scan", "http://x:1"]) == 2
    assert main(["scan", "socket://127.0.0.1:1", "--protocol", "modbus"]) == 2
    assert "unknown protocol" in capsys.readouterr().err
    assert main(["scan", "socket://127.0.0.1:1", "--addresses", "1"]) == 3
    assert "cannot open" in capsys.readouterr().err


async def test_bus_vanishing_makes_packs_stale_then_offline_and_they_recover() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = sim("tianpower", packs=2)
    # the stale phase lasts offline - stale = 2 s: long enough to be observed on a loaded machine
    cfg = bus_cfg(port, protocol="tianpower", addresses=[1, 2], stale_after_s=0.6, offline_after_s=2.6)
    server_cm = s.serve_tcp("127.0.0.1", port)
    await server_cm.__aenter__()
    async with polling(cfg) as (p, store):
        states = lambda: {x.availability for x in store.view.packs.values()}  # noqa: E731
        await until(lambda: states() == {Availability.ONLINE})
        await server_cm.__aexit__(None, None, None)  # the converter disappears
        await until(lambda: states() == {Availability.STALE}, 5)
        await until(lambda: states() == {Availability.OFFLINE}, 5)
        assert p.owner.counters.disconnects >= 1
        assert all(x.telemetry is not None for x in store.view.packs.values())  # last values kept
        server_cm = s.serve_tcp("127.0.0.1", port)
        await server_cm.__aenter__()  # and comes back: reconnect with backoff, packs recover
        try:
            await until(lambda: states() == {Availability.ONLINE}, 15)
            assert p.owner.counters.connects >= 2
        finally:
            await server_cm.__aexit__(None, None, None)
