"""One JSON document per snapshot: the HTTP API and MQTT publish the same pack and bank documents."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Any

import httpx

from gateway.app.config import Config, MqttConfig
from gateway.app.context import AppContext
from gateway.core.model import (
    Availability,
    BankSnapshot,
    ClockReading,
    LinkStats,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.documents import bank_document, number, pack_document, plain
from gateway.north.http import create_app
from gateway.north.http.live import snapshot_doc
from gateway.north.mqtt.publisher import MqttService
from tests.support.flags import named

KEYS = [("b1", 1), ("b1", 2), ("b2", 5)]


def telemetry(soc: float, *, noisy: bool = False) -> Telemetry:
    cell = 3.2800000000000002 if noisy else 3.28  # 3280 * 0.001: binary noise a codec might leave
    return Telemetry.build(
        measured_at=1764150000.25,
        cell_voltages_v=[cell, 3.301, 3.29],
        temperatures=[Temperature(TempRole.CELL, 1, 21.5), Temperature(TempRole.MOS, 1, 0.1 + 0.2)],
        voltage_v=9.87,
        current_a=-12.4,
        soc_pct=soc,
        soh_pct=99.0,
        full_capacity_ah=100.0,
        remaining_capacity_ah=soc,
        cycles=42,
        charge_mos_on=True,
        discharge_mos_on=True,
        balancing_cells=[2],
        flags=named("CELL_OV_Alarm"),
    )


def store() -> ModelStore:
    s = ModelStore(KEYS, names={("b1", 1): "left"})
    s.publish(
        PackSnapshot(
            "b1",
            1,
            Availability.ONLINE,
            telemetry(40.0, noisy=True),
            PackIdentity(version="V1", serial="SN1", protocol="tianpower"),
            ParameterSet.of(999.0, [ParameterReading("CELL_OV_Start", 3.65, "V")]),
            ClockReading(1764150002.0, 1764149999.875),
            LinkStats(requests=3, responses=2, last_success_at=1764150000.25, last_poll_duration_s=0.1 + 0.2),
            name="left",
        ),
        PackSnapshot("b1", 2, Availability.ONLINE, telemetry(80.0)),
        now=1764150001.0,
    )
    return s


def mqtt_payloads(model: ModelStore) -> dict[str, Any]:
    """What the MQTT adapter publishes for the model's current view, by topic."""
    service = MqttService(MqttConfig(discovery=False, min_interval_s=0.0), model)
    service._on_view(model.view, now=100.0)
    return {m.topic: json.loads(m.payload) for m in service.buffer._items if m.topic.endswith("/state")}


async def http_get(ctx: AppContext, path: str) -> Any:
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def without_age(doc: dict[str, Any]) -> dict[str, Any]:
    """HTTP answers add `age_s` (seconds since the last read, at the time of the request)."""
    assert "age_s" in doc
    return {k: v for k, v in doc.items() if k != "age_s"}


def live(doc: dict[str, Any]) -> dict[str, Any]:
    """The live form of an HTTP pack answer: the parameter table's values left out."""
    params = doc["parameters"]
    return doc | {"parameters": None if params is None else {"read_at": params["read_at"]}}


async def test_http_and_mqtt_publish_the_same_pack_and_bank_documents() -> None:
    model = store()
    ctx = AppContext(config=Config(), config_path=None, store=model)
    published = mqtt_payloads(model)
    answered = 0
    for bus, address in KEYS[:2]:
        http = await http_get(ctx, f"/api/packs/{bus}/{address}")
        # MQTT carries the live form: the same document without the parameter table's values
        assert live(without_age(http)) == published[f"bms-gateway/{bus}/{address}/state"]
        answered += 1
    listed = await http_get(ctx, "/api/packs")
    assert [live(without_age(p)) for p in listed[:2]] == [
        published[f"bms-gateway/b1/{a}/state"] for a in (1, 2)
    ]
    assert listed[0]["parameters"]["values"] == {"CELL_OV_Start": {"value": 3.65, "unit": "V"}}
    assert published["bms-gateway/b1/1/state"]["parameters"] == {"read_at": 999.0}
    assert answered == 2 and "bms-gateway/b2/5/state" not in published  # never answered: no state yet
    system = await http_get(ctx, "/api/system")
    bank = published["bms-gateway/bank/state"]
    assert system["bank"] == bank["bank"] == json.loads(json.dumps(bank_document(model.view.bank)))
    assert bank["bank"]["soc_pct"] == 60.0 and bank["bank"]["packs_online"] == 2
    assert set(bank) == {"bank", "limits", "gateway"}
    assert bank["limits"]["charge_voltage_v"] is None  # no decision yet: every limit is null
    # the live stream (web UI) carries the same documents, the parameter table left out
    stream = json.loads(json.dumps(snapshot_doc(ctx, 1764150001.0)))
    assert stream["bank"] == bank["bank"]
    first = without_age(stream["packs"][0])
    assert first["parameters"] == {"read_at": 999.0}
    assert first == published["bms-gateway/b1/1/state"]


def test_floats_carry_no_binary_noise_and_keep_their_resolution() -> None:
    model = store()
    snap = model.view.packs[("b1", 1)]
    doc = pack_document(snap)
    text = json.dumps([doc, bank_document(model.view.bank)])
    noisy = re.findall(r"\d+\.\d*(?:0000000|9999999)\d+", text)
    assert noisy == []
    tel = doc["telemetry"]
    assert tel["cell_voltages_v"][0] == 3.28 and tel["cell_min_v"] == 3.28
    assert tel["temperatures"][1]["value_c"] == 0.3
    assert doc["link"]["last_poll_duration_s"] == 0.3 and doc["link"]["success_ratio"] == 0.6667
    assert doc["clock"]["drift_s"] == 2.125
    assert tel["measured_at"] == 1764150000.25  # timestamps keep their fraction
    assert tel["meanings"] == {"protection": [], "warning": ["cell_overvoltage"]}


def test_timestamps_keep_every_digit() -> None:
    """A wall-clock time is no decimal quantity: written as the model holds it. (From a CI run: a
    clock read at 1796642345.9815493 was answered as 1796642345.98155 by the 15-digit rule.)"""
    rng = random.Random(7)
    stamps = [1796642345.0 + rng.random() for _ in range(2000)]
    assert sum(number(t) != t for t in stamps) > 100  # what the quantity rule would have done
    for t in stamps:
        snap = PackSnapshot(
            "b1", 1, Availability.ONLINE, telemetry(40.0), clock=ClockReading(t - 3.0, t),
            link=LinkStats(last_success_at=t),
        )  # fmt: skip
        doc = pack_document(snap)
        assert doc["clock"]["read_at"] == t and doc["link"]["last_success_at"] == t
    assert plain({"computed_at": stamps[0], "soc_pct": 3280 * 0.001}) == {
        "computed_at": stamps[0],
        "soc_pct": 3.28,
    }


def test_the_bank_document_carries_every_field_of_the_bank_snapshot() -> None:
    empty = bank_document(BankSnapshot(1.0, 2, 0, 0, 2))
    assert {f.name for f in dataclasses.fields(BankSnapshot)} <= set(empty)
    assert empty["has_data"] is False and empty["cell_diff_v"] is None
    assert empty["meanings"] == {"protection": [], "warning": []}


def test_a_pack_that_never_answered_has_every_key() -> None:
    unknown = pack_document(PackSnapshot("b2", 5, Availability.UNKNOWN))
    known = pack_document(store().view.packs[("b1", 1)])
    assert set(unknown) == set(known)
    assert unknown["telemetry"] is None and unknown["label"] == "b2/5"
