"""MQTT adapter (aiomqtt): pack and bank state documents, availability, events, Home Assistant discovery.

Topics (base = `[mqtt] base_topic`):
  <base>/status                      gateway birth "online" / last will "offline" (retained)
  <base>/<bus>/<address>/state       one JSON document per pack (retained unless retain_state = false)
  <base>/<bus>/<address>/availability  "online" / "offline" (retained)
  <base>/bank/state                  the bank aggregate, the charge limits and gateway counters
  <base>/events                      protection/alarm/fault/availability transitions as they happen
  <prefix>/device/<device_id>/config Home Assistant device-based discovery (retained)
  <base>/cmd/<action>[/reply]        admin commands and their replies, only with `[mqtt] commands`
                                     (gateway.north.mqtt.commands: authenticated by the admin service)

Producers (the model subscription, the event stream) only append to a bounded buffer; one
connection task drains it. A broker outage therefore never blocks polling; while the broker is
away the buffer keeps the newest `buffer_size` messages and counts the ones it drops. The
connection is re-established with exponential backoff and jitter, and on every (re)connection the
gateway publishes its birth, the discovery configs, what it buffered and then the current state.

This module must never call a pack or wait on the broker from a producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiomqtt

from gateway import __version__
from gateway.app.config import ConfigError, MqttConfig
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import ModelStore, ModelView, PackEvent, PackKey, PackSnapshot
from gateway.north.metrics.collector import DecisionLike, MqttHealth
from mappings.ha import EntitySpec, EntityTable, load_entities

if TYPE_CHECKING:
    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service
    from gateway.north.mqtt.commands import CommandHandler

log = logging.getLogger(__name__)

ORIGIN = {"name": "bms-gateway", "sw_version": __version__, "support_url": "https://github.com/bms-gateway"}


def slug(text: str) -> str:
    """Lower-case letters, digits and underscores (HA ids, topic-safe)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# --- documents (pure) ---


_MEASUREMENT_KEYS = (
    "measured_at",
    "voltage_v",
    "current_a",
    "power_w",
    "soc_pct",
    "soh_pct",
    "full_capacity_ah",
    "remaining_capacity_ah",
    "nominal_capacity_ah",
    "cycles",
    "cell_max_v",
    "cell_min_v",
    "cell_avg_v",
    "cell_diff_v",
    "cell_diff_mv",
    "cell_max_index",
    "cell_min_index",
    "temp_max_c",
    "temp_min_c",
    "charge_mos_on",
    "discharge_mos_on",
    "heater_on",
    "fan_on",
    "charging",
    "balancing",
    "remaining_charge_time_s",
    "remaining_discharge_time_s",
    "flags_text",
)


def pack_document(snap: PackSnapshot) -> dict[str, Any]:
    """The JSON state of one pack. Every key is always present (null when unknown)."""
    t = snap.telemetry
    ident = snap.identity
    link = snap.link
    ratio = link.success_ratio
    doc: dict[str, Any] = {
        "bus": snap.bus,
        "address": snap.address,
        "name": snap.label,
        "availability": snap.availability.value,
        "identity": {
            "version": ident.version,
            "serial": ident.serial,
            "model": ident.model,
            "manufacturer": ident.manufacturer,
            "barcode": ident.barcode,
            "protocol": ident.protocol,
        },
        "link": {
            "requests": link.requests,
            "responses": link.responses,
            "timeouts": link.timeouts,
            "checksum_errors": link.checksum_errors,
            "device_errors": link.device_errors,
            "success_pct": None if ratio is None else round(ratio * 100.0, 2),
            "last_success_at": link.last_success_at,
            "last_poll_duration_s": _r(link.last_poll_duration_s),
        },
        "clock_drift_s": None if snap.clock is None else round(snap.clock.drift_s, 1),
    }
    if t is None:
        doc.update(dict.fromkeys(_MEASUREMENT_KEYS))
        doc.update(cells_v=[], temperatures={}, balancing_cells=[], protections=[], alarms=[], faults=[])
        doc["states"] = []
        return doc
    flags = sorted(t.protections | t.alarms | t.faults)
    doc.update(
        measured_at=t.measured_at,
        voltage_v=_r(t.voltage_v),
        current_a=_r(t.current_a),
        power_w=_r(t.power_w, 1),
        soc_pct=_r(t.soc_pct, 2),
        soh_pct=_r(t.soh_pct, 2),
        full_capacity_ah=_r(t.full_capacity_ah, 3),
        remaining_capacity_ah=_r(t.remaining_capacity_ah, 3),
        nominal_capacity_ah=_r(t.nominal_capacity_ah, 3),
        cycles=t.cycles,
        cells_v=[_r(v) for v in t.cell_voltages_v],
        cell_max_v=_r(t.cell_max_v),
        cell_min_v=_r(t.cell_min_v),
        cell_avg_v=_r(t.cell_avg_v),
        cell_diff_v=_r(t.cell_diff_v),
        cell_diff_mv=_r(t.cell_diff_v * 1000.0, 1),
        cell_max_index=t.cell_max_index,
        cell_min_index=t.cell_min_index,
        temperatures={x.label: _r(x.value_c, 2) for x in t.temperatures},
        temp_max_c=_r(t.temp_max_c, 2),
        temp_min_c=_r(t.temp_min_c, 2),
        charge_mos_on=t.charge_mos_on,
        discharge_mos_on=t.discharge_mos_on,
        heater_on=t.heater_on,
        fan_on=t.fan_on,
        charging=t.current_a > 0.0,
        balancing=t.balancing,
        balancing_cells=list(t.balancing_cells),
        protections=sorted(t.protections),
        alarms=sorted(t.alarms),
        faults=sorted(t.faults),
        states=sorted(t.states),
        flags_text=", ".join(flags)[:250] if flags else "none",
        remaining_charge_time_s=_r(t.remaining_charge_time_s, 0),
        remaining_discharge_time_s=_r(t.remaining_discharge_time_s, 0),
    )
    return doc


def bank_document(
    view: ModelView, decision: DecisionLike | None, gateway: Mapping[str, Any]
) -> dict[str, Any]:
    b = view.bank
    limits: dict[str, Any] = {
        k: None
        for k in (
            "charge_voltage_v",
            "discharge_voltage_v",
            "charge_current_a",
            "discharge_current_a",
            "charge_enabled",
            "discharge_enabled",
            "stale",
            "limiting_text",
        )
    }
    limits["limiting"] = {}
    if decision is not None:
        limits.update(
            charge_voltage_v=_r(decision.charge_voltage_v, 3),
            discharge_voltage_v=_r(decision.discharge_voltage_v, 3),
            charge_current_a=_r(decision.charge_current_a, 2),
            discharge_current_a=_r(decision.discharge_current_a, 2),
            charge_enabled=decision.charge_enabled,
            discharge_enabled=decision.discharge_enabled,
            stale=decision.stale,
            limiting=dict(decision.limiting),
            limiting_text=", ".join(f"{k}: {v}" for k, v in sorted(decision.limiting.items()))[:250]
            or "none",
        )
    cell = {
        "cell_max": b.cell_max,
        "cell_min": b.cell_min,
        "temp_max": b.temp_max,
        "temp_min": b.temp_min,
    }
    return {
        "packs_configured": b.packs_configured,
        "packs_online": b.packs_online,
        "packs_stale": b.packs_stale,
        "packs_offline": b.packs_offline,
        "voltage_v": _r(b.voltage_v),
        "current_a": _r(b.current_a),
        "power_w": _r(b.power_w, 1),
        "soc_pct": _r(b.soc_pct, 2),
        "soh_pct": _r(b.soh_pct, 2),
        "full_capacity_ah": _r(b.full_capacity_ah, 3),
        "remaining_capacity_ah": _r(b.remaining_capacity_ah, 3),
        "nominal_capacity_ah": _r(b.nominal_capacity_ah, 3),
        "cell_max_v": _r(b.cell_max.value) if b.cell_max else None,
        "cell_min_v": _r(b.cell_min.value) if b.cell_min else None,
        "cell_diff_mv": None if b.cell_diff_v is None else round(b.cell_diff_v * 1000.0, 1),
        "temp_max_c": _r(b.temp_max.value, 2) if b.temp_max else None,
        "temp_min_c": _r(b.temp_min.value, 2) if b.temp_min else None,
        "where": {
            k: (None if c is None else {"bus": c.bus, "address": c.address, "index": c.index})
            for k, c in cell.items()
        },
        "protections": sorted(b.protections),
        "alarms": sorted(b.alarms),
        "faults": sorted(b.faults),
        "remaining_charge_time_s": _r(b.remaining_charge_time_s, 0),
        "remaining_discharge_time_s": _r(b.remaining_discharge_time_s, 0),
        "limits": limits,
        "gateway": dict(gateway),
    }


def event_document(ev: PackEvent) -> dict[str, Any]:
    return {
        "at": ev.at,
        "bus": ev.bus,
        "address": ev.address,
        "kind": ev.kind.value,
        "name": ev.name,
        "active": ev.active,
    }


# --- topics and discovery (pure) ---


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    prefix: str
    node: str  # slug of the client id: prefix of every HA id

    @classmethod
    def of(cls, cfg: MqttConfig) -> Topics:
        return cls(cfg.base_topic, cfg.discovery_prefix, slug(cfg.client_id))

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def bank_state(self) -> str:
        return f"{self.base}/bank/state"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def pack_state(self, key: PackKey) -> str:
        return f"{self.base}/{key[0]}/{key[1]}/state"

    def pack_availability(self, key: PackKey) -> str:
        return f"{self.base}/{key[0]}/{key[1]}/availability"

    @property
    def gateway_device(self) -> str:
        return self.node

    def pack_device(self, key: PackKey) -> str:
        return f"{self.node}_{slug(key[0])}_{key[1]}"

    def discovery(self, device_id: str) -> str:
        return f"{self.prefix}/device/{device_id}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.prefix}/status"


def _component(spec: EntitySpec, device_id: str, expire_after_s: int) -> dict[str, Any]:
    uid = f"{device_id}_{spec.key}"
    comp: dict[str, Any] = {
        "platform": spec.platform,
        "name": spec.name,
        "unique_id": uid,
        "default_entity_id": f"{spec.platform}.{uid}",
        "value_template": spec.value_template,
    }
    for attr, key in (
        ("device_class", "device_class"),
        ("state_class", "state_class"),
        ("unit", "unit_of_measurement"),
        ("precision", "suggested_display_precision"),
        ("entity_category", "entity_category"),
        ("icon", "icon"),
    ):
        value = getattr(spec, attr)
        if value is not None:
            comp[key] = value
    if expire_after_s > 0:
        comp["expire_after"] = expire_after_s
    return comp


def pack_discovery(
    topics: Topics, snap: PackSnapshot, table: EntityTable, qos: int, expire_after_s: int
) -> dict[str, Any]:
    """Device-based discovery payload of one pack (one HA device, linked to the gateway device)."""
    t = snap.telemetry
    cells = len(t.cell_voltages_v) if t is not None else 0
    labels = [x.label for x in t.temperatures] if t is not None else []
    device_id = topics.pack_device(snap.key)
    ident = snap.identity
    device: dict[str, Any] = {
        "identifiers": [device_id],
        "name": f"Battery {snap.label}",
        "manufacturer": ident.manufacturer or "BMS",
        "model": ident.model or (ident.protocol or "battery pack"),
        "via_device": topics.gateway_device,
    }
    for key, value in (
        ("serial_number", ident.serial),
        ("sw_version", ident.version),
        ("hw_version", ident.barcode),
    ):
        if value:
            device[key] = value
    components = {
        f"{device_id}_{s.key}": _component(s, device_id, expire_after_s)
        for spec in table.pack
        for s in spec.expand(cells, labels)
    }
    return {
        "device": device,
        "origin": ORIGIN,
        "components": components,
        "state_topic": topics.pack_state(snap.key),
        "availability": [{"topic": topics.status}, {"topic": topics.pack_availability(snap.key)}],
        "availability_mode": "all",
        "qos": qos,
    }


def gateway_discovery(topics: Topics, table: EntityTable, qos: int) -> dict[str, Any]:
    device_id = topics.gateway_device
    components = {f"{device_id}_{s.key}": _component(s, device_id, 0) for s in table.gateway}
    components[f"{device_id}_connection"] = {
        "platform": "binary_sensor",
        "name": "Connection",
        "unique_id": f"{device_id}_connection",
        "default_entity_id": f"binary_sensor.{device_id}_connection",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": topics.status,
        "payload_on": "online",
        "payload_off": "offline",
        "availability": [],
    }
    return {
        "device": {
            "identifiers": [device_id],
            "name": f"BMS gateway {device_id}",
            "manufacturer": "bms-gateway",
            "model": "BMS gateway",
            "sw_version": __version__,
        },
        "origin": ORIGIN,
        "components": components,
        "state_topic": topics.bank_state,
        "availability": [{"topic": topics.status}],
        "qos": qos,
    }


def _shape(snap: PackSnapshot) -> tuple[object, ...]:
    t = snap.telemetry
    return (
        0 if t is None else len(t.cell_voltages_v),
        () if t is None else tuple(x.label for x in t.temperatures),
        snap.identity,
        snap.name,
    )


# --- the outgoing buffer ---


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class OutBuffer:
    """Bounded FIFO of messages to publish; when full the oldest message is dropped and counted."""

    def __init__(self, size: int) -> None:
        self._items: deque[OutMessage] = deque()
        self.size = size
        self.dropped = 0
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: OutMessage) -> None:
        if len(self._items) >= self.size:
            self._items.popleft()
            self.dropped += 1
        self._items.append(msg)
        self._nonempty.set()

    async def peek(self) -> OutMessage:
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._items[0]

    def pop(self, msg: OutMessage) -> None:
        """Remove `msg` once published (unless it was dropped meanwhile)."""
        if self._items and self._items[0] is msg:
            self._items.popleft()


@dataclass(slots=True)
class MqttStats:
    connected: bool = False
    connects: int = 0
    published: int = 0
    configs_removed: int = 0
    last_error: str | None = None


async def _first_to_finish(*coros: Coroutine[Any, Any, None]) -> None:
    """Run coroutines as tasks until the first one ends; cancel the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


# --- the service ---


class MqttService:
    """Publishes the model to a broker; see the module docstring."""

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        store: ModelStore,
        *,
        decision: Callable[[], DecisionLike | None] | None = None,
        entities: EntityTable | None = None,
        commands: CommandHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self.commands = commands
        self.store = store
        self.decision = decision
        self.entities = entities or load_entities()
        self.topics = Topics.of(cfg)
        self.buffer = OutBuffer(cfg.buffer_size)
        self.stats = MqttStats()
        self._rng = random.Random()
        self._last_doc: dict[str, bytes] = {}
        self._last_at: dict[str, float] = {}
        self._pending: dict[str, bytes] = {}
        self._avail: dict[PackKey, str] = {}
        self._shapes: dict[PackKey, tuple[object, ...]] = {}

    # --- public ---

    def health(self) -> MqttHealth:
        s = self.stats
        return MqttHealth(
            s.connected, s.published, self.buffer.dropped, max(0, s.connects - 1), len(self.buffer)
        )

    async def run(self, ready: ReadyCallback) -> None:
        host, port, tls = self._endpoint()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._produce_states())
            tg.create_task(self._produce_events())
            tg.create_task(self._tick())
            if self.commands is not None:
                tg.create_task(self.commands.run(self._reply))
            ready()
            await self._connection_loop(host, port, tls)

    # --- producers: never wait on the broker ---

    def _enqueue(self, topic: str, payload: bytes, *, retain: bool, qos: int | None = None) -> None:
        self.buffer.put(OutMessage(topic, payload, self.cfg.qos if qos is None else qos, retain))

    def _reply(self, topic: str, payload: bytes) -> None:
        """A command reply: never retained."""
        self._enqueue(topic, payload, retain=False)

    @staticmethod
    def _encode(doc: Mapping[str, Any]) -> bytes:
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def _gateway_info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "mqtt_dropped": self.buffer.dropped,
            "mqtt_reconnects": max(0, self.stats.connects - 1),
        }

    def _documents(self, view: ModelView) -> dict[str, bytes]:
        docs = {self.topics.pack_state(s.key): self._encode(pack_document(s)) for s in view.ordered()}
        decision = self.decision() if self.decision is not None else None
        docs[self.topics.bank_state] = self._encode(bank_document(view, decision, self._gateway_info()))
        return docs

    def _on_view(self, view: ModelView, now: float) -> None:
        for snap in view.ordered():
            avail = "online" if snap.online else "offline"
            if self._avail.get(snap.key) != avail:
                self._avail[snap.key] = avail
                self._enqueue(self.topics.pack_availability(snap.key), avail.encode(), retain=True)
            if self.cfg.discovery and self._shapes.get(snap.key) != _shape(snap):
                self._shapes[snap.key] = _shape(snap)
                config = pack_discovery(
                    self.topics, snap, self.entities, self.cfg.qos, self.cfg.expire_after_s
                )
                self._enqueue(
                    self.topics.discovery(self.topics.pack_device(snap.key)),
                    self._encode(config),
                    retain=True,
                )
        for topic, payload in self._documents(view).items():
            self._offer(topic, payload, now)

    def _offer(self, topic: str, payload: bytes, now: float) -> None:
        if payload == self._last_doc.get(topic):
            self._pending.pop(topic, None)
            return
        if now - self._last_at.get(topic, float("-inf")) >= self.cfg.min_interval_s:
            self._emit(topic, payload, now)
        else:
            self._pending[topic] = payload

    def _emit(self, topic: str, payload: bytes, now: float) -> None:
        self._pending.pop(topic, None)
        self._last_doc[topic] = payload
        self._last_at[topic] = now
        self._enqueue(topic, payload, retain=self.cfg.retain_state)

    def _flush_pending(self, now: float) -> None:
        for topic, payload in list(self._pending.items()):
            if now - self._last_at.get(topic, float("-inf")) >= self.cfg.min_interval_s:
                self._emit(topic, payload, now)

    async def _produce_states(self) -> None:
        async for view in self.store.subscribe():
            self._on_view(view, time.monotonic())

    async def _produce_events(self) -> None:
        async for ev in self.store.events(maxsize=self.cfg.buffer_size):
            self._enqueue(self.topics.events, self._encode(event_document(ev)), retain=False)

    async def _tick(self) -> None:
        period = self.cfg.min_interval_s / 2 if self.cfg.min_interval_s > 0 else 1.0
        while True:
            await asyncio.sleep(max(0.05, period))
            self._flush_pending(time.monotonic())

    # --- the connection ---

    def _endpoint(self) -> tuple[str, int, ssl.SSLContext | None]:
        url = urlsplit(self.cfg.url)
        secure = url.scheme == "mqtts"
        host = url.hostname
        if not host:
            raise ConfigError(f"mqtt.url: no host in {self.cfg.url!r}")
        port = url.port or (8883 if secure else 1883)
        if not secure:
            return host, port, None
        try:
            ctx = ssl.create_default_context(cafile=self.cfg.ca_file)
            if self.cfg.cert_file is not None:
                ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"mqtt: cannot load TLS files: {err}") from None
        return host, port, ctx

    async def _connection_loop(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        attempt = 0
        while True:
            try:
                await self._session(host, port, tls)
            except (aiomqtt.MqttError, OSError) as err:
                if self.stats.connected or attempt == 0:
                    log.warning("MQTT broker %s:%d unavailable: %s", host, port, err)
                self.stats.last_error = f"{type(err).__name__}: {err}"
            if self.stats.connected:
                attempt = 0  # the session was up: start the backoff from the beginning
            self.stats.connected = False
            delay = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2 ** min(attempt, 16))
            attempt += 1
            await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))

    async def _session(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        client = aiomqtt.Client(
            host,
            port,
            username=self.cfg.username,
            password=self.cfg.password,
            identifier=self.cfg.client_id,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            clean_session=not self.cfg.persistent_session,
            keepalive=self.cfg.keepalive_s,
            tls_context=tls,
            timeout=10.0,
            max_queued_incoming_messages=1000,
        )
        async with client:
            self.stats.connected = True
            self.stats.connects += 1
            log.info("MQTT connected to %s:%d", host, port)
            # Both halves run as fresh tasks of this session (not in a TaskGroup: on Python 3.11 a
            # TaskGroup whose child fails after the body ended leaves a cancel request on the parent).
            try:
                await _first_to_finish(self._session_body(client), self._listen(client))
            except asyncio.CancelledError:
                # a clean disconnect sends no last will: say "offline" ourselves before leaving
                with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                    await asyncio.wait_for(
                        client.publish(self.topics.status, b"offline", qos=1, retain=True), timeout=2.0
                    )
                raise

    async def _session_body(self, client: aiomqtt.Client) -> None:
        if self.commands is not None:  # before the birth: "online" means commands are heard
            await client.subscribe(self.commands.topic_filter, qos=1)
        await self._send(client, self.topics.status, b"online", 1, True)
        if self.cfg.discovery:
            await client.subscribe(self.topics.ha_status, qos=1)
            await client.subscribe(self.topics.discovery("+"), qos=1)
            await self._publish_discovery(client)
        while len(self.buffer):  # what was buffered while away, in order
            await self._publish_one(client, await self.buffer.peek())
        self._resync()
        await self._drain(client)

    @staticmethod
    async def _send(client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await client.publish(topic, payload, qos=qos, retain=retain)
        # aiomqtt waits for the acknowledgement with asyncio.wait_for, which on Python 3.11 can
        # swallow a cancellation that arrives together with the acknowledgement; honour it here so
        # that shutting the service down never hangs.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool) -> None:
        await self._send(client, topic, payload, self.cfg.qos, retain)
        self.stats.published += 1

    async def _publish_one(self, client: aiomqtt.Client, msg: OutMessage) -> None:
        await self._send(client, msg.topic, msg.payload, msg.qos, msg.retain)
        self.buffer.pop(msg)
        self.stats.published += 1

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            await self._publish_one(client, await self.buffer.peek())

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        payload = gateway_discovery(self.topics, self.entities, self.cfg.qos)
        await self._publish(
            client, self.topics.discovery(self.topics.gateway_device), self._encode(payload), True
        )
        for snap in self.store.view.ordered():
            self._shapes[snap.key] = _shape(snap)
            payload = pack_discovery(self.topics, snap, self.entities, self.cfg.qos, self.cfg.expire_after_s)
            topic = self.topics.discovery(self.topics.pack_device(snap.key))
            await self._publish(client, topic, self._encode(payload), True)

    def _resync(self) -> None:
        """Queue the current availability and state of everything (after connect, after HA restarts).

        Synchronous and through the same FIFO as `_on_view`: a view published while the session is
        busy can neither be overtaken by this older one nor have its availability bookkeeping
        overwritten by it (which left a pack shown offline after it came back).
        """
        view = self.store.view
        now = time.monotonic()
        for snap in view.ordered():
            avail = "online" if snap.online else "offline"
            self._avail[snap.key] = avail
            self._enqueue(self.topics.pack_availability(snap.key), avail.encode(), retain=True)
        for topic, payload in self._documents(view).items():
            self._pending.pop(topic, None)
            self._last_doc[topic] = payload
            self._last_at[topic] = now
            self._enqueue(topic, payload, retain=self.cfg.retain_state)

    async def _listen(self, client: aiomqtt.Client) -> None:
        own = {self.topics.discovery(self.topics.pack_device(k)) for k in self.store.view.packs}
        own.add(self.topics.discovery(self.topics.gateway_device))
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if self.commands is not None and self.commands.action_of(topic) is not None:
                self.commands.submit(topic, payload, retain=bool(message.retain))
            elif topic == self.topics.ha_status:
                if payload.strip().lower() == b"online":
                    log.info("Home Assistant is online: re-publishing discovery and state")
                    await self._publish_discovery(client)
                    self._resync()
            elif topic not in own and payload and self._is_ours(payload):
                log.info("removing discovery of a pack no longer configured: %s", topic)
                await self._publish(client, topic, b"", True)
                self.stats.configs_removed += 1

    def _is_ours(self, payload: bytes) -> bool:
        """A discovery config of a pack device that this gateway published earlier."""
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        device = data.get("device") if isinstance(data, dict) else None
        return isinstance(device, dict) and device.get("via_device") == self.topics.gateway_device


def install(ctx: AppContext) -> list[Service]:
    """The MQTT service when `[mqtt] enabled` (shared as `ctx.extras["mqtt"]` for the metrics)."""
    if not ctx.config.mqtt.enabled:
        return []
    extras = ctx.extras

    def decision() -> DecisionLike | None:
        return getattr(extras.get("decisions"), "latest", None)

    commands = None
    if ctx.config.mqtt.commands:
        from gateway.north.mqtt.commands import CommandHandler

        commands = CommandHandler.from_context(ctx)
    service = MqttService(ctx.config.mqtt, ctx.store, decision=decision, commands=commands)
    extras["mqtt"] = service
    return [service]
