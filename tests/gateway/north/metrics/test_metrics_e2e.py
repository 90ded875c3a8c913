"""End to end: the real gateway (run_app) polling the simulator over TCP, scraped on /metrics and
published to a real MQTT broker. Values equal the simulator's truth; a pack that stops answering
turns stale/offline in both outputs and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app.config import parse_config
from gateway.app.context import AppContext
from gateway.app.wiring import run_app
from gateway.north.metrics.collector import FAMILIES
from simulator import Simulator, SimulatorOptions
from tests.support.app_running import app_running
from tests.support.mqtt_broker import Broker, free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def pack_value(samples: Samples, name: str, address: int, **labels: str) -> float | None:
    key = (name, frozenset({"bus": "b1", "pack": str(address), **labels}.items()))
    return samples.get(key)


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, sim_port: int, broker_port: int) -> AsyncIterator[AppContext]:
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"enabled": False},
            "bus": [
                {
                    "name": "b1",
                    "url": f"socket://127.0.0.1:{sim_port}",
                    "protocol": "tianpower",
                    "addresses": [1, 2],
                    "request_gap_s": 0.0,
                    "response_timeout_s": 0.5,
                    "retries": 0,
                    "realtime_interval_s": 0.2,
                    # headroom: while pack 2 is silent each cycle costs a timeout, and pack 1 must
                    # not turn stale on a loaded machine (0.8 s left about one slow answer of slack)
                    "stale_after_s": 2.0,
                    "offline_after_s": 4.0,
                }
            ],
            "mqtt": {
                "enabled": True,
                "url": f"mqtt://127.0.0.1:{broker_port}",
                "client_id": "e2e",
                "base_topic": "e2e",
                "min_interval_s": 0.0,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.3,
            },
        },
        env={},
    )
    async with app_running(config) as ctx:
        yield ctx


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll (scrape) until the predicate holds; the polling is the point, there is no event to wait on."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if await predicate():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


async def test_metrics_and_mqtt_follow_the_simulator(tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(
        SimulatorOptions(
            protocol="tianpower", packs=2, seed=3, profile="idle", pacing=False, turnaround_s=0.0
        )
    )
    state_docs: dict[str, dict[str, object]] = {}
    availability: dict[str, str] = {}
    async with (
        sim.serve_tcp("127.0.0.1", 0) as server,
        aiomqtt.Client("127.0.0.1", broker.port) as sub,
    ):
        await sub.subscribe("e2e/#", qos=1)
        await sub.subscribe("homeassistant/device/#", qos=1)
        discovery: dict[str, dict[str, object]] = {}

        async def pump() -> None:
            async for m in sub.messages:
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                topic = str(m.topic)
                if topic.endswith("/state") and raw:
                    state_docs[topic] = json.loads(raw)
                elif topic.endswith("/availability"):
                    availability[topic] = raw.decode()
                elif topic.startswith("homeassistant/") and raw:
                    discovery[topic] = json.loads(raw)

        pump_task = asyncio.ensure_future(pump())
        try:
            async with gateway(tmp_path, server.port, broker.port) as ctx:
                url = ctx.endpoints["http"]
                async with httpx.AsyncClient(base_url=url) as http:

                    async def both_up() -> bool:
                        s = await scrape(http)
                        return all(pack_value(s, "bmsgw_pack_up", a) == 1.0 for a in (1, 2))

                    await until(both_up)
                    samples = await scrape(http)
                    names = {n for n, _ in samples}
                    # every pack family for every pack, except flags (only once seen), the clock (read
                    # every 10 min) and what the Tianpower realtime frame does not carry
                    for fam in FAMILIES:
                        if fam.scope == "pack" and fam.name not in (
                            "bms_pack_nominal_capacity_ampere_hours",
                            "bms_pack_protection",
                            "bms_pack_alarm",
                            "bms_pack_fault",
                            "bms_pack_status",
                            "bms_pack_flag_meaning",
                            "bms_pack_clock_drift_seconds",
                        ):
                            for a in (1, 2):
                                assert any(
                                    n == fam.name and ("pack", str(a)) in labels for n, labels in samples
                                ), (fam.name, a)
                    assert "bmsgw_poll_duration_seconds_count" in names
                    assert "bmsgw_bus_frames_sent_total" in names and "bmsgw_mqtt_connected" in names
                    for a in (1, 2):
                        truth = sim.truth(a)
                        assert pack_value(samples, "bms_pack_voltage_volts", a) == pytest.approx(
                            truth.voltage_v
                        )
                        assert pack_value(samples, "bms_pack_current_amperes", a) == pytest.approx(
                            truth.current_a
                        )
                        assert pack_value(samples, "bms_pack_state_of_charge_ratio", a) == pytest.approx(
                            truth.soc_pct / 100, abs=0.01
                        )
                        assert pack_value(samples, "bms_pack_cycles_total", a) == truth.cycles
                        assert pack_value(samples, "bms_pack_full_capacity_ampere_hours", a) == pytest.approx(
                            truth.full_capacity_ah
                        )
                        for i, v in enumerate(truth.cell_voltages_v, start=1):
                            assert pack_value(samples, "bms_pack_cell_voltage_volts", a, cell=str(i)) == (
                                pytest.approx(v)
                            )
                        assert pack_value(
                            samples, "bms_pack_temperature_celsius", a, sensor="mos1", role="mos"
                        ) == pytest.approx(truth.mos_temperature_c)
                    assert samples[("bmsgw_mqtt_connected", frozenset())] == 1.0

                    # the charge policy's decision, with its limiting factors
                    async def limits() -> bool:
                        s = await scrape(http)
                        factors = [v for (n, _), v in s.items() if n == "bms_limit_limiting_factor"]
                        return ("bms_limit_charge_current_amperes", frozenset()) in s and 1.0 in factors

                    await until(limits)

                    async def limits_match_the_decision() -> bool:
                        s = await scrape(http)
                        decision = ctx.decisions.latest
                        active = {
                            (dict(labels)["limit"], dict(labels)["factor"])
                            for (n, labels), v in s.items()
                            if n == "bms_limit_limiting_factor" and v == 1.0
                        }
                        return bool(
                            active == set(decision.limiting.items())
                            and s[("bms_limit_charge_current_amperes", frozenset())]
                            == decision.charge_current_a
                            and s[("bms_limit_charge_voltage_volts", frozenset())]
                            == decision.charge_voltage_v
                        )

                    await until(limits_match_the_decision)

                    # MQTT: states arrive, equal the truth, and change with the simulator
                    async def mqtt_states() -> bool:
                        docs = [state_docs.get(f"e2e/b1/{a}/state", {}) for a in (1, 2)]
                        return all((d.get("telemetry") or {}).get("cell_voltages_v") for d in docs)

                    await until(mqtt_states)
                    doc = state_docs["e2e/b1/1/state"]
                    assert doc["telemetry"]["cell_voltages_v"] == pytest.approx(
                        list(sim.truth(1).cell_voltages_v)
                    )
                    assert "homeassistant/device/e2e_b1_1/config" in discovery
                    sim.set_current(1, -20.0)

                    async def current_changed() -> bool:
                        d = state_docs.get("e2e/b1/1/state", {})
                        return (d.get("telemetry") or {}).get("current_a") == pytest.approx(-20.0, abs=0.2)

                    await until(current_changed)

                    # a pack that stops answering: stale then offline, visible in both; then it recovers
                    sim.set_online(2, False)

                    async def pack2_offline() -> bool:
                        s = await scrape(http)
                        off = pack_value(s, "bmsgw_pack_availability", 2, state="offline") == 1.0
                        return off and availability.get("e2e/b1/2/availability") == "offline"

                    await until(pack2_offline)
                    s = await scrape(http)
                    assert pack_value(s, "bms_pack_voltage_volts", 2) is None  # no values for offline packs
                    assert pack_value(s, "bmsgw_pack_up", 1) == 1.0
                    assert s[("bms_bank_packs", frozenset({("state", "offline")}))] == 1.0
                    sim.set_online(2, True)

                    async def pack2_back() -> bool:
                        s = await scrape(http)
                        return (
                            pack_value(s, "bmsgw_pack_up", 2) == 1.0
                            and availability.get("e2e/b1/2/availability") == "online"
                        )

                    await until(pack2_back)
        finally:
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump_task


async def test_every_family_with_every_adapter_enabled(tmp_path: Path, broker: Broker) -> None:
    """The providers read the real Modbus, CAN, RS485, MQTT, bus and policy services through the context."""
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "simulator": {"enabled": True, "packs": 2, "profile": "idle"},
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"enabled": True, "listen": "127.0.0.1:0"},
            "can": {"enabled": True, "interface": "virtual", "channel": f"metrics-e2e-{broker.port}"},
            "inverter_rs485": {"enabled": True, "url": f"socket://127.0.0.1:{free_port()}"},  # no inverter
            "mqtt": {"enabled": True, "url": f"mqtt://127.0.0.1:{broker.port}", "min_interval_s": 0.0},
        },
        env={},
    )
    stop = asyncio.Event()
    ready: asyncio.Future[AppContext] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        run_app(config, None, install_signals=False, stop=stop, on_all_ready=ready.set_result)
    )
    try:
        ctx = await asyncio.wait_for(asyncio.shield(ready), 30)
        async with httpx.AsyncClient(base_url=ctx.endpoints["http"]) as http:
            wanted = {f.name + ("_count" if f.kind == "histogram" else "") for f in FAMILIES}
            # flags appear once seen, the clock after its first read, nominal capacity where reported
            optional = {
                "bms_pack_protection",
                "bms_pack_alarm",
                "bms_pack_fault",
                "bms_pack_status",
                "bms_bank_protection",
                "bms_bank_alarm",
                "bms_bank_fault",
                "bms_pack_flag_meaning",
                "bms_bank_flag_meaning",
                "bms_pack_clock_drift_seconds",
                "bms_pack_nominal_capacity_ampere_hours",
                "bmsgw_modbus_requests_total",  # by function: only after a request
                "bmsgw_modbus_exceptions_total",
            }
            missing: set[str] = set()

            async def all_there() -> bool:
                nonlocal missing
                names = {n for n, _ in await scrape(http)}
                missing = wanted - optional - names
                return not missing

            try:
                await until(all_there)
            except TimeoutError:
                pytest.fail(f"families missing: {sorted(missing)}")
            s = await scrape(http)
            assert s[("bmsgw_service_up", frozenset({("service", "mqtt")}))] == 1.0
            assert s[("bmsgw_mqtt_connected", frozenset())] == 1.0
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
