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
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiomqtt

from gateway import __version__
from gateway.app.config import ConfigError, MqttConfig, state_path
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import ModelStore, ModelView, PackKey, PackSnapshot
from gateway.north.documents import pack_document
from gateway.north.metrics.collector import DecisionLike, MqttHealth
from gateway.north.mqtt.discovery import (
    DiscoveryMemory,
    Topics,
    gateway_discovery,
    layout_known,
    pack_discovery,
)
from gateway.north.mqtt.documents import bank_state_document, event_document
from mappings.ha import EntityTable, field_value, load_entities

if TYPE_CHECKING:
    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service
    from gateway.north.mqtt.commands import CommandHandler

log = logging.getLogger(__name__)

# --- the outgoing buffer ---


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def _honour_cancellation() -> None:
    """Raise the cancellation aiomqtt may have swallowed: it waits for the broker's acknowledgement
    (CONNACK, PUBACK) with `asyncio.wait_for`, which on Python 3.11 can drop a cancellation that
    arrives together with it. The service would then run on, and the gateway's shutdown wait for it
    until its deadline."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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

    def discard(self, stale: Callable[[OutMessage], bool]) -> int:
        """Remove the messages something newer already replaced (not counted as dropped)."""
        kept = deque(m for m in self._items if not stale(m))
        removed = len(self._items) - len(kept)
        self._items = kept
        return removed


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
        discovery_file: Path | None = None,
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
        self._pack_docs: dict[
            PackKey, tuple[PackSnapshot, dict[str, Any], bytes]
        ] = {}  # per unchanged snapshot
        self._discovery_docs: dict[PackKey, tuple[tuple[object, ...], tuple[str, bytes]]] = {}
        self._optional_paths: dict[tuple[int, tuple[str, ...]], tuple[tuple[str | int, ...], ...]] = {}
        self._discovery = DiscoveryMemory(discovery_file)

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

    def _pack_state(self, snap: PackSnapshot) -> tuple[dict[str, Any], bytes]:
        """The state document of a pack (the live form: no parameter table) and its encoding, made
        once per snapshot (snapshots are immutable; the model store keeps the object of a pack that
        was not polled, and every view re-offers every pack)."""
        hit = self._pack_docs.get(snap.key)
        if hit is not None and hit[0] is snap:
            return hit[1], hit[2]
        doc = pack_document(snap, parameter_values=False)
        payload = self._encode(doc)
        self._pack_docs[snap.key] = (snap, doc, payload)
        return doc, payload

    def _pack_discovery(self, snap: PackSnapshot) -> tuple[str, bytes]:
        """The pack's discovery topic and config, built again only when what it depends on changed.

        `pack_discovery` reads the layout (cells, sensor labels), the identity and label, and which
        optional values the pack reports: those make the key. A new reading of the same pack (every
        poll) reuses the encoded config.
        """
        t = snap.telemetry
        cells = len(t.cell_voltages_v) if t is not None else 0
        labels = tuple(x.label for x in t.temperatures) if t is not None else ()
        optional = self._optional_paths.get((cells, labels))
        if optional is None:
            optional = tuple(
                tuple(s.path)
                for spec in self.entities.pack
                for s in spec.expand(cells, list(labels))
                if s.optional
            )
            self._optional_paths[(cells, labels)] = optional
        document = self._pack_state(snap)[0] if optional else {}
        present = tuple(field_value(document, path) is not None for path in optional)
        key = (cells, labels, snap.identity, snap.label, present)
        hit = self._discovery_docs.get(snap.key)
        if hit is not None and hit[0] == key:
            return hit[1]
        config = pack_discovery(self.topics, snap, self.entities, self.cfg.qos, self.cfg.expire_after_s)
        found = self.topics.discovery(self.topics.pack_device(snap.key)), self._encode(config)
        self._discovery_docs[snap.key] = (key, found)
        return found

    def _documents(self, view: ModelView) -> dict[str, bytes]:
        # A pack that has not answered yet has no state document: an empty layout published as if it
        # were data would make HA render its cell and sensor templates against nothing.
        docs = {
            self.topics.pack_state(s.key): self._pack_state(s)[1]
            for s in view.ordered()
            if s.telemetry is not None
        }
        decision = self.decision() if self.decision is not None else None
        docs[self.topics.bank_state] = self._encode(bank_state_document(view, decision, self._gateway_info()))
        return docs

    def _on_view(self, view: ModelView, now: float) -> None:
        for snap in view.ordered():
            avail = "online" if snap.online else "offline"
            if self._avail.get(snap.key) != avail:
                self._avail[snap.key] = avail
                self._enqueue(self.topics.pack_availability(snap.key), avail.encode(), retain=True)
            if self.cfg.discovery and layout_known(snap):
                topic, payload = self._pack_discovery(snap)
                if self._discovery.remember(topic, payload):
                    self._enqueue(topic, payload, retain=True)
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
            _honour_cancellation()  # the connect, too, goes through aiomqtt's wait_for
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
            announced = await self._publish_discovery(client)
            # these devices' newest layouts were just announced: a config of theirs queued before
            # this session (a view seen while connecting or away) would announce it a second time
            self.buffer.discard(lambda m: m.topic in announced)
        while len(self.buffer):  # what was buffered while away, in order
            await self._publish_one(client, await self.buffer.peek())
        self._resync()
        await self._drain(client)

    @staticmethod
    async def _send(client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await client.publish(topic, payload, qos=qos, retain=retain)
        _honour_cancellation()

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

    async def _publish_discovery(self, client: aiomqtt.Client) -> set[str]:
        """Announce the gateway and every pack whose layout is known; the topics announced."""
        payload = gateway_discovery(self.topics, self.entities, self.cfg.qos)
        gateway_topic = self.topics.discovery(self.topics.gateway_device)
        await self._publish(client, gateway_topic, self._encode(payload), True)
        announced = {gateway_topic}
        for snap in self.store.view.ordered():
            # complete from the live layout, else from the last one published (after a restart),
            # else not yet: `_on_view` announces the pack once its layout is known
            if layout_known(snap):
                topic, config = self._pack_discovery(snap)
                self._discovery.remember(topic, config)
            else:
                topic = self.topics.discovery(self.topics.pack_device(snap.key))
                known = self._discovery.get(topic)
                if known is None:
                    continue
                config = known
            await self._publish(client, topic, config, True)
            announced.add(topic)
        return announced

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
    """The MQTT service when `[mqtt] enabled` (shared as `ctx.mqtt` for the metrics)."""
    if not ctx.config.mqtt.enabled:
        return []
    decisions = ctx.decisions

    def decision() -> DecisionLike | None:
        return decisions.latest

    commands = None
    if ctx.config.mqtt.commands:
        from gateway.north.mqtt.commands import CommandHandler

        commands = CommandHandler.from_context(ctx)
    service = MqttService(
        ctx.config.mqtt,
        ctx.store,
        decision=decision,
        commands=commands,
        discovery_file=state_path(ctx.config, ctx.config_path, "mqtt-discovery.json"),
    )
    ctx.mqtt = service
    return [service]
