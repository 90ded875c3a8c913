"""The poller's schedules, availability rules and failure handling, with a scripted driver."""

from __future__ import annotations

import logging

import pytest

from gateway.app.config import BusConfig
from gateway.core.model import (
    Availability,
)
from gateway.south.drivers.base import DeviceError, NoResponse
from tests.support.poller_support import ScriptedDriver, cfg, make, run_until, telemetry


def test_availability_thresholds() -> None:
    wall = [1000.0]
    poller, _, _ = make(cfg(stale_after_s=15, offline_after_s=60), ScriptedDriver(), wall=lambda: wall[0])
    st = poller.packs[1]
    assert poller.availability_of(st, 1001.0) is Availability.UNKNOWN
    assert poller.availability_of(st, 1060.0) is Availability.OFFLINE  # never answered
    st.last_success_at = 1000.0
    assert poller.availability_of(st, 1014.9) is Availability.ONLINE
    assert poller.availability_of(st, 1015.0) is Availability.STALE
    assert poller.availability_of(st, 1059.9) is Availability.STALE
    assert poller.availability_of(st, 1060.0) is Availability.OFFLINE


def test_default_thresholds_make_a_vanished_pack_stale_within_20_s() -> None:
    c = BusConfig(name="b", url="socket://h:1")
    assert c.stale_after_s + 1.0 <= 20.0  # + the watchdog period
    assert c.offline_after_s > c.stale_after_s


async def test_schedules_identity_parameters_clock_once_and_realtime_repeatedly() -> None:
    driver = ScriptedDriver()
    poller, store, _ = make(cfg(realtime_interval_s=0.02), driver)
    await run_until(poller, lambda: driver.calls.count(("realtime", 1)) >= 4)
    for what in ("identity", "parameters", "clock"):
        assert driver.calls.count((what, 1)) == 1
        assert driver.calls.count((what, 2)) == 1
    # identity etc. only after the first good realtime read
    assert driver.calls.index(("realtime", 1)) < driver.calls.index(("identity", 1))
    snap = store.view.pack("b1", 2)
    assert snap is not None and snap.availability is Availability.ONLINE
    assert snap.telemetry is not None and snap.telemetry.soc_pct == 20.0
    assert snap.identity.serial == "SN2" and snap.identity.protocol == "scripted"
    assert snap.parameters is not None and snap.parameters.get("CELL_OV_Start") == 3.65
    assert snap.clock is not None and snap.clock.drift_s == pytest.approx(2.0)
    assert store.view.bank.packs_online == 2


async def test_parameter_refresh_on_request() -> None:
    driver = ScriptedDriver()
    poller, _, _ = make(cfg(realtime_interval_s=0.02), driver)
    requested = [False]

    def cond() -> bool:
        if driver.calls.count(("parameters", 2)) == 1 and not requested[0]:
            poller.request_parameters_refresh(("b1", 2))
            requested[0] = True
        return driver.calls.count(("parameters", 2)) == 2

    await run_until(poller, cond)
    assert driver.calls.count(("parameters", 1)) == 1
    with pytest.raises(KeyError, match="no pack 7"):
        poller.request_parameters_refresh(("b1", 7))


async def test_failures_never_update_and_are_counted() -> None:
    driver = ScriptedDriver()
    driver.fail_realtime[2] = NoResponse("silent")
    driver.clock_unsupported = True
    poller, store, owner = make(cfg(realtime_interval_s=0.02), driver)
    await run_until(poller, lambda: driver.calls.count(("realtime", 2)) >= 3)
    snap = store.view.pack("b1", 2)
    assert snap is not None and snap.telemetry is None and snap.availability is Availability.UNKNOWN
    assert ("identity", 2) not in driver.calls
    assert driver.calls.count(("clock", 1)) == 1  # Unsupported: never asked again
    assert poller.packs[1].next_clock == float("inf")

    driver.fail_realtime[1] = DeviceError(0x02, "RTN 2")
    driver.fail_realtime[2] = ValueError("driver could not build telemetry")
    poller.packs[2].next_realtime = 0.0  # after 3 misses pack 2 is on the probe backoff: ask it now
    before = store.view.pack("b1", 1)
    assert before is not None and before.telemetry is not None
    n1 = driver.calls.count(("realtime", 1))
    await run_until(poller, lambda: driver.calls.count(("realtime", 1)) >= n1 + 2)
    after = store.view.pack("b1", 1)
    assert after is not None and after.telemetry is not None
    assert after.telemetry.measured_at == before.telemetry.measured_at  # old good data kept
    assert owner.pack_counters(1).device_errors >= 2
    assert owner.pack_counters(2).decode_errors >= 1


async def test_transitions_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    wall = [1000.0]
    poller, store, _ = make(cfg(stale_after_s=10, offline_after_s=20), ScriptedDriver(), wall=lambda: wall[0])
    poller._accept(poller.packs[1], telemetry(1000.0))
    caplog.set_level(logging.INFO, logger="gateway.south.poller")
    for t in (1001.0, 1005.0, 1011.0, 1012.0, 1015.0, 1021.0, 1030.0, 1040.0):
        wall[0] = t
        poller._refresh_availability()
    msgs = [r.getMessage() for r in caplog.records if "b1/1" in r.getMessage()]
    assert msgs == ["pack b1/1 is stale (no good data for 10 s)", "pack b1/1 is offline"]
    snap = store.view.pack("b1", 1)
    assert snap is not None and snap.availability is Availability.OFFLINE
    assert snap.telemetry is not None  # values kept, but the bank excludes the pack
    assert store.view.bank.packs_online == 0 and store.view.bank.packs_offline == 2


async def test_pace_master_only_reads_the_bank_through_the_master() -> None:
    driver = ScriptedDriver()
    poller, store, _ = make(cfg(addresses=[1, 2, 3], pace_master_only=True, realtime_interval_s=0.02), driver)
    await run_until(poller, lambda: driver.calls.count(("bank", 1)) >= 2)
    assert not any(c[0] == "realtime" for c in driver.calls)
    assert {c[1] for c in driver.calls if c[0] == "identity"} == {1}  # only the master is reachable
    view = store.view
    assert view.pack("b1", 1).telemetry.soc_pct == 11.0  # type: ignore[union-attr]
    assert view.pack("b1", 2).telemetry.soc_pct == 22.0  # type: ignore[union-attr]
    assert view.pack("b1", 3).telemetry is None  # type: ignore[union-attr]
    assert view.pack("b1", 9) is None  # not configured: ignored


async def test_watchdog_publishes_link_counters_of_a_failing_pack() -> None:
    wall = [1000.0]
    poller, store, owner = make(cfg(), ScriptedDriver(), wall=lambda: wall[0])
    poller._refresh_availability()
    version = store.view.version
    poller._refresh_availability()
    assert store.view.version == version  # nothing changed: nothing published
    owner.pack_counters(2).requests += 2
    owner.pack_counters(2).timeouts += 2
    poller._refresh_availability()
    snap = store.view.pack("b1", 2)
    assert snap is not None and snap.link.timeouts == 2 and snap.link.requests == 2
    assert store.view.version == version + 1


async def test_a_silent_pack_is_probed_on_the_backoff_schedule_not_every_cycle() -> None:
    """Issue 17 defect 7, logically (a fake clock, no timing): over 200 cycles the healthy pack is
    read every cycle, the silent one only on the documented schedule; one answer restores it."""
    from gateway.south.poller import PROBE_FREE_MISSES, PROBE_MAX_INTERVAL_S, probe_interval_s

    now = [0.0]
    driver = ScriptedDriver()
    driver.fail_realtime[2] = NoResponse("silent")
    poller, _, _ = make(cfg(realtime_interval_s=1.0), driver, monotonic=lambda: now[0])
    expected, due = [], 0.0  # the probe times the schedule predicts
    for cycle in range(200):
        now[0] = float(cycle)
        if now[0] >= due:
            expected.append(now[0])
            due = now[0] + probe_interval_s(len(expected), 1.0)
        await poller._poll_due()
    assert driver.calls.count(("realtime", 1)) == 200
    silent = driver.calls.count(("realtime", 2))
    assert silent == len(expected) and silent <= 10  # instead of 200 (each a full timeout)
    first = [probe_interval_s(k, 1.0) for k in (1, PROBE_FREE_MISSES, PROBE_FREE_MISSES + 1)]
    assert first == [1.0, 1.0, 5.0]
    assert probe_interval_s(50, 1.0) == PROBE_MAX_INTERVAL_S
    # the pack answers again: at its next probe it is back on the normal schedule
    del driver.fail_realtime[2]
    now[0] = due
    await poller._poll_due()
    for cycle in range(1, 6):
        now[0] = due + cycle
        await poller._poll_due()
    assert driver.calls.count(("realtime", 2)) == silent + 6 and poller.packs[2].misses == 0


def test_probe_interval_never_shortens_the_configured_interval() -> None:
    from gateway.south.poller import probe_interval_s

    assert probe_interval_s(10, 120.0) == 120.0  # an interval above the cap stays
