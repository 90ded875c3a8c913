"""The fault matrix (issue 20, "keep the campaign"): the whole gateway on a faulty simulator against
a fault-free twin with the same seed, side by side in one process, every published channel compared.

Both run the built-in simulator (3 Tianpower packs, profile idle: a pack at rest keeps its values
exactly, so the twin's values are the truth) with HTTP, Modbus/TCP, MQTT (one broker, two base
topics) and inverter CAN (two virtual channels). The faulty side's bus has per-byte corruption
(0.1 %), dropped (2 %), truncated (2 %) and garbage (2 %) answers and the transceiver echo on every
frame (`FAULTS`). For the sampled window:

- every value the twin keeps constant (what is not a time, an age or a counter) is the same on the
  faulty gateway in every sample: HTTP `/api/packs`, every register of the native Modbus unit
  (bank block and one block per pack), every MQTT pack state document, every CAN frame;
- the simulator's fault counters and the faulty gateway's own bus counters prove that faults
  happened (and were refused, not published).

Real-device frame layouts (PACE master flag byte, Pylontech INFOFLAG) are part of the matrix once
the wire-truth work lands on main; this test runs the Tianpower family.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import httpx
import pytest
from pyModbusTCP.client import ModbusClient

from gateway.app.config import Config
from gateway.app.context import AppContext
from gateway.app.wiring import run_app
from tests.support import REPO
from tests.support.mqtt_broker import Broker, Recorder, recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
log = logging.getLogger(__name__)

FAULTS = "corrupt=0.001,drop=0.02,truncate=0.02,garbage=0.02,echo"
SAMPLES = 30
EVERY_S = 1.0
PACKS = 3
# Native unit (docs/modbus-registers.md): the bank block 0-44 and each pack's block 1000 + 128 n, 124 long
MODBUS_BLOCKS = [(0, 45)] + [(1000 + 128 * n, 124) for n in range(PACKS)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _config(tmp: Path, name: str, faults: str, channel: str, mqtt_port: int) -> Config:
    return Config.model_validate(
        {
            "state_dir": str(tmp / name),
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"listen": "127.0.0.1:0"},
            "simulator": {
                "enabled": True,
                "packs": PACKS,
                "seed": 11,
                "profile": "idle",
                "pacing": False,
                "faults": faults,
            },
            "can": {"enabled": True, "interface": "virtual", "channel": channel, "protocol": "pylon"},
            "mqtt": {
                "enabled": True,
                "url": f"mqtt://127.0.0.1:{mqtt_port}",
                "base_topic": f"fm-{name}",
                "client_id": f"fm-{name}",
                "discovery": False,
                "min_interval_s": 0.5,
            },
            # faults cost retries, never staleness within the window
            "policy": {"stale_after_s": 60.0, "evaluate_interval_s": 0.5},
            "recording": {"enabled": False},
        }
    )


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(doc, list):
        out = {}
        for i, v in enumerate(doc):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): doc}


class Side:
    """One gateway of the pair and what it published in each sample."""

    def __init__(self, name: str, faults: str, tmp: Path, mqtt_port: int) -> None:
        self.name = name
        self.channel = f"fm-{name}-{uuid.uuid4().hex[:6]}"
        self.config = _config(tmp, name, faults, self.channel, mqtt_port)
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.ctx: AppContext | None = None
        self.peer = can.Bus(interface="virtual", channel=self.channel)
        self.samples: list[dict[str, Any]] = []  # channel-qualified key -> value, one dict per sample
        self.can_frames: dict[int, set[bytes]] = {}

    def on_ready(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.ready.set()

    @property
    def url(self) -> str:
        assert self.ctx is not None
        return self.ctx.endpoints["http"]

    @property
    def modbus_port(self) -> int:
        assert self.ctx is not None
        return int(self.ctx.endpoints["modbus"].rpartition(":")[2])

    def drain_can(self) -> None:
        while (msg := self.peer.recv(0)) is not None:
            self.can_frames.setdefault(msg.arbitration_id, set()).add(bytes(msg.data))

    def read_modbus(self) -> dict[str, Any]:
        client = ModbusClient(host="127.0.0.1", port=self.modbus_port, unit_id=2, timeout=5.0, auto_open=True)
        out: dict[str, Any] = {}
        try:
            for start, count in MODBUS_BLOCKS:
                regs = client.read_holding_registers(start, count)
                assert regs is not None, (self.name, start, client.last_error_as_txt)
                out.update({f"modbus.{start + i}": v for i, v in enumerate(regs)})
        finally:
            client.close()
        return out

    async def sample(self, http: httpx.AsyncClient, mqtt: Recorder) -> None:
        values: dict[str, Any] = {}
        packs = (await http.get(f"{self.url}/api/packs")).json()
        for p in packs:
            values.update(_flatten(p, f"http.{p['bus']}/{p['address']}."))
        values.update(await asyncio.to_thread(self.read_modbus))
        base = self.config.mqtt.base_topic
        for topic in {t for t, _, _ in mqtt.messages if t.startswith(base + "/") and t.endswith("/state")}:
            doc = json.loads(mqtt.last(topic) or b"null")
            values.update(_flatten(doc, f"mqtt.{topic.removeprefix(base)}."))
        self.samples.append(values)
        self.drain_can()


NOT_IMPLEMENTED = {0xFFFF, 0x8000}  # Modbus "no value" registers (docs/modbus.md)


# Not measurements: when something was read, the clock drift at that moment, and the link's own
# counters (the faulty side counts its faults there, which is the point)
META = (".link.", "read_at", ".clock.", "measured_at", "last_success", "clock_drift")


MODBUS_META = ("updated_at", "update_counter", "measured_at", "link_success_pct")


def _modbus_names() -> dict[int, str]:
    """Native register address -> field name, from docs/modbus-registers.csv (the published map)."""
    names: dict[int, str] = {}
    with (REPO / "docs" / "modbus-registers.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["map"] != "native":
                continue
            base, _, _ = row["address"].partition(" ")
            for k in range(int(row["registers"])):
                for n in range(PACKS) if row["block"] == "pack n" else (0,):
                    names[int(base) + 128 * n + k] = row["name"]
    return names


MODBUS_NAMES = _modbus_names()


def _published(key: str, value: Any) -> bool:
    """A measurement the gateway published (absent, null and Modbus "no value" are not values;
    times, ages and link counters are not measurements)."""
    if value is None or any(m in key for m in META):
        return False
    if key.startswith("modbus."):
        return value not in NOT_IMPLEMENTED and MODBUS_NAMES.get(int(key[7:]), "") not in MODBUS_META
    return True


def _constant_in(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys whose value never changed across `samples` (times, ages and counters do)."""
    first = samples[0]
    return {k: v for k, v in first.items() if all(s.get(k) == v for s in samples[1:])}


async def test_a_faulty_bus_publishes_the_same_values_as_its_fault_free_twin(
    tmp_path: Path, broker: Broker
) -> None:
    faulty = Side("faulty", FAULTS, tmp_path, broker.port)
    twin = Side("twin", "", tmp_path, broker.port)
    apps = [
        asyncio.ensure_future(run_app(s.config, install_signals=False, stop=s.stop, on_all_ready=s.on_ready))
        for s in (faulty, twin)
    ]
    try:
        async with asyncio.timeout(90):
            await asyncio.gather(faulty.ready.wait(), twin.ready.wait())
        async with (
            recording(broker.port, ("fm-faulty/#", "fm-twin/#"), Recorder) as mqtt,
            httpx.AsyncClient(timeout=10) as http,
        ):

            def settled() -> bool:
                # every pack read on both sides (the twin has its parameter tables too)
                return (
                    faulty.ctx is not None
                    and twin.ctx is not None
                    and all(p.online for p in faulty.ctx.store.view.packs.values())
                    and all(p.online and p.parameters is not None for p in twin.ctx.store.view.packs.values())
                )

            async with asyncio.timeout(90):
                while not settled():  # every pack read once, parameters included, on both sides  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                await mqtt.wait(
                    lambda: all(mqtt.last(f"fm-{n}/sim/{PACKS}/state") for n in ("faulty", "twin"))
                )
            await asyncio.sleep(2.0)
            for s in (faulty, twin):  # frames from before the first complete reads are not compared
                s.drain_can()
                s.can_frames.clear()
            for _ in range(SAMPLES):
                await faulty.sample(http, mqtt)
                await twin.sample(http, mqtt)
                await asyncio.sleep(EVERY_S)
        assert faulty.ctx is not None and twin.ctx is not None
        sim = faulty.ctx.simulator
        assert sim is not None
        faults = dict(sim.fault_counters)
        bus = next(iter(faulty.ctx.buses.values())).counters
    finally:
        for s in (faulty, twin):
            s.stop.set()
        for app in apps:
            with contextlib.suppress(asyncio.CancelledError):
                await app
        for s in (faulty, twin):
            s.peer.shutdown()

    truth = {k: v for k, v in _constant_in(twin.samples).items() if _published(k, v)}
    channels = {k.partition(".")[0] for k in truth}
    assert channels == {"http", "modbus", "mqtt"}, channels
    assert len(truth) > 700  # the comparison covers the packs' whole published state
    differences, compared, unpublished = [], 0, 0
    for i, sample in enumerate(faulty.samples):
        for k, v in truth.items():
            got = sample.get(k)
            if not _published(k, got):
                unpublished += 1  # not (yet) read on the faulty side: absent, never a guess
                continue
            compared += 1
            if got != v:
                differences.append((i, k, got, v))
    assert not differences, f"{len(differences)} of {compared} values differ, e.g. {differences[:10]}"
    # values not read yet on the faulty side (a parameter table whose every attempt met a fault) are
    # absent, never guessed; most of the state is compared
    assert compared > 0.8 * len(truth) * len(faulty.samples), (compared, unpublished)
    log.info(
        "fault matrix: %d values compared, 0 differ, %d not published yet; faults %s; bus counters %s",
        compared,
        unpublished,
        faults,
        bus,
    )
    # CAN: every frame the faulty gateway sent is one the twin sent too (same ids, same payloads)
    assert twin.can_frames and set(faulty.can_frames) == set(twin.can_frames)
    for arb_id, payloads in faulty.can_frames.items():
        if len(twin.can_frames[arb_id]) == 1:  # a frame whose payload the twin keeps constant
            assert payloads == twin.can_frames[arb_id], hex(arb_id)
    # the faults happened, and the gateway saw them (and refused them)
    assert faults["corrupted_responses"] > 0 and faults["dropped"] > 0 and faults["truncated"] > 0, faults
    assert bus.checksum_errors + bus.timeouts > 0, bus
