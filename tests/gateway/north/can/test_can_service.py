"""The CAN service on python-can's `virtual` interface: cadence, keepalive, stale stop, switch, log.

A second virtual bus on the same channel plays the inverter. Frame counts are asserted within
generous bounds over a few seconds (shared machine: no tight timing assertions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import pytest

from gateway.app.config import CanConfig, PolicyConfig
from gateway.core.controls import Controls
from gateway.core.model import Availability, ModelStore
from gateway.core.policy.decisions import DecisionStore
from gateway.core.policy.engine import PolicyEngine
from gateway.core.policy.service import PolicyService
from gateway.north.can.service import CanService, KeepaliveState, candump_line
from protocol.inverter.can.base import CanFrame
from tests.support.can_policy_fixtures import bank, decision, pack, telemetry, view


@dataclass
class Clock:
    """Wall clock with an adjustable offset (keepalive and staleness are judged on it)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Rig:
    service: CanService
    peer: can.BusABC
    decisions: DecisionStore
    clock: Clock
    received: list[can.Message] = field(default_factory=list)

    async def collect(self, seconds: float, until: Callable[[list[can.Message]], bool] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = await asyncio.to_thread(self.peer.recv, 0.05)
            if msg is not None:
                self.received.append(msg)
                if until is not None and until(self.received):
                    return

    def ids(self) -> list[int]:
        return [m.arbitration_id for m in self.received]

    def send(self, ident: int, data: bytes, extended: bool = False) -> None:
        self.peer.send(can.Message(arbitration_id=ident, data=data, is_extended_id=extended))


def cfg(channel: str, **kw: Any) -> CanConfig:
    return CanConfig(enabled=True, interface="virtual", channel=channel, **kw)


@contextlib.asynccontextmanager
async def rig(
    *,
    protocol: str = "pylon",
    stale_after_s: float = 10.0,
    bus_factory: Callable[[], can.BusABC] | None = None,
    publish: bool = True,
    **kw: Any,
) -> AsyncIterator[Rig]:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    decisions = DecisionStore()
    clock = Clock()
    if publish:
        decisions.publish(decision(computed_at=clock()))
    service = CanService(
        cfg(channel, protocol=protocol, **kw),
        decisions,
        stale_after_s=stale_after_s,
        bus_factory=bus_factory,
        clock=clock,
    )
    peer = can.Bus(interface="virtual", channel=channel)
    ready = asyncio.Event()
    task = asyncio.ensure_future(service.run(ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5.0)
        yield Rig(service, peer, decisions, clock)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peer.shutdown()


async def test_nothing_is_sent_before_the_first_decision_then_it_starts_at_once() -> None:
    async with rig(publish=False) as r:
        await r.collect(0.6)
        assert r.received == []
        r.decisions.publish(decision(computed_at=r.clock()))
        await r.collect(1.5, until=lambda got: len(got) >= 6)
    assert r.ids()[:6] == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]
    first = r.received[0]
    assert not first.is_extended_id and first.dlc == 8 and r.received[1].dlc == 4  # real Pylon DLCs


async def test_the_send_loop_does_not_spin_while_no_decision_exists() -> None:
    """No pack answered yet: the loop looks for a decision every NO_DECISION_POLL_S, it does not spin.

    (It did: a never-sent group reads as due "now", so the wait was 0 and one core ran at 100 %.)
    """
    async with rig(publish=False) as r:
        looks = 0
        current_state = r.service.current_state

        def counting(now: float) -> Any:
            nonlocal looks
            looks += 1
            return current_state(now)

        r.service.current_state = counting  # type: ignore[method-assign]
        await asyncio.sleep(0.6)
    # 0.6 s at one look per 0.1 s is about 6; a spinning loop makes thousands.
    assert 1 <= looks <= 30, looks


async def test_stale_decision_switches_to_stop_frames_and_frames_never_stop() -> None:
    async with rig(stale_after_s=0.5) as r:
        await r.collect(0.3, until=lambda got: 0x35C in [m.arbitration_id for m in got])
        normal = [m for m in r.received if m.arbitration_id == 0x35C]
        r.received.clear()
        await r.collect(3.2)  # the decision is not refreshed: older than 0.5 s -> stale
    assert normal and normal[0].data[0] == 0xC0
    requests = [m for m in r.received if m.arbitration_id == 0x35C]
    assert len(requests) >= 2, "frames keep flowing while stale"
    assert requests[-1].data[0] == 0x00  # charge and discharge disabled
    alarms = [m for m in r.received if m.arbitration_id == 0x359][-1].data
    assert alarms[1] & 0x08 and alarms[3] & 0x08  # system error + internal communication failure
    limits = [m for m in r.received if m.arbitration_id == 0x351][-1].data
    assert limits[2:6] == bytes(4)
    assert int.from_bytes(limits[0:2], "little") == round(16 * 3.30 * 10)  # CVL = present voltage
    assert r.service.stats.stale and r.service.stats.sending_stop


async def test_keepalive_supervision() -> None:
    async with rig(keepalive_timeout_s=5.0) as r:
        assert r.service.stats.keepalive is KeepaliveState.WAITING
        r.send(0x305, bytes(8))
        await r.collect(0.5, until=lambda _: r.service.stats.keepalive is KeepaliveState.OK)
        assert r.service.stats.keepalive is KeepaliveState.OK
        assert r.service.stats.frames_received == 1
        r.clock.offset = 6.0  # six seconds without a keepalive
        await r.collect(1.2, until=lambda _: r.service.stats.keepalive is KeepaliveState.LOST)
        assert r.service.stats.keepalive is KeepaliveState.LOST
        before = r.service.stats.frames_sent
        await r.collect(1.2)
        assert r.service.stats.frames_sent > before  # lost keepalive never silences the battery
        r.send(0x305, bytes(8))
        await r.collect(0.5, until=lambda _: r.service.stats.keepalive is KeepaliveState.OK)
        assert r.service.stats.keepalive is KeepaliveState.OK


async def test_no_keepalive_expected() -> None:
    async with rig(keepalive_expected=False) as r:
        r.clock.offset = 60.0
        r.decisions.publish(decision(computed_at=r.clock()))
        await r.collect(0.6)
        assert r.service.stats.keepalive is KeepaliveState.NOT_EXPECTED


async def test_protocol_switch_at_run_time() -> None:
    async with rig() as r:
        await r.collect(0.5, until=lambda got: len(got) >= 6)
        assert 0x35A not in r.ids()
        with pytest.raises(KeyError, match="unknown inverter CAN protocol"):
            r.service.set_protocol("nope")
        assert r.service.protocol.name == "pylon"
        with pytest.raises(ValueError, match="no option"):
            r.service.set_protocol("sma", {"byte_order": "big"})
        r.service.set_protocol("sma")
        r.received.clear()
        await r.collect(1.5, until=lambda got: 0x35F in [m.arbitration_id for m in got])
    assert r.service.stats.protocol == "sma"
    ids = r.ids()
    assert 0x35A in ids and 0x35F in ids
    assert 0x359 not in ids[ids.index(0x35A) :]  # no Pylon frame once SMA started


async def test_growatt_answers_the_inverter_over_the_bus() -> None:
    async with rig(protocol="growatt") as r:
        await r.collect(0.5)
        assert r.received == []  # query/response: nothing until the inverter asks
        r.send(0x301, bytes.fromhex("1122334455667788"))
        await r.collect(2.0, until=lambda got: len(got) >= 7)
    assert r.ids() == [0x311, 0x312, 0x313, 0x314, 0x319, 0x320, 0x321]
    assert r.service.stats.keepalive is KeepaliveState.OK


async def test_byd_starts_once_the_inverter_speaks() -> None:
    async with rig(protocol="byd") as r:
        await r.collect(0.6)
        assert r.received == []
        r.send(0x151, b"\x01" + bytes(7))
        await r.collect(2.0, until=lambda got: 0x110 in [m.arbitration_id for m in got])
    assert r.ids()[:6] == [0x250, 0x2D0, 0x3D0, 0x3D0, 0x3D0, 0x3D0]
    assert 0x110 in r.ids()


async def test_pylon_hv_29_bit_poll_over_the_bus() -> None:
    async with rig(protocol="pylon-hv") as r:
        r.send(0x4200, bytes(8), extended=True)
        await r.collect(2.0, until=lambda got: len(got) >= 6)
    assert r.ids() == [0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4280]
    assert all(m.is_extended_id for m in r.received)


async def test_luxpower_shutdown_command_is_counted() -> None:
    async with rig(protocol="luxpower") as r:
        r.send(0x300, b"\x01" + bytes(7))
        await r.collect(2.0, until=lambda _: r.service.stats.inverter_commands > 0)
        assert r.service.stats.last_command == "shutdown"
        r.received.clear()
        await r.collect(1.4)  # frames queued before the command are drained first
    request = [m for m in r.received if m.arbitration_id == 0x35C][-1]
    assert request.data[0] == 0


async def test_candump_log_of_sent_and_received_frames(tmp_path: Path) -> None:
    log_file = tmp_path / "can.log"
    async with rig(log=str(log_file)) as r:
        r.send(0x305, bytes(8))
        await r.collect(1.2, until=lambda got: len(got) >= 6)

        def logged() -> str:
            return log_file.read_text() if log_file.exists() else ""

        for _ in range(200):  # a later send-loop turn flushes the log (bounded wait, >= 10 s)
            if " 305#" in logged() and " 351#" in logged():
                break
            await asyncio.sleep(0.05)
    lines = log_file.read_text().splitlines()
    assert any(" 305#0000000000000000" in line for line in lines)
    assert any(" 351#" in line for line in lines)
    first = lines[0]
    assert first.startswith("(") and ") t-" in first


def test_candump_line_format() -> None:
    assert candump_line(1.5, "can0", CanFrame(0x351, bytes.fromhex("1402"))) == "(1.500000) can0 351#1402\n"
    assert candump_line(2.0, "can0", CanFrame(0x4210, b"\x01", True)) == "(2.000000) can0 00004210#01\n"


class FlakyFactory:
    """Fails to open the bus the first `failures` times, then opens a virtual bus."""

    def __init__(self, channel: str, failures: int) -> None:
        self.channel = channel
        self.failures = failures
        self.calls = 0

    def __call__(self) -> can.BusABC:
        self.calls += 1
        if self.calls <= self.failures:
            raise can.CanInitializationError("adapter unplugged")
        return can.Bus(interface="virtual", channel=self.channel)


async def test_reconnects_after_open_failures() -> None:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    factory = FlakyFactory(channel, failures=2)
    decisions = DecisionStore()
    decisions.publish(decision(computed_at=time.time()))
    service = CanService(cfg(channel, reconnect_delay_s=0.05), decisions, bus_factory=factory)
    peer = can.Bus(interface="virtual", channel=channel)
    task = asyncio.ensure_future(service.run(lambda: None))
    try:
        got = None
        for _ in range(60):
            got = await asyncio.to_thread(peer.recv, 0.05)
            if got is not None:
                break
        assert got is not None and got.arbitration_id == 0x351
        assert factory.calls == 3 and service.stats.reconnects == 2
        assert service.stats.connected and "adapter unplugged" in (service.stats.last_error or "")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peer.shutdown()


class BrokenSendBus(can.BusABC):
    """A bus whose sends fail (bus-off): the service must close it and reopen."""

    def __init__(self) -> None:
        super().__init__(channel="broken")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        raise can.CanOperationError("bus-off")

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        time.sleep(min(timeout or 0.01, 0.01))
        return None, False


async def test_send_failures_reconnect_the_bus() -> None:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    opened: list[str] = []

    def factory() -> can.BusABC:
        opened.append("x")
        if len(opened) == 1:
            return BrokenSendBus()
        return can.Bus(interface="virtual", channel=channel)

    decisions = DecisionStore()
    decisions.publish(decision(computed_at=time.time()))
    service = CanService(cfg(channel, reconnect_delay_s=0.05), decisions, bus_factory=factory)
    peer = can.Bus(interface="virtual", channel=channel)
    task = asyncio.ensure_future(service.run(lambda: None))
    try:
        got = None
        for _ in range(60):
            got = await asyncio.to_thread(peer.recv, 0.05)
            if got is not None:
                break
        assert got is not None
        assert len(opened) == 2 and service.stats.send_errors >= 1 and service.stats.reconnects == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peer.shutdown()


@pytest.mark.e2e
async def test_end_to_end_model_policy_can_with_a_pack_going_silent() -> None:
    """ModelStore -> PolicyService -> CanService: frames reflect the packs; when the packs stop
    answering, stop frames with alarm bits appear within the stale window and never stop."""
    channel = f"t-{uuid.uuid4().hex[:8]}"
    store = ModelStore([("bus1", 1), ("bus1", 2)])
    now = time.time()
    store.publish(*bank(now, soc_pct=71.0, current_a=-12.0).packs.values(), now=now)
    decisions = DecisionStore()
    policy = PolicyService(
        PolicyEngine(PolicyConfig(stale_after_s=1.0, evaluate_interval_s=0.2)), store, Controls(), decisions
    )
    service = CanService(cfg(channel), decisions, stale_after_s=1.0)
    peer = can.Bus(interface="virtual", channel=channel)
    tasks = [
        asyncio.ensure_future(policy.run(lambda: None)),
        asyncio.ensure_future(service.run(lambda: None)),
    ]
    received: list[tuple[float, can.Message]] = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < 4.0:
            msg = await asyncio.to_thread(peer.recv, 0.05)
            if msg is not None:
                received.append((time.monotonic() - start, msg))
            # the packs answer for the first second (fresh telemetry), then go silent
            if time.monotonic() - start < 0.8:
                t = time.time()
                store.publish(
                    *view(
                        [pack(a, telemetry(now=t, soc_pct=71.0, current_a=-12.0)) for a in (1, 2)], t
                    ).packs.values(),
                    now=t,
                )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        peer.shutdown()
    socs = [m.data[0] for _, m in received if m.arbitration_id == 0x355]
    assert socs and socs[0] == 71  # frames reflect the packs
    currents = [
        int.from_bytes(m.data[2:4], "little", signed=True) for _, m in received if m.arbitration_id == 0x356
    ]
    assert currents[0] == -240  # two packs x -12 A, 0.1 A
    requests = [(t, m.data[0]) for t, m in received if m.arbitration_id == 0x35C]
    assert requests[0][1] == 0xC0
    stops = [t for t, flags in requests if flags == 0x00]
    assert stops, "stop frames appear"
    assert stops[0] < 0.8 + 1.0 + 1.5  # within the stale window (+ one cycle and scheduling slack)
    assert requests[-1][1] == 0x00 and len([t for t, _ in requests if t > stops[0]]) >= 1  # never stop
    alarm = [m.data for _, m in received if m.arbitration_id == 0x359][-1]
    assert alarm[1] & 0x08 and alarm[3] & 0x08


async def test_policy_service_publishes_on_new_views_and_on_its_timer() -> None:
    store = ModelStore([("bus1", 1)])
    decisions = DecisionStore()
    policy = PolicyService(PolicyEngine(PolicyConfig(evaluate_interval_s=0.1)), store, Controls(), decisions)
    task = asyncio.ensure_future(policy.run(lambda: None))
    try:
        first = await asyncio.wait_for(decisions.wait_for(lambda d: True), 2.0)
        assert not first.has_data
        t = time.time()
        store.publish(pack(1, telemetry(now=t, soc_pct=42.0), availability=Availability.ONLINE), now=t)
        fresh = await asyncio.wait_for(decisions.wait_for(lambda d: d.has_data), 2.0)
        assert fresh.bank.soc_pct == pytest.approx(42.0)
        n = policy.evaluations
        for _ in range(200):  # every 0.1 s; a loaded machine may be slower: wait (bounded, >= 10 s)
            if policy.evaluations >= n + 2:
                break
            await asyncio.sleep(0.05)
        assert policy.evaluations >= n + 2  # timer evaluations without new data
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_slcan_over_a_socket_url() -> None:
    """`interface = "slcan"`, `channel = "socket://host:port"`: a local TCP peer plays the adapter."""
    received = bytearray()
    writers: list[asyncio.StreamWriter] = []

    async def adapter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(1024):
            received.extend(data)

    server = await asyncio.start_server(adapter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    decisions = DecisionStore()
    decisions.publish(decision(computed_at=time.time()))
    config = CanConfig(
        enabled=True,
        interface="slcan",
        channel=f"socket://127.0.0.1:{port}",
        interface_options={"sleep_after_open": 0},
    )
    service = CanService(config, decisions)
    task = asyncio.ensure_future(service.run(lambda: None))
    try:
        for _ in range(100):
            if b"t35C2C000\r" in received and writers:
                break
            await asyncio.sleep(0.05)
        writers[0].write(b"t3058" + b"00" * 8 + b"\r")  # the inverter's keepalive through the adapter
        await writers[0].drain()
        for _ in range(100):
            if service.stats.keepalive is KeepaliveState.OK:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for w in writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        server.close()
        await server.wait_closed()
    text = bytes(received)
    assert text.startswith(b"C\rS6\r")  # close, 500 kbit/s, open: the slcan set-up
    assert b"O\r" in text
    assert b"t3518280208070807D001\r" in text  # 0x351: 55.2 V, 180.0 A, 180.0 A, 46.4 V
    assert service.stats.keepalive is KeepaliveState.OK and service.stats.frames_received == 1


async def test_unknown_interface_is_a_configuration_error() -> None:
    from gateway.app.config import ConfigError

    config = CanConfig(enabled=True, interface="no-such-interface", channel="x")
    service = CanService(config, DecisionStore())
    with pytest.raises(ConfigError, match="no-such-interface"):
        await service.run(lambda: None)


CADENCE = {  # protocol -> (id, period s)
    "pylon": (0x351, 1.0),
    "pylon-v2": (0x35A, 1.0),
    "deye": (0x35E, 1.0),
    "goodwe": (0x359, 1.0),
    "sofar": (0x351, 1.0),
    "solark": (0x379, 1.0),
    "luxpower": (0x35C, 1.0),
    "sma": (0x351, 0.5),
    "victron": (0x351, 1.0),
    "schneider": (0x321, 0.5),
}


async def test_cadence_of_every_cyclic_protocol_on_the_virtual_bus() -> None:
    """All cyclic protocols at once, each on its own virtual channel, for about three seconds."""
    async with contextlib.AsyncExitStack() as stack:
        rigs = {name: await stack.enter_async_context(rig(protocol=name)) for name in CADENCE}
        await asyncio.gather(*(r.collect(3.3) for r in rigs.values()))
    for name, (ident, period) in CADENCE.items():
        stamps = [m.timestamp for m in rigs[name].received if m.arbitration_id == ident]
        # the cadence, read from the frames' own send times (not from how long the receiver ran,
        # which a loaded machine stretches): frames flowed through the window at their period
        assert len(stamps) >= 3, (name, len(stamps))
        span = stamps[-1] - stamps[0]
        assert span >= 3.3 - max(1.0, 2 * period), (name, span)
        mean = span / (len(stamps) - 1)
        assert 0.8 * period <= mean <= 1.25 * period, (name, mean, period)
        if name == "sma":  # the Sunny Island inhibit time is a lower bound on every id's repeat
            for i in {m.arbitration_id for m in rigs[name].received}:
                ts = [m.timestamp for m in rigs[name].received if m.arbitration_id == i]
                assert all(b - a >= 0.19 for a, b in itertools.pairwise(ts)), hex(i)
        if name == "schneider":
            assert all(m.is_extended_id for m in rigs[name].received)


def test_policy_service_keeps_the_last_full_charge_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state" / "policy-state.json"
    now = time.time()
    store = ModelStore([("bus1", 1)])
    store.publish(pack(1, telemetry(now=now, soc_pct=98.0)), now=now)
    first = PolicyService(PolicyEngine(PolicyConfig()), store, Controls(), DecisionStore(), state_file=state)
    first.load_state()  # no file yet: not an error
    assert not first.evaluate_now().full_charge_request
    first.save_state()
    saved = json.loads(state.read_text())["last_full_charge_at"]
    assert saved == pytest.approx(now, abs=60)
    state.write_text(json.dumps({"last_full_charge_at": now - 31 * 86400}))  # as if a month ago
    store.publish(pack(1, telemetry(now=now, soc_pct=60.0)), now=now)
    second = PolicyService(PolicyEngine(PolicyConfig()), store, Controls(), DecisionStore(), state_file=state)
    second.load_state()
    assert second.evaluate_now().full_charge_request
    state.write_text("not json")
    third = PolicyService(PolicyEngine(PolicyConfig()), store, Controls(), DecisionStore(), state_file=state)
    third.load_state()  # unreadable: logged, counting starts now
    assert not third.evaluate_now().full_charge_request


async def test_unwritable_log_is_a_configuration_error(tmp_path: Path) -> None:
    from gateway.app.config import ConfigError

    config = cfg("x", log=str(tmp_path / "missing-dir" / "can.log"))
    with pytest.raises(ConfigError, match=r"can\.log"):
        await CanService(config, DecisionStore()).run(lambda: None)
