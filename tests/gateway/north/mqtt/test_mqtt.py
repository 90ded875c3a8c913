"""The MQTT adapter against a real broker process (Mosquitto where installed, else amqtt from PyPI)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest

from gateway.app.config import MqttConfig
from gateway.core.model import (
    Availability,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.mqtt.publisher import MqttService
from tests.support.flags import named
from tests.support.mqtt_broker import Broker, Recorder, recording

pytestmark = pytest.mark.e2e

KEYS = [("bus0", 1), ("bus0", 2)]


def snap(
    address: int, soc: float, availability: Availability = Availability.ONLINE, **kw: object
) -> PackSnapshot:
    tel = Telemetry.build(
        measured_at=1000.0 + soc,
        cell_voltages_v=[3.3 + 0.001 * i for i in range(4)],
        temperatures=[Temperature(TempRole.CELL, 1, 20.0), Temperature(TempRole.MOS, 1, 25.0)],
        voltage_v=13.2,
        current_a=5.0,
        soc_pct=soc,
        soh_pct=99.0,
        full_capacity_ah=100.0,
        remaining_capacity_ah=soc,
        cycles=10,
        **kw,  # type: ignore[arg-type]
    )
    return PackSnapshot("bus0", address, availability, tel, identity=PackIdentity(serial=f"SN{address}"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def config(port: int, **kw: object) -> MqttConfig:
    base: dict[str, object] = {
        "enabled": True,
        "url": f"mqtt://127.0.0.1:{port}",
        "client_id": "gw-test",
        "base_topic": "bmsgw",
        "min_interval_s": 0.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
        "keepalive_s": 5,
        "expire_after_s": 0,
    }
    base.update(kw)
    return MqttConfig.model_validate(base)


@contextlib.asynccontextmanager
async def listening(port: int, *filters: str) -> AsyncIterator[Recorder]:
    async with recording(port, filters, Recorder) as rec:
        yield rec


@contextlib.asynccontextmanager
async def running(service: MqttService) -> AsyncIterator[list[bool]]:
    ready: list[bool] = []
    task = asyncio.create_task(service.run(lambda: ready.append(True)))
    try:
        yield ready
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def soc(listener: Recorder, topic: str) -> object:
    """The soc_pct of the last pack or bank state document on `topic` (None before the first one)."""
    raw = listener.last(topic)
    if raw is None:
        return None
    doc = json.loads(raw)
    return doc["bank"]["soc_pct"] if "bank" in doc else doc["telemetry"]["soc_pct"]


def state(listener: Recorder, topic: str) -> dict[str, object]:
    raw = listener.last(topic)
    assert raw is not None
    doc: dict[str, object] = json.loads(raw)
    return doc


async def test_states_availability_events_and_discovery(broker: Broker) -> None:
    store = ModelStore(KEYS)
    service = MqttService(config(broker.port), store)
    async with listening(broker.port, "bmsgw/#", "homeassistant/#") as sub, running(service) as ready:
        store.publish(snap(1, 50.0), snap(2, 60.0))
        await sub.wait(lambda: soc(sub, "bmsgw/bank/state") == 55.0)
        assert ready == [True]
        assert sub.last("bmsgw/status") == b"online"
        doc = state(sub, "bmsgw/bus0/1/state")
        tel = doc["telemetry"]
        assert tel["soc_pct"] == 50.0 and tel["cell_voltages_v"] == [3.3, 3.301, 3.302, 3.303]
        assert [(x["label"], x["value_c"]) for x in tel["temperatures"]] == [("cell1", 20.0), ("mos1", 25.0)]
        await sub.wait(lambda: sub.last("bmsgw/bus0/1/availability") == b"online")

        # states change with the model
        store.publish(snap(1, 51.5, flags=named("CELL_OV_Alarm")))
        await sub.wait(lambda: soc(sub, "bmsgw/bus0/1/state") == 51.5)
        doc = state(sub, "bmsgw/bus0/1/state")
        assert doc["telemetry"]["alarms"] == ["CELL_OV_Alarm"]
        assert doc["telemetry"]["meanings"] == {"protection": [], "warning": ["cell_overvoltage"]}
        await sub.wait(lambda: sub.last("bmsgw/events") is not None)
        events = [json.loads(p) for p in sub.payloads("bmsgw/events")]
        assert {
            "bus": "bus0",
            "address": 1,
            "kind": "alarm",
            "name": "CELL_OV_Alarm",
            "active": True,
        }.items() <= (events[-1].items())

        # availability flips when a pack goes offline, and back
        store.publish(replace(store.view.packs[("bus0", 2)], availability=Availability.OFFLINE))
        await sub.wait(lambda: sub.last("bmsgw/bus0/2/availability") == b"offline")
        store.publish(replace(store.view.packs[("bus0", 2)], availability=Availability.ONLINE))
        await sub.wait(lambda: sub.last("bmsgw/bus0/2/availability") == b"online")

        # discovery: one device per pack via the gateway device, plus the gateway device
        await sub.wait(lambda: sub.last("homeassistant/device/gw_test_bus0_2/config") is not None)
        pack = json.loads(sub.last("homeassistant/device/gw_test_bus0_1/config") or b"")
        assert pack["device"]["via_device"] == "gw_test"
        assert pack["state_topic"] == "bmsgw/bus0/1/state"
        assert {"topic": "bmsgw/bus0/1/availability"} in pack["availability"]
        assert "gw_test_bus0_1_cell_4" in pack["components"]
        assert json.loads(sub.last("homeassistant/device/gw_test/config") or b"")["device"][
            "identifiers"
        ] == ["gw_test"]
    assert service.stats.published > 0


async def test_retained_discovery_and_state_for_a_late_subscriber(broker: Broker) -> None:
    store = ModelStore(KEYS)
    store.publish(snap(1, 40.0), snap(2, 41.0))
    service = MqttService(config(broker.port), store)
    async with running(service):
        async with listening(broker.port, "bmsgw/status") as probe:
            await probe.wait(lambda: probe.last("bmsgw/status") == b"online")
        await asyncio.sleep(0.2)
        async with listening(broker.port, "bmsgw/#", "homeassistant/device/#") as late:
            await late.wait(lambda: late.last("homeassistant/device/gw_test_bus0_2/config") is not None)
            await late.wait(lambda: late.last("bmsgw/bus0/2/state") is not None)
            assert all(retain for t, _, retain in late.messages if t.endswith(("/config", "/availability")))
            assert soc(late, "bmsgw/bus0/2/state") == 41.0


async def test_home_assistant_online_republishes_and_stale_packs_are_removed(broker: Broker) -> None:
    # a pack device this gateway published earlier (address 9) that is no longer in the config
    ghost_topic = "homeassistant/device/gw_test_bus0_9/config"
    foreign_topic = "homeassistant/device/other_bus0_9/config"
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        ghost = {"device": {"identifiers": ["gw_test_bus0_9"], "via_device": "gw_test"}, "components": {}}
        foreign = {"device": {"identifiers": ["other_bus0_9"], "via_device": "other"}, "components": {}}
        await c.publish(ghost_topic, json.dumps(ghost), qos=1, retain=True)
        await c.publish(foreign_topic, json.dumps(foreign), qos=1, retain=True)
    store = ModelStore(KEYS)
    store.publish(snap(1, 40.0), snap(2, 41.0))
    service = MqttService(config(broker.port), store)
    async with listening(broker.port, "homeassistant/device/#") as sub, running(service):
        await sub.wait(lambda: sub.last(ghost_topic) == b"")
        await sub.wait(lambda: len(sub.payloads("homeassistant/device/gw_test_bus0_1/config")) >= 1)
        before = len(sub.payloads("homeassistant/device/gw_test_bus0_1/config"))
        async with aiomqtt.Client("127.0.0.1", broker.port) as ha:
            await ha.publish("homeassistant/status", b"online", qos=1)
        await sub.wait(lambda: len(sub.payloads("homeassistant/device/gw_test_bus0_1/config")) > before)
        assert service.stats.configs_removed == 1
    async with listening(broker.port, "homeassistant/device/#") as check:
        await check.wait(lambda: check.last("homeassistant/device/gw_test_bus0_1/config") is not None)
        assert check.last(ghost_topic) is None  # cleared: no retained config any more
        assert check.last(foreign_topic) is not None  # another gateway's device is left alone


async def test_survives_the_broker_restarting(broker: Broker) -> None:
    store = ModelStore(KEYS)
    service = MqttService(config(broker.port, buffer_size=50), store)
    async with running(service):
        store.publish(snap(1, 30.0), snap(2, 31.0))
        async with listening(broker.port, "bmsgw/#") as sub:
            await sub.wait(lambda: sub.last("bmsgw/bus0/1/state") is not None)
        assert service.stats.connected
        broker.stop()
        await asyncio.sleep(0.3)
        # polling goes on while the broker is away: publishing into the model never blocks
        for i in range(100):
            store.publish(snap(1, 32.0 + i * 0.1, flags=named("CELL_OV_Alarm") if i % 2 else ()))
            await asyncio.sleep(0.001)
        assert not service.stats.connected
        assert service.buffer.dropped > 0 and len(service.buffer) <= 50
        health = service.health()
        assert health.dropped == service.buffer.dropped and not health.connected
        broker.start()
        async with listening(broker.port, "bmsgw/#") as sub:
            await sub.wait(lambda: sub.last("bmsgw/bus0/1/state") is not None)
            await sub.wait(lambda: soc(sub, "bmsgw/bus0/1/state") == pytest.approx(41.9))
            await sub.wait(lambda: sub.last("bmsgw/status") == b"online")
            store.publish(snap(2, 77.0))
            await sub.wait(lambda: soc(sub, "bmsgw/bus0/2/state") == 77.0)
        assert service.stats.connects >= 2 and service.health().reconnects >= 1


GATEWAY_PROCESS = """
import asyncio, sys
from gateway.app.config import MqttConfig
from gateway.core.model import ModelStore
from gateway.north.mqtt.publisher import MqttService
cfg = MqttConfig(enabled=True, url="mqtt://127.0.0.1:" + sys.argv[1], client_id="gw-test", base_topic="bmsgw")
asyncio.run(MqttService(cfg, ModelStore([("bus0", 1)])).run(lambda: None))
"""


async def test_a_stopped_gateway_says_offline(broker: Broker) -> None:
    service = MqttService(config(broker.port), ModelStore(KEYS))
    async with listening(broker.port, "bmsgw/status") as sub:
        async with running(service):
            await sub.wait(lambda: sub.last("bmsgw/status") == b"online")
        await sub.wait(lambda: sub.last("bmsgw/status") == b"offline")
    async with listening(broker.port, "bmsgw/status") as late:  # and it stays so (retained)
        await late.wait(lambda: late.last("bmsgw/status") == b"offline")


async def test_last_will_marks_the_gateway_offline_when_the_process_dies(broker: Broker) -> None:
    async with listening(broker.port, "bmsgw/status") as sub:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", GATEWAY_PROCESS, str(broker.port))
        try:
            await sub.wait(lambda: sub.last("bmsgw/status") == b"online", timeout_s=30)
        finally:
            proc.kill()  # no clean disconnect: the broker must publish the will
            await proc.wait()
        await sub.wait(lambda: sub.last("bmsgw/status") == b"offline")


class _SwallowingClient:
    """A client whose connect swallows a cancellation arriving while it connects, as aiomqtt's
    `asyncio.wait_for` can on Python 3.11 when the CONNACK and the cancellation meet."""

    connecting = asyncio.Event()

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    async def __aenter__(self) -> _SwallowingClient:
        type(self).connecting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish(self, *args: object, **kwargs: object) -> None:
        await asyncio.sleep(3600)  # a session that would run on and on

    async def subscribe(self, *args: object, **kwargs: object) -> None:
        await asyncio.sleep(3600)

    @property
    def messages(self) -> AsyncIterator[object]:
        async def forever() -> AsyncIterator[object]:
            await asyncio.sleep(3600)
            yield None

        return forever()


async def test_a_cancellation_swallowed_while_connecting_still_stops_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM during the MQTT connect must not leave the service running until the shutdown
    deadline (seen once in CI: 'services did not stop within 10.0 s: service:mqtt')."""
    monkeypatch.setattr(aiomqtt, "Client", _SwallowingClient)
    _SwallowingClient.connecting = asyncio.Event()
    service = MqttService(MqttConfig(enabled=True, url="mqtt://127.0.0.1:1"), ModelStore([("b", 1)]))
    task = asyncio.ensure_future(service.run(lambda: None))
    await asyncio.wait_for(_SwallowingClient.connecting.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
    assert service.stats.connects == 0  # it never went on as if connected
