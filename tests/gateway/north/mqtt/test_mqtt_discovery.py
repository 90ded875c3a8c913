"""Home Assistant discovery payloads, the entity table's validation, state documents and the buffer."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.app.config import ConfigError, MqttConfig, parse_config
from gateway.core.model import (
    Availability,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.documents import pack_document
from gateway.north.mqtt.discovery import Topics, gateway_discovery, pack_discovery
from gateway.north.mqtt.documents import bank_state_document
from gateway.north.mqtt.publisher import MqttService, OutBuffer, OutMessage
from mappings.ha import VALID_UNITS, EntityTableError, load_entities, parse_entities
from tests.support.flags import named

TABLE = load_entities()
TOPICS = Topics.of(MqttConfig(client_id="site-7", base_topic="bms", discovery_prefix="homeassistant"))


def pack(address: int = 1, cells: int = 16, telemetry: bool = True) -> PackSnapshot:
    tel = Telemetry.build(
        measured_at=1.0,
        cell_voltages_v=[3.3] * cells,
        temperatures=[
            Temperature(TempRole.CELL, 1, 20.0),
            Temperature(TempRole.CELL, 2, 21.0),
            Temperature(TempRole.MOS, 1, 30.0),
            Temperature(TempRole.AMBIENT, 1, 18.0),
        ],
        voltage_v=52.8,
        current_a=-3.0,
        soc_pct=50.0,
        soh_pct=97.0,
        full_capacity_ah=100.0,
        remaining_capacity_ah=50.0,
        nominal_capacity_ah=100.0,
        cycles=12,
        charge_mos_on=True,
        discharge_mos_on=True,
        flags=named("CELL_OV_Prot"),
    )
    ident = PackIdentity(
        version="V2.1", serial="SN9", model="P16S100A", manufacturer="Basengreen", barcode="PCB1"
    )
    return PackSnapshot(
        "bus0",
        address,
        Availability.ONLINE if telemetry else Availability.UNKNOWN,
        tel if telemetry else None,
        ident,
    )


def resolve(doc: Any, path: str) -> Any:
    """Follow a value_template path (a.b[3].c) through a state document; KeyError when it is missing."""
    for name, index in re.findall(r"\.?([a-z_0-9]+)|\[(\d+)\]", path):
        doc = doc[int(index)] if index else doc[name]
    return doc


def template_path(template: str) -> str:
    m = re.match(r"\{\{ (?:\('ON' if )?\(*value_json\.([a-z0-9_.\[\]]+)[ )]", template)
    assert m, template
    return m.group(1)


def all_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in all_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in all_keys(v)}
    return set()


def test_pack_discovery_payload_is_complete_and_current_schema() -> None:
    snap = pack(cells=16)
    payload = json.loads(json.dumps(pack_discovery(TOPICS, snap, TABLE, 1, 600)))
    assert "object_id" not in all_keys(payload)
    dev = payload["device"]
    assert dev["identifiers"] == ["site_7_bus0_1"] and dev["via_device"] == "site_7"
    assert (dev["serial_number"], dev["sw_version"], dev["manufacturer"]) == ("SN9", "V2.1", "Basengreen")
    assert payload["origin"]["name"] == "bms-gateway"
    assert "support_url" not in payload["origin"]  # pyproject declares no project URL: no made-up one
    assert payload["state_topic"] == "bms/bus0/1/state"
    assert payload["availability"] == [{"topic": "bms/status"}, {"topic": "bms/bus0/1/availability"}]
    assert payload["availability_mode"] == "all"
    comps = payload["components"]
    uids = [c["unique_id"] for c in comps.values()]
    assert len(uids) == len(set(uids)) and set(comps) == set(uids)
    for comp in comps.values():
        for key in ("platform", "name", "unique_id", "default_entity_id", "value_template"):
            assert key in comp, (comp, key)
        assert comp["default_entity_id"] == f"{comp['platform']}.{comp['unique_id']}"
        assert not comp["name"].lower().startswith(dev["name"].lower())
        assert comp["expire_after"] == 600
    cells = [c for k, c in comps.items() if re.fullmatch(r"site_7_bus0_1_cell_\d+", k)]
    assert len(cells) == 16
    temps = {k for k in comps if "_temp_" in k}
    assert temps == {f"site_7_bus0_1_temp_{x}" for x in ("cell1", "cell2", "mos1", "ambient1")}
    soc = comps["site_7_bus0_1_soc"]
    assert (soc["device_class"], soc["state_class"], soc["unit_of_measurement"]) == (
        "battery",
        "measurement",
        "%",
    )
    assert comps["site_7_bus0_1_cycles"]["state_class"] == "total_increasing"
    assert comps["site_7_bus0_1_serial"]["entity_category"] == "diagnostic"


def test_device_classes_and_units_are_pairs_ha_accepts() -> None:
    payloads = [pack_discovery(TOPICS, pack(), TABLE, 1, 0), gateway_discovery(TOPICS, TABLE, 1)]
    for payload in payloads:
        for comp in payload["components"].values():
            dc = comp.get("device_class")
            if comp["platform"] == "sensor" and dc is not None:
                assert comp["unit_of_measurement"] in VALID_UNITS[dc], comp
            if dc == "energy":
                assert comp["state_class"] in ("total", "total_increasing")
            if comp["platform"] == "binary_sensor":
                assert "unit_of_measurement" not in comp and "state_class" not in comp


def test_every_template_reads_a_field_of_its_state_document() -> None:
    snap = pack()
    store = ModelStore([snap.key])
    store.publish(snap)
    doc = json.loads(json.dumps(pack_document(snap)))
    for comp in pack_discovery(TOPICS, snap, TABLE, 1, 0)["components"].values():
        resolve(doc, template_path(comp["value_template"]))
    bank = json.loads(json.dumps(bank_state_document(store.view, None, {"version": "x", "mqtt_dropped": 0})))
    for comp in gateway_discovery(TOPICS, TABLE, 1)["components"].values():
        if "value_template" in comp:
            resolve(bank, template_path(comp["value_template"]))


def test_a_pack_that_never_answered_has_a_document_with_every_key() -> None:
    unknown = pack_document(pack(telemetry=False))
    known = pack_document(pack())
    assert set(unknown) == set(known)
    assert unknown["telemetry"] is None and unknown["availability"] == "unknown"
    assert known["telemetry"]["cell_voltages_v"] == [3.3] * 16
    payload = pack_discovery(TOPICS, pack(telemetry=False), TABLE, 1, 0)
    assert not any("_cell_" in k and k[-1].isdigit() for k in payload["components"])


def test_gateway_device_and_connection_entity() -> None:
    payload = gateway_discovery(TOPICS, TABLE, 1)
    assert payload["device"]["identifiers"] == ["site_7"]
    assert payload["state_topic"] == "bms/bank/state"
    conn = payload["components"]["site_7_connection"]
    assert conn["state_topic"] == "bms/status" and conn["device_class"] == "connectivity"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"device_class": "battery", "unit": "V", "state_class": "measurement"}, "needs a unit"),
        ({"device_class": "energy", "unit": "kWh", "state_class": "measurement"}, "needs state_class"),
        ({"platform": "binary_sensor", "unit": "V"}, "no unit"),
        ({"platform": "switch"}, "platform"),
        ({"key": "cell_{i}", "name": "Cell {i}"}, "only allowed with repeat"),
        ({"repeat": "cells"}, "needs {i}"),
        ({"entity_category": "config"}, "entity_category"),
        ({"unit": "%", "device_class": "voltage"}, "needs a unit"),
        ({"colour": "red"}, "unknown keys"),
        ({"value": "soc * 2"}, "names the field as {value}"),
        ({"value": "{{ {value} }}"}, "without other braces"),
    ],
)
def test_invalid_entity_entries_are_rejected(entry: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"key": "x", "name": "X", "platform": "sensor", "field": "soc_pct"}
    base.update(entry)
    with pytest.raises(EntityTableError, match=re.escape(message)):
        parse_entities({"pack": [base]})


def test_duplicate_entity_keys_are_rejected() -> None:
    e = {"key": "x", "name": "X", "platform": "sensor", "field": "soc_pct"}
    with pytest.raises(EntityTableError, match="duplicate"):
        parse_entities({"pack": [e, e]})


def test_buffer_keeps_the_newest_and_counts_drops() -> None:
    buf = OutBuffer(3)
    msgs = [OutMessage(f"t/{i}", b"x", 1, False) for i in range(5)]
    for m in msgs:
        buf.put(m)
    assert buf.dropped == 2 and len(buf) == 3


async def test_buffer_peek_and_pop_in_order() -> None:
    buf = OutBuffer(10)
    a, b = OutMessage("a", b"", 0, False), OutMessage("b", b"", 0, False)
    buf.put(a)
    buf.put(b)
    assert await buf.peek() is a
    buf.pop(a)
    assert await buf.peek() is b


async def test_buffer_discards_what_a_newer_announcement_replaced() -> None:
    """A discovery config queued before the session is dropped once the session announced that
    device afresh (it would be published twice); other messages keep their order, nothing counts
    as dropped."""
    buf = OutBuffer(10)
    msgs = [
        OutMessage("homeassistant/device/p1/config", b"{}", 1, True),
        OutMessage("bms-gateway/b/1/state", b"{}", 1, True),
        OutMessage("homeassistant/device/p2/config", b"", 1, True),  # a removal: not re-announced
    ]
    for m in msgs:
        buf.put(m)
    assert buf.discard(lambda m: m.topic in {"homeassistant/device/p1/config"}) == 1
    assert len(buf) == 2 and buf.dropped == 0
    assert await buf.peek() is msgs[1]
    buf.pop(msgs[1])
    assert await buf.peek() is msgs[2]


def test_state_rate_limit_keeps_the_latest_document() -> None:
    store = ModelStore([("bus0", 1)])
    service = MqttService(MqttConfig(min_interval_s=10.0, discovery=False), store)
    service._on_view(store.publish(pack()), now=100.0)
    first = len(service.buffer)
    for i in range(5):  # changes within the interval are held back, not queued
        snap = pack()
        store.publish(PackSnapshot(snap.bus, 1, snap.availability, snap.telemetry, name=f"n{i}"))
        service._on_view(store.view, now=101.0 + i)
    assert len(service.buffer) == first
    service._flush_pending(now=111.0)  # the interval passed: only the newest document goes out
    assert len(service.buffer) == first + 2  # the pack and the bank (its computed_at moved)
    assert [m.topic for m in list(service.buffer._items)[first:]] == [
        "bms-gateway/bus0/1/state",
        "bms-gateway/bank/state",
    ]
    last_pack = [m for m in list(service.buffer._items) if m.topic == "bms-gateway/bus0/1/state"][-1]
    assert json.loads(last_pack.payload)["name"] == "n4"


def test_mqtt_config_validation() -> None:
    ok = parse_config(
        {
            "mqtt": {
                "url": "mqtts://broker:8883",
                "ca_file": "ca.pem",
                "cert_file": "c.pem",
                "key_file": "k.pem",
            }
        },
        env={},
    )
    assert ok.mqtt.discovery and ok.mqtt.discovery_prefix == "homeassistant" and ok.mqtt.qos == 1
    env = parse_config({}, env={"BMS_GATEWAY_MQTT_PASSWORD": "s3cret"})
    assert env.mqtt.password == "s3cret"
    for bad in (
        {"url": "tcp://broker"},
        {"cert_file": "c.pem"},
        {"url": "mqtt://broker", "ca_file": "ca.pem"},
        {"qos": 3},
        {"base_topic": "bms/#"},
        {"buffer_size": 0},
        {"client_id": "has space"},
    ):
        with pytest.raises(ConfigError, match="mqtt"):
            parse_config({"mqtt": bad}, env={})


async def test_missing_tls_files_are_a_configuration_error(tmp_path: object) -> None:
    cfg = MqttConfig(url="mqtts://127.0.0.1:1", ca_file="/nonexistent/ca.pem")
    service = MqttService(cfg, ModelStore())
    with pytest.raises(ConfigError, match="TLS"):
        await service.run(lambda: None)


def test_origin_support_url_comes_from_the_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    import email.message
    import importlib.metadata

    from gateway.north.mqtt import documents

    meta = email.message.Message()
    meta["Name"] = "bms-gateway"
    meta["Project-URL"] = "Homepage, https://example.org/bms-gateway"
    meta["Project-URL"] = "Issues, https://example.org/bms-gateway/issues"
    monkeypatch.setattr(importlib.metadata, "metadata", lambda name: meta)
    assert documents._origin()["support_url"] == "https://example.org/bms-gateway/issues"
