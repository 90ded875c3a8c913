"""`BusPoller.pause` / `resume`: no reads addressed to a paused pack while the others keep being
polled, the reason visible in its snapshot and over HTTP, everything read again at once on resume."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.app.config import Config
from gateway.app.context import AppContext
from gateway.core.model import Availability
from gateway.north.documents import pack_answer
from gateway.north.http.app import gateway_status
from tests.support.poller_support import ScriptedDriver, cfg, make, run_until, telemetry


async def test_a_paused_pack_is_not_read_and_says_why() -> None:
    driver = ScriptedDriver()
    poller, store, _ = make(cfg(realtime_interval_s=0.02), driver)
    await run_until(poller, lambda: driver.calls.count(("clock", 2)) == 1)

    poller.pause(2, "firmware upgrade (job j1)")
    snap = store.view.pack("b1", 2)
    assert snap is not None and snap.paused == "firmware upgrade (job j1)"  # published at once
    assert pack_answer(snap)["paused"] == "firmware upgrade (job j1)"
    assert poller.paused() == {2: "firmware upgrade (job j1)"}
    before = len(driver.calls)
    n1 = driver.calls.count(("realtime", 1))
    await run_until(poller, lambda: driver.calls.count(("realtime", 1)) >= n1 + 5)
    assert [c for c in driver.calls[before:] if c[1] == 2] == []  # nothing addressed to pack 2
    other = store.view.pack("b1", 1)
    assert other is not None and other.paused is None and pack_answer(other)["paused"] is None


async def test_resume_reads_everything_again_at_once() -> None:
    driver = ScriptedDriver()
    driver.clock_unsupported = True
    # long slow-read intervals: only a resume can explain a second identity/parameters read
    poller, store, _ = make(
        cfg(realtime_interval_s=0.02, identity_interval_s=3600, parameters_interval_s=3600), driver
    )
    await run_until(poller, lambda: driver.calls.count(("clock", 2)) == 1)
    poller.pause(2, "maintenance")
    poller.resume(2)
    snap = store.view.pack("b1", 2)
    assert snap is not None and snap.paused is None and poller.paused() == {}
    await run_until(
        poller,
        lambda: driver.calls.count(("identity", 2)) == 2 and driver.calls.count(("parameters", 2)) == 2,
    )
    assert driver.calls.count(("clock", 2)) == 1  # Unsupported stays off after a resume
    assert driver.calls.count(("identity", 1)) == 1  # the other pack is not re-read
    poller.resume(2)  # not paused: nothing happens
    assert poller.paused() == {}


async def test_availability_follows_the_last_good_read_while_paused() -> None:
    wall = [1000.0]
    poller, store, _ = make(cfg(stale_after_s=10, offline_after_s=20), ScriptedDriver(), wall=lambda: wall[0])
    poller._accept(poller.packs[1], telemetry(1000.0))
    poller.pause(1, "firmware upgrade (job j2)")
    wall[0] = 1015.0
    poller._refresh_availability()
    snap = store.view.pack("b1", 1)
    assert snap is not None and snap.availability is Availability.STALE  # not faked online
    assert snap.paused == "firmware upgrade (job j2)"


async def test_pace_master_only_pausing() -> None:
    driver = ScriptedDriver()
    poller, store, _ = make(cfg(addresses=[1, 2, 3], pace_master_only=True, realtime_interval_s=0.02), driver)
    await run_until(poller, lambda: driver.calls.count(("bank", 1)) >= 1)
    # a paused member ignores its part of the bank answer
    poller.pause(2, "firmware upgrade (job j3)")
    held = store.view.pack("b1", 2)
    assert held is not None and held.telemetry is not None
    n = driver.calls.count(("bank", 1))
    await run_until(poller, lambda: driver.calls.count(("bank", 1)) >= n + 3)
    after = store.view.pack("b1", 2)
    master = store.view.pack("b1", 1)
    assert after is not None and after.telemetry is not None and master is not None
    assert after.telemetry.measured_at == held.telemetry.measured_at
    assert master.telemetry is not None and master.telemetry.measured_at > held.telemetry.measured_at
    # pausing the master pauses the bank read (every request goes to the master)
    poller.pause(1, "firmware upgrade (job j4)")
    before = len(driver.calls)
    poller.resume(2)
    n_id = driver.calls.count(("identity", 1))
    await run_until(poller, _after_checks(20))  # ~20 poll intervals
    assert driver.calls[before:] == []
    poller.resume(1)
    await run_until(poller, lambda: driver.calls.count(("identity", 1)) == n_id + 1)
    assert ("bank", 1) in driver.calls[before:]


def _after_checks(n: int) -> Callable[[], bool]:
    """A run_until condition that holds after it was checked `n` times (a bounded wait)."""
    seen = [0]

    def cond() -> bool:
        seen[0] += 1
        return seen[0] > n

    return cond


def test_bad_pause_requests_are_refused_clearly() -> None:
    poller, _, _ = make(cfg(), ScriptedDriver())
    with pytest.raises(KeyError, match="no pack 7 on bus 'b1'"):
        poller.pause(7, "x")
    with pytest.raises(KeyError, match="no pack 7"):
        poller.resume(7)
    with pytest.raises(ValueError, match="needs a reason"):
        poller.pause(1, "  ")
    assert poller.paused() == {}


def test_gateway_status_lists_the_paused_packs_of_each_bus() -> None:
    bus = cfg()
    poller, store, owner = make(bus, ScriptedDriver())
    ctx = AppContext(config=Config(bus=[bus]), config_path=None, store=store)
    ctx.pollers[bus.name] = poller
    ctx.buses[bus.name] = owner
    assert gateway_status(ctx, 0.0)["buses"]["b1"]["paused"] == {}
    poller.pause(2, "firmware upgrade (job j5)")
    assert gateway_status(ctx, 0.0)["buses"]["b1"]["paused"] == {"2": "firmware upgrade (job j5)"}
