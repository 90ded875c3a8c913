"""The Prometheus collector: every documented family, values equal to the model, stale packs visible."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.model import (
    Availability,
    ClockReading,
    LinkStats,
    ModelStore,
    PackIdentity,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.north.metrics.collector import (
    FAMILIES,
    FAMILY_BY_NAME,
    BusHealth,
    CanHealth,
    GatewayCollector,
    MetricsService,
    MetricsSources,
    ModbusHealth,
    MqttHealth,
    Rs485Health,
    make_registry,
    metrics_router,
    render,
)
from tests.support import REPO
from tests.support.flags import named

TD = "temperature_derating"
DOCS = REPO / "docs" / "metrics.md"


@dataclass(frozen=True)
class Decision:
    charge_voltage_v: float = 55.2
    discharge_voltage_v: float = 46.0
    charge_current_a: float = 80.0
    discharge_current_a: float = 100.0
    charge_enabled: bool = True
    discharge_enabled: bool = False
    force_charge_1: bool = False
    force_charge_2: bool = True
    full_charge_request: bool = False
    stale: bool = False
    has_data: bool = True
    limiting: dict[str, str] = field(default_factory=lambda: {"charge_current_a": TD})


def telemetry(address: int, measured_at: float = 1000.0, **kw: object) -> Telemetry:
    cells = [3.30 + 0.01 * i + 0.001 * address for i in range(16)]
    args: dict[str, object] = {
        "measured_at": measured_at,
        "cell_voltages_v": cells,
        "temperatures": [
            Temperature(TempRole.CELL, 1, 21.0 + address),
            Temperature(TempRole.CELL, 2, 22.5),
            Temperature(TempRole.MOS, 1, 30.0),
            Temperature(TempRole.AMBIENT, 1, 19.0),
        ],
        "voltage_v": sum(cells),
        "current_a": -12.5 * address,
        "soc_pct": 40.0 + address,
        "soh_pct": 98.0,
        "full_capacity_ah": 100.0,
        "remaining_capacity_ah": 41.0,
        "nominal_capacity_ah": 105.0,
        "cycles": 100 + address,
        "charge_mos_on": True,
        "discharge_mos_on": False,
        "heater_on": False,
        "fan_on": True,
        "balancing_cells": [3, 7],
        "flags": named("CELL_OV_Prot", "CHG_OT_Alarm", "NTC_Short_Circuit", "Charging"),
    }
    args.update(kw)
    return Telemetry.build(**args)  # type: ignore[arg-type]


def snapshot(address: int, availability: Availability = Availability.ONLINE, **kw: object) -> PackSnapshot:
    return PackSnapshot(
        "bus0",
        address,
        availability,
        telemetry(address, **kw),
        identity=PackIdentity(version="V1.2", serial=f"SN{address}", model="P16S100", protocol="tianpower"),
        clock=ClockReading(pack_time=2000.0 + address, read_at=2000.0),
        link=LinkStats(
            requests=50,
            responses=48,
            timeouts=1,
            checksum_errors=1,
            last_success_at=999.0,
            last_poll_duration_s=0.3,
        ),
    )


def full_sources(store: ModelStore, decision: Decision | None = None) -> MetricsSources:
    return MetricsSources(
        store=store,
        started_at=123.0,
        # the bus owner's poll histogram: one poll of 0.3 s
        buses=lambda: [BusHealth("bus0", 100, 95, 2, 3, 4, True, ((0.1, 0), (0.5, 1), (1.0, 1)), 1, 0.3)],
        modbus=lambda: ModbusHealth({3: 10, 16: 2}, {2: 1}, 1),
        can=lambda: CanHealth("pylon", 500, 20, 0, True),
        rs485=lambda: Rs485Health("pylon-rs485", 40, 1, True),
        mqtt=lambda: MqttHealth(True, 77, 3, 1, 0),
        decision=lambda: decision or Decision(),
        services=lambda: {"mqtt": True, "modbus": False},
        tasks=lambda: 42,
    )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(collector: GatewayCollector) -> tuple[set[str], Samples]:
    text = render(make_registry(collector)).decode()
    assert " # " not in text
    names: set[str] = set()
    samples: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert s.timestamp is None  # no client-side timestamps
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            names.add(s.name)
    return names, samples


def value(samples: Samples, name: str, /, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def exposed_name(name: str, kind: str) -> str:
    return name + "_count" if kind == "histogram" else name


def test_every_documented_family_for_every_pack() -> None:
    store = ModelStore([("bus0", 1), ("bus0", 2)])
    store.publish(snapshot(1), snapshot(2), now=1000.0)
    collector = GatewayCollector(full_sources(store))
    collector.observe(store.view)
    names, samples = scrape(collector)
    for fam in FAMILIES:
        assert exposed_name(fam.name, fam.kind) in names, fam.name
    for fam in FAMILIES:
        if fam.scope == "pack" or fam.labels[:2] == ("bus", "pack"):
            packs = {dict(labels).get("pack") for (n, labels) in samples if n == fam.name}
            assert packs == {"1", "2"}, fam.name


def test_values_equal_the_model() -> None:
    store = ModelStore([("bus0", 1), ("bus0", 2)])
    store.publish(snapshot(1), snapshot(2), now=1000.0)
    t = store.view.packs[("bus0", 2)].telemetry
    assert t is not None
    _, s = scrape(GatewayCollector(full_sources(store)))
    p2 = {"bus": "bus0", "pack": "2"}
    assert value(s, "bms_pack_voltage_volts", **p2) == pytest.approx(t.voltage_v)
    assert value(s, "bms_pack_current_amperes", **p2) == pytest.approx(-25.0)
    assert value(s, "bms_pack_power_watts", **p2) == pytest.approx(t.voltage_v * -25.0)
    assert value(s, "bms_pack_state_of_charge_ratio", **p2) == pytest.approx(0.42)
    assert value(s, "bms_pack_state_of_health_ratio", **p2) == pytest.approx(0.98)
    assert value(s, "bms_pack_cycles_total", **p2) == 102
    assert value(s, "bms_pack_nominal_capacity_ampere_hours", **p2) == 105.0
    for i, v in enumerate(t.cell_voltages_v, start=1):
        assert value(s, "bms_pack_cell_voltage_volts", cell=str(i), **p2) == pytest.approx(v)
    assert value(s, "bms_pack_cell_balancing", cell="7", **p2) == 1.0
    assert value(s, "bms_pack_cell_balancing", cell="8", **p2) == 0.0
    assert value(s, "bms_pack_cell_voltage_spread_volts", **p2) == pytest.approx(t.cell_diff_v)
    assert value(s, "bms_pack_temperature_celsius", sensor="cell1", role="cell", **p2) == 23.0
    assert value(s, "bms_pack_temperature_celsius", sensor="mos1", role="mos", **p2) == 30.0
    assert value(s, "bms_pack_switch_on", switch="discharge_mos", **p2) == 0.0
    assert value(s, "bms_pack_switch_on", switch="fan", **p2) == 1.0
    assert value(s, "bms_pack_protection", name="CELL_OV_Prot", **p2) == 1.0
    assert value(s, "bms_pack_flag_meaning", meaning="cell_overvoltage", level="protection", **p2) == 1.0
    assert value(s, "bms_pack_flag_meaning", meaning="ntc_fault", level="warning", **p2) == 1.0
    assert value(s, "bms_bank_flag_meaning", meaning="charge_overtemperature", level="warning") == 1.0
    assert value(s, "bms_pack_clock_drift_seconds", **p2) == 2.0
    info = {
        k: v for (n, labels), v in s.items() if n == "bms_pack_info" for k in [labels] if ("pack", "2") in k
    }
    assert [dict(k)["serial"] for k in info] == ["SN2"]
    bank = store.view.bank
    assert value(s, "bms_bank_current_amperes") == pytest.approx(bank.current_a)
    assert value(s, "bms_bank_state_of_charge_ratio") == pytest.approx(0.415)
    assert value(s, "bms_bank_packs", state="online") == 2
    # the decision and the adapters' health
    assert value(s, "bms_limit_charge_current_amperes") == 80.0
    assert value(s, "bms_limit_discharge_enabled") == 0.0
    assert value(s, "bms_limit_request", request="force_charge_2") == 1.0
    assert value(s, "bms_limit_limiting_factor", limit="charge_current_a", factor=TD) == 1.0
    assert value(s, "bmsgw_bus_retries_total", bus="bus0") == 4
    assert value(s, "bmsgw_modbus_requests_total", function="3") == 10
    assert value(s, "bmsgw_modbus_exceptions_total", code="2") == 1
    assert value(s, "bmsgw_inverter_can_frames_sent_total", protocol="pylon") == 500
    assert value(s, "bmsgw_mqtt_messages_dropped_total") == 3
    assert value(s, "bmsgw_service_up", service="modbus") == 0.0
    assert value(s, "bmsgw_pack_timeouts_total", **p2) == 1
    assert value(s, "bmsgw_pack_last_success_timestamp_seconds", **p2) == 999.0


def test_stale_and_offline_packs_are_visible() -> None:
    store = ModelStore([("bus0", 1), ("bus0", 2), ("bus0", 3)])
    store.publish(
        snapshot(1),
        snapshot(2, Availability.STALE),
        snapshot(3, Availability.OFFLINE),
        now=1000.0,
    )
    _, s = scrape(GatewayCollector(full_sources(store)))
    p = {a: {"bus": "bus0", "pack": str(a)} for a in (1, 2, 3)}
    assert value(s, "bmsgw_pack_up", **p[1]) == 1.0
    assert value(s, "bmsgw_pack_up", **p[2]) == 0.0 and value(s, "bmsgw_pack_stale", **p[2]) == 1.0
    assert value(s, "bmsgw_pack_availability", state="stale", **p[2]) == 1.0
    assert value(s, "bmsgw_pack_availability", state="offline", **p[3]) == 1.0
    assert value(s, "bmsgw_pack_availability", state="online", **p[3]) == 0.0
    # stale: last values kept (with their timestamp); offline: identity and health only
    assert ("bms_pack_voltage_volts", frozenset(p[2].items())) in s
    assert value(s, "bms_pack_measurement_timestamp_seconds", **p[2]) == 1000.0
    assert ("bms_pack_voltage_volts", frozenset(p[3].items())) not in s
    assert value(s, "bmsgw_pack_requests_total", **p[3]) == 50
    assert value(s, "bms_bank_packs", state="stale") == 1
    assert value(s, "bms_bank_packs", state="offline") == 1


def test_disabled_adapters_export_nothing_and_bus_totals_come_from_links() -> None:
    store = ModelStore([("bus0", 1)])
    store.publish(snapshot(1), now=1000.0)
    names, s = scrape(GatewayCollector(MetricsSources(store=store)))
    assert not any(
        n.startswith(("bms_limit_", "bmsgw_modbus_", "bmsgw_inverter_", "bmsgw_mqtt_")) for n in names
    )
    assert value(s, "bmsgw_bus_frames_sent_total", bus="bus0") == 50
    assert value(s, "bmsgw_bus_checksum_errors_total", bus="bus0") == 1


def test_cleared_flags_and_factors_read_zero() -> None:
    store = ModelStore([("bus0", 1)])
    decision = Decision()
    sources = full_sources(store)
    sources.decision = lambda: decision
    collector = GatewayCollector(sources)
    store.publish(snapshot(1), now=1000.0)
    scrape(collector)
    store.publish(snapshot(1, measured_at=1005.0, flags=()), now=1005.0)
    decision = replace(decision, limiting={"charge_current_a": "soc_band"})
    _, s = scrape(collector)
    p1 = {"bus": "bus0", "pack": "1"}
    assert value(s, "bms_pack_alarm", name="CHG_OT_Alarm", **p1) == 0.0
    assert value(s, "bms_pack_protection", name="CELL_OV_Prot", **p1) == 0.0
    assert value(s, "bms_bank_alarm", name="CHG_OT_Alarm") == 0.0
    assert value(s, "bms_pack_flag_meaning", meaning="cell_overvoltage", level="protection", **p1) == 0.0
    assert value(s, "bms_bank_flag_meaning", meaning="charge_overtemperature", level="warning") == 0.0
    assert value(s, "bms_limit_limiting_factor", limit="charge_current_a", factor="soc_band") == 1.0
    assert value(s, "bms_limit_limiting_factor", limit="charge_current_a", factor=TD) == 0.0


def test_poll_histogram_is_the_bus_owners() -> None:
    """One poll-duration histogram: the bus owner's (every poll it records), rendered as it is."""
    from gateway.south.bus import BusCounters

    store = ModelStore([("bus0", 1)])
    counters = BusCounters()
    for d in [0.04, 0.3, 0.3, 7.0]:
        counters.poll_duration_s.observe(d)
    hist = counters.poll_duration_s

    def buses() -> list[BusHealth]:
        buckets = tuple(zip(hist.buckets, hist.counts, strict=True))
        return [BusHealth("bus0", 0, 0, 0, 0, 0, True, buckets, hist.count, hist.sum)]

    collector = GatewayCollector(MetricsSources(store=store, buses=buses))
    snap = snapshot(1, measured_at=1000.0)
    store.publish(replace(snap, link=replace(snap.link, last_poll_duration_s=0.3)), now=1000.0)
    collector.observe(store.view)  # a snapshot is no second source of poll durations
    _, s = scrape(collector)
    assert value(s, "bmsgw_poll_duration_seconds_count", bus="bus0") == 4
    assert value(s, "bmsgw_poll_duration_seconds_bucket", bus="bus0", le="0.05") == 1
    assert value(s, "bmsgw_poll_duration_seconds_bucket", bus="bus0", le="0.5") == 3
    assert value(s, "bmsgw_poll_duration_seconds_bucket", bus="bus0", le="+Inf") == 4
    assert value(s, "bmsgw_poll_duration_seconds_sum", bus="bus0") == pytest.approx(7.64)


async def test_metrics_route_and_service() -> None:
    store = ModelStore([("bus0", 1)])
    collector = GatewayCollector(full_sources(store))
    service = MetricsService(collector)
    app = FastAPI()
    app.include_router(metrics_router(make_registry(collector)))
    ready: list[bool] = []

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run(lambda: ready.append(True)))
        await asyncio.sleep(0)
        store.publish(snapshot(1), now=1000.0)
        for _ in range(20):
            await asyncio.sleep(0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            resp = await client.get("/metrics")
        task.cancel()
    assert ready == [True]
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert 'bms_pack_voltage_volts{bus="bus0",pack="1"}' in resp.text
    assert 'bmsgw_poll_duration_seconds_count{bus="bus0"} 1.0' in resp.text


DOC_ROW = re.compile(r"\|\s*`((?:bms|bmsgw)_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|[^|]*\|\s*$")


def documented_families(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The families table of docs/metrics.md: name -> (type, labels in order)."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        if m := DOC_ROW.match(line):
            assert m.group(1) not in rows, f"{m.group(1)} documented twice"
            rows[m.group(1)] = (m.group(2), tuple(re.findall(r"`([a-z_]+)`", m.group(3))))
    return rows


def test_docs_families_table_matches_families() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = documented_families(text)
    exported = {f.name: (f.kind, f.labels) for f in FAMILIES}
    assert documented == exported
    # any other metric name the page mentions (examples, alert rules) is one the gateway exports
    series = set(exported) | {
        f.name + suffix for f in FAMILIES if f.kind == "histogram" for suffix in ("_bucket", "_sum", "_count")
    }
    mentioned = set(re.findall(r"\b((?:bms|bmsgw)_[a-z0-9_]*[a-z0-9])\b(?!_\*)", text))
    assert mentioned - series == set()


def test_docs_table_parser_sees_a_drift() -> None:
    row = "| `bms_pack_voltage_volts` | gauge | `bus`, `pack` | Pack voltage |"
    assert documented_families(row) == {"bms_pack_voltage_volts": ("gauge", ("bus", "pack"))}
    drifted = documented_families(row.replace("`pack`", "`pack`, `cell`"))
    assert drifted["bms_pack_voltage_volts"] != ("gauge", FAMILY_BY_NAME["bms_pack_voltage_volts"].labels)


def test_no_limits_before_the_policy_has_data() -> None:
    store = ModelStore([("bus0", 1)])
    names, _ = scrape(GatewayCollector(full_sources(store, Decision(has_data=False))))
    assert not any(n.startswith("bms_limit_") for n in names)
    names, _ = scrape(GatewayCollector(full_sources(store, Decision())))
    assert "bms_limit_charge_current_amperes" in names
