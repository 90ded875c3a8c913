"""Home Assistant device-based discovery: topics, the payloads per pack and for the gateway, and the
memory of what was announced (so a restart announces each pack once, complete).

What it is for: building discovery payloads from the entity table (mappings/ha) and a snapshot. It
must never talk to the broker; `DiscoveryMemory` reads and writes only its own small JSON file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.app.config import MqttConfig
from gateway.core.model import PackKey, PackSnapshot
from gateway.north.documents import pack_document
from gateway.north.mqtt.documents import ORIGIN, slug
from mappings.ha import EntitySpec, EntityTable, field_value

log = logging.getLogger(__name__)


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


def _component(spec: EntitySpec, device_id: str, expire_after_s: int, qos: int) -> dict[str, Any]:
    uid = f"{device_id}_{spec.key}"
    comp: dict[str, Any] = {
        "platform": spec.platform,
        "name": spec.name,
        "unique_id": uid,
        "default_entity_id": f"{spec.platform}.{uid}",
        "value_template": spec.value_template,
        # HA does not copy a device-level `qos` into the components: each one says it itself
        "qos": qos,
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


def layout_known(snap: PackSnapshot) -> bool:
    """Whether a pack's discovery can be complete: its cells and sensors (telemetry) and its identity
    (version/serial/barcode, read right after the first telemetry) are known."""
    ident = snap.identity
    return snap.telemetry is not None and any((ident.version, ident.serial, ident.barcode))


def pack_discovery(
    topics: Topics, snap: PackSnapshot, table: EntityTable, qos: int, expire_after_s: int
) -> dict[str, Any]:
    """Device-based discovery payload of one pack (one HA device, linked to the gateway device).

    Optional entities (`optional = true` in the table) are left out while the pack does not report
    their value, so HA never shows an entity that can only ever be "unknown".
    """
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
    document = pack_document(snap)
    components = {
        f"{device_id}_{s.key}": _component(s, device_id, expire_after_s, qos)
        for spec in table.pack
        for s in spec.expand(cells, labels)
        if not s.optional or field_value(document, s.path) is not None
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
    components = {f"{device_id}_{s.key}": _component(s, device_id, 0, qos) for s in table.gateway}
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
        "qos": qos,
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


class DiscoveryMemory:
    """The last discovery payload published per pack device, kept in a small JSON file.

    After a restart the gateway announces every pack once, complete, from this memory (HA keeps its
    entities and sees no shrinking layout while the first telemetry is on its way); a payload is
    published again only when the pack's layout or identity really changed. Without a file (tests,
    `state_dir` unwritable) the memory lives for the process only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.payloads: dict[str, bytes] = {}
        if path is None:
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning("MQTT discovery memory %s unreadable (%s); starting without it", path, err)
            return
        if isinstance(data, dict):
            self.payloads = {
                str(k): json.dumps(v, separators=(",", ":")).encode()
                for k, v in data.items()
                if isinstance(v, dict)
            }

    def get(self, topic: str) -> bytes | None:
        return self.payloads.get(topic)

    def remember(self, topic: str, payload: bytes) -> bool:
        """Keep `payload` for `topic`; True when it differs from what was published before."""
        if self.payloads.get(topic) == payload:
            return False
        self.payloads[topic] = payload
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        data = {k: json.loads(v) for k, v in sorted(self.payloads.items())}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("cannot write MQTT discovery memory %s: %s", self.path, err)
