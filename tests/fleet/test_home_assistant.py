"""What the gateway announces to Home Assistant, judged by Home Assistant's own code.

The real gateway process publishes to a real Mosquitto; everything under `homeassistant/#` and
`bms-gateway/#` is captured across two runs (a restart). Then:
- each pack's discovery is published exactly once per run, complete (every cell and sensor), and
  the restart publishes the same payload from the remembered layout;
- no state document without a layout (no `telemetry`) is ever published;
- Home Assistant's MQTT integration (`tests/fleet/ha_check.py`, run with the Python of the Home
  Assistant virtual environment that `make ha-venv` builds) accepts every device payload and every
  component with its platform's schema, each component carries its own qos (HA does not copy a
  device-level qos), and every value template renders against every state document we published,
  and against a state document without a layout, without one template warning.

Without the Home Assistant environment (it needs a Python ≥ 3.13) the HA part is skipped with the
command that builds it; the publishing checks run regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.core.model import Availability, PackIdentity, PackSnapshot
from gateway.north.documents import pack_document
from tests.fleet.stack import free_port, gateway, gateway_config, need, running, simulator, wait_port

pytestmark = [pytest.mark.fleet, pytest.mark.e2e, pytest.mark.timeout(180)]

HA_VERSION = "2025.4.4"  # tests/fleet/ha-venv.sh installs it (`make ha-venv`)
HA_VENV = Path(
    os.environ.get(
        "BMS_GATEWAY_HA_VENV",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bms-gateway" / f"ha-{HA_VERSION}",
    )
)
HA_PYTHON = HA_VENV / "bin" / "python"


@contextlib.asynccontextmanager
async def capture(port: int) -> AsyncIterator[list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("homeassistant/#", qos=1)
        await client.subscribe("bms-gateway/#", qos=1)

        async def pump() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                if not m.retain:  # retained copies of an earlier run are not publications of this one
                    seen.append((str(m.topic), payload))

        task = asyncio.create_task(pump())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(cond: object, limit_s: float, what: str) -> None:
    for _ in range(int(limit_s / 0.1)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {limit_s} s: {what}")


def discoveries(seen: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for topic, payload in seen:
        if topic.startswith("homeassistant/device/") and "_b1_" in topic:
            out.setdefault(topic, []).append(payload)
    return out


async def test_home_assistant_accepts_everything_and_renders_without_warnings(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "mqtt.conf").write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8"
    )
    runs: list[list[tuple[str, bytes]]] = []
    with (
        running(
            [need("mosquitto", "mosquitto"), "-c", str(tmp_path / "mqtt.conf")], log=tmp_path / "mqtt.log"
        ),
        simulator(tmp_path) as sim_port,
    ):
        wait_port(port)
        mqtt = f'[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:{port}"\nmin_interval_s = 0.5\n'
        for _ in range(2):  # a first start, then a restart with the remembered layout (same state_dir)
            # a fresh HTTP port for each start: a port picked once can be some other process's
            # outgoing connection by the restart (it happened in CI: "address already in use")
            cfg = gateway_config(tmp_path, sim_port, mqtt)
            async with capture(port) as seen:
                with gateway(cfg, tmp_path):
                    await until(lambda: len(discoveries(seen)) == 2, 30, "both packs announced")
                    await until(
                        lambda: sum(t.endswith("/state") and "/b1/" in t for t, _ in seen) >= 6,
                        30,
                        "state documents of both packs",
                    )
                    await asyncio.sleep(2.0)  # identity, parameters and clock reads happen meanwhile
            runs.append(list(seen))

    for n, seen in enumerate(runs, start=1):
        found = discoveries(seen)
        assert {t: len(p) for t, p in found.items()} == dict.fromkeys(found, 1), (
            f"run {n}: published more than once"
        )
        for topic, (payload,) in found.items():
            comps = json.loads(payload)["components"]
            # complete: one entity per cell and per sensor of the pack's state document
            state = json.loads(next(p for t, p in reversed(seen) if t == json.loads(payload)["state_topic"]))
            cells = [k for k in comps if re.search(r"_cell_\d+$", k)]
            temps = [k for k in comps if re.search(r"_temp_[a-z]+\d+$", k)]
            tel = state["telemetry"]
            assert len(cells) == len(tel["cell_voltages_v"]) > 0, f"run {n} {topic}: cells missing"
            assert len(temps) == len(tel["temperatures"]) > 0, f"run {n} {topic}: sensors missing"
            assert all(c["qos"] == 1 for c in comps.values())
        for topic, payload in seen:
            if topic.startswith("bms-gateway/b1/") and topic.endswith("/state"):
                tel = json.loads(payload)["telemetry"]
                assert tel and tel["cell_voltages_v"], f"run {n}: a state without a layout on {topic}"
    assert discoveries(runs[0]) == discoveries(runs[1]), "the restart announced a different layout"

    if not HA_PYTHON.exists():
        pytest.skip(
            f"no Home Assistant environment at {HA_PYTHON} (needs Python >= 3.13): run `make ha-venv`"
        )
    states: dict[str, list[str]] = {}
    for topic, payload in runs[0] + runs[1]:
        if topic.startswith("bms-gateway/") and topic.endswith("/state"):
            states.setdefault(topic, []).append(payload.decode())
    # a pack that never answered, rendered against the layout HA remembers: must not warn either
    empty = pack_document(PackSnapshot("b1", 1, Availability.UNKNOWN, None, PackIdentity()))
    data = {
        "discovery": {t: p[0].decode() for t, p in discoveries(runs[1]).items()}
        | {t: p.decode() for t, p in runs[1] if t.startswith("homeassistant/device/") and "_b1_" not in t},
        "states": states,
        "extra_states": {
            "bms-gateway/b1/1/state": [
                json.dumps(empty),  # never answered: `telemetry` is null
                json.dumps({"telemetry": {"cell_voltages_v": [3.3], "temperatures": []}}),  # layout shrank
                json.dumps({}),
            ]
        },
    }
    (tmp_path / "ha-input.json").write_text(json.dumps(data), encoding="utf-8")
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(HA_PYTHON), str(Path(__file__).with_name("ha_check.py")), str(tmp_path / "ha-input.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], "\n".join(result["errors"][:30])
    assert result["devices"] == 3  # two packs and the gateway
    assert result["qos"] == [1] and result["qos_per_component"]
    assert result["renders"] > result["entities"]
    check_values(result["values"], states)
    print(
        f"\nHome Assistant {result['version']}: {result['devices']} devices, {result['entities']} entities "
        f"({result['platforms']}) accepted, {result['renders']} template renders without a warning"
    )


def check_values(values: dict[str, str], states: dict[str, list[str]]) -> None:
    """The states HA rendered on the last published documents are the documents' values (a template
    that renders without a warning may still read the wrong field)."""

    def value(suffix: str) -> str:
        (found,) = [v for k, v in values.items() if k.endswith(suffix)]
        return str(found)

    doc = json.loads(states["bms-gateway/b1/1/state"][-1])
    tel = doc["telemetry"]
    assert float(value("_b1_1_soc")) == tel["soc_pct"]
    assert float(value("_b1_1_cell_1")) == tel["cell_voltages_v"][0]
    assert float(value("_b1_1_cell_delta")) == round(tel["cell_diff_v"] * 1000.0, 1)
    last = tel["temperatures"][-1]
    assert float(value(f"_b1_1_temp_{last['label']}")) == last["value_c"]
    assert value("_b1_1_charging") == ("ON" if tel["current_a"] > 0 else "OFF")
    flags = sorted({*tel["protections"], *tel["alarms"], *tel["faults"]})
    assert value("_b1_1_active_flags") == (", ".join(flags) or "none")
    assert float(value("_b1_1_link_success")) == round(doc["link"]["success_ratio"] * 100.0, 2)
    assert value("_b1_1_serial") == doc["identity"]["serial"]
    bank_doc = json.loads(states["bms-gateway/bank/state"][-1])
    bank, limits = bank_doc["bank"], bank_doc["limits"]
    assert float(value("_bank_soc")) == bank["soc_pct"]
    assert float(value("_bank_cell_delta")) == round(bank["cell_diff_v"] * 1000.0, 1)
    assert float(value("_bank_temp_max")) == bank["temp_max"]["value"]
    limiting = ", ".join(f"{k}: {v}" for k, v in sorted(limits["limiting"].items())) or "none"
    assert value("_limiting_factor") == limiting[:250]
    assert float(value("_charge_voltage_limit")) == limits["charge_voltage_v"]
