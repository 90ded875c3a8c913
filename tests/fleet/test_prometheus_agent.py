"""The metrics fleet path with real parts: gateway → Prometheus agent (WAL) → remote_write → central
Prometheus, and every query of the Grafana dashboard against the central store.

The agent runs `deploy/prometheus/agent.yml.template`, the centre `deploy/prometheus/central.yml`
with `--web.enable-remote-write-receiver` and `central-web.yml.template` (TLS, client certificates
of a throw-away fleet CA), rendered with their documented placeholders only (a 1 s scrape interval).

Asserted: `bmsgw_*` and `bms_*` series arrive centrally with the site's label; the centre stopped for
60 s, then started again, has no gap in a gauge's raw samples (a range selector, not a step query that
would hide gaps behind the look-back window): the agent's WAL replayed them; the hardware fault the
simulator injects on pack 2 arrives as `bms_pack_fault … 1`; every query of
`deploy/grafana/dashboards/bms-gateway.json` runs centrally and returns data, the flag filters
(`… == 1`) of protections, alarms and faults included.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymodbus.client import ModbusTcpClient

from tests.fleet.stack import (
    DEPLOY,
    free_port,
    gateway,
    gateway_config,
    make_pki,
    need,
    render,
    running,
    simulator,
    stop,
    wait_port,
)

pytestmark = [pytest.mark.fleet, pytest.mark.e2e, pytest.mark.timeout(300)]

SITE = "site-test"
OUTAGE_S = 60.0
SCRAPE_S = 1.0
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "bms-gateway.json"
HW_FAULT = "NTC_Disconnected"  # injected on pack 2 so that the fault panels have data


class Central:
    """The central Prometheus process (restartable on the same port and storage)."""

    def __init__(self, tmp: Path, pki_dir: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        web = tmp / "central-web.yml"
        web.write_text(render(DEPLOY / "prometheus" / "central-web.yml.template", {"CERT_DIR": str(pki_dir)}))
        self.args = [
            need("prometheus", "prometheus"),
            f"--config.file={DEPLOY / 'prometheus' / 'central.yml'}",
            "--web.enable-remote-write-receiver",
            f"--web.config.file={web}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={tmp / 'central-data'}",
        ]
        tls = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        tls.load_cert_chain(str(pki_dir / "fleet-reader.crt"), str(pki_dir / "fleet-reader.key"))
        self.client = httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=tls, timeout=10.0)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        answer = self.client.get("/api/v1/query", params=params).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait(self, expr: str, limit_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + limit_s
        while True:
            try:
                found = self.query(expr)
            except (httpx.HTTPError, ValueError):
                found = []
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} returned nothing centrally within {limit_s} s")
            time.sleep(0.5)


def documented_lints() -> set[str]:
    """The names docs/metrics.md lists under `promtool check metrics` (each with its reason)."""
    text = (DEPLOY.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text.split("## `promtool check metrics`", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target, variables replaced by the values Grafana would use."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append((p.get("title", "?"), t["expr"]))

    walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
    return found


def expand(expr: str) -> str:
    # the dashboard's variables with "All" selected (allValue ".*"), and Grafana's interval macros
    expr = re.sub(r"\$(site|bus|pack)\b", ".*", expr)
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")


@contextlib.contextmanager
def rs485_peer() -> Iterator[int]:
    """A TCP peer for the inverter RS485 port (`socket://`), as an RS485-to-TCP converter would be."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop_flag = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop_flag.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conns.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop_flag.set()
        thread.join(5)
        for c in conns:
            c.close()
        server.close()


def test_agent_remote_writes_replays_its_wal_and_the_dashboard_queries_return_data(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", [SITE, "fleet-reader"])
    central = Central(tmp_path, pki.dir)
    agent_port = free_port()
    modbus_port, mqtt_port = free_port(), free_port()
    (tmp_path / "mqtt.conf").write_text(
        f"user {getpass.getuser()}\nlistener {mqtt_port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8"
    )
    # every output on, so that every panel has series: the simulator discharges fast (time scale 600)
    # into its low-SOC alarms and, with pack 1's cell under-voltage protection set at 3.2 V in its
    # state file, a protection; pack 2 reports a hardware fault (a disconnected NTC: it blocks
    # nothing); a local broker for MQTT, a TCP peer for the RS485 port
    state = tmp_path / "sim-state.json"
    state.write_text(
        json.dumps(
            {
                "format": 1,
                "protocol": "tianpower",
                "packs": {"1": {"parameters": {"CELL_UV_Start": 3.2, "CELL_UV_Stop": 3.25}}},
            }
        ),
        encoding="utf-8",
    )
    with (
        simulator(
            tmp_path,
            "--profile",
            "discharge",
            "--time-scale",
            "600",
            "--state",
            str(state),
            "--faults",
            f"hw=2:{HW_FAULT}",
        ) as sim_port,
        running(
            [need("mosquitto", "mosquitto"), "-c", str(tmp_path / "mqtt.conf")], log=tmp_path / "mqtt.log"
        ),
        rs485_peer() as rs485_port,
    ):
        cfg = gateway_config(
            tmp_path,
            sim_port,
            f'[modbus]\nenabled = true\nlisten = "127.0.0.1:{modbus_port}"\n'
            '[can]\nenabled = true\ninterface = "virtual"\nchannel = "fleet-test"\nprotocol = "pylon"\n'
            "keepalive_expected = false\n"
            f'[inverter_rs485]\nenabled = true\nurl = "socket://127.0.0.1:{rs485_port}"\n'
            f'[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n',
        )
        # the fixture's [modbus] enabled = false is replaced by the section above
        text = cfg.path.read_text(encoding="utf-8").replace("[modbus]\nenabled = false\n", "", 1)
        cfg.path.write_text(text, encoding="utf-8")
        agent_conf = tmp_path / "agent.yml"
        agent_conf.write_text(
            render(
                DEPLOY / "prometheus" / "agent.yml.template",
                {
                    "SITE_ID": SITE,
                    "SCRAPE_INTERVAL": f"{SCRAPE_S:.0f}s",
                    "GATEWAY": cfg.url.removeprefix("http://"),
                    "CENTRAL_URL": f"https://127.0.0.1:{central.port}/api/v1/write",
                    "CERT_DIR": str(pki.dir),
                },
            ),
            encoding="utf-8",
        )
        agent_args = [
            need("prometheus", "prometheus"),
            "--enable-feature=agent",
            f"--config.file={agent_conf}",
            f"--storage.agent.path={tmp_path / 'agent-wal'}",
            f"--web.listen-address=127.0.0.1:{agent_port}",
        ]
        with (
            gateway(cfg, tmp_path),
            running(central.args, log=tmp_path / "central.log") as centre_proc,
            running(agent_args, log=tmp_path / "agent.log"),
        ):
            wait_port(central.port, proc=centre_proc)
            # Modbus traffic, one exception among it, so the Modbus panels have series
            with ModbusTcpClient("127.0.0.1", port=modbus_port) as mb:
                for _ in range(5):
                    assert not mb.read_holding_registers(40000, count=2, device_id=1).isError()
                assert mb.read_holding_registers(1, count=2, device_id=1).isError()

            # 0. Prometheus's own linter on the exposition: only the findings docs/metrics.md justifies
            exposition = httpx.get(cfg.url + "/metrics", timeout=5.0).text
            lint = subprocess.run(
                [need("promtool", "prometheus"), "check", "metrics"],
                input=exposition,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            findings = {line.split()[0] for line in (lint.stdout + lint.stderr).splitlines() if line.strip()}
            present = {
                line.split("{")[0].split()[0] for line in exposition.splitlines() if line[:1].isalpha()
            }
            assert findings == documented_lints() & present, lint.stdout + lint.stderr

            # 1. series arrive centrally, labelled with the site
            up = central.wait(f'bmsgw_pack_up{{site="{SITE}"}}', 60)
            assert {r["metric"]["pack"] for r in up} >= {"1", "2"} or len(up) >= 2, up
            names = central.query(f'count by (__name__) ({{__name__=~"bmsgw_.+|bms_.+",site="{SITE}"}})')
            assert len(names) >= 30, [r["metric"] for r in names]
            fault = central.wait(f'bms_pack_fault{{site="{SITE}",name="{HW_FAULT}"}} == 1', 30)
            assert [r["metric"]["pack"] for r in fault] == ["2"], fault

            # 2. the centre is away for 60 s; the agent keeps scraping into its WAL
            time.sleep(5 * SCRAPE_S)
            stopped_at = time.time()
            stop(centre_proc)
            time.sleep(OUTAGE_S)
            restarted_at = time.time()
            with running(central.args, log=tmp_path / "central.log") as centre_again:
                wait_port(central.port, proc=centre_again)
                # the replay is complete once the newest samples arrived after the restart
                series = f'bmsgw_pack_up{{site="{SITE}",pack="1"}}'
                deadline = time.monotonic() + 90
                while True:
                    try:
                        with_data = central.query(f"{series}[{int(OUTAGE_S + 30)}s]")
                    except (httpx.HTTPError, ValueError):  # up, still replaying its own WAL (503)
                        with_data = []
                    stamps = [float(t) for t, _ in with_data[0]["values"]] if with_data else []
                    if stamps and stamps[-1] > restarted_at + 2 and stamps[0] < stopped_at - 3:
                        break
                    assert time.monotonic() < deadline, f"no replay within 90 s: {stamps[:3]}…{stamps[-3:]}"
                    time.sleep(1.0)
                replay_s = time.time() - restarted_at
                gaps = [b - a for a, b in itertools.pairwise(stamps)]
                outage_samples = [t for t in stamps if stopped_at <= t <= restarted_at]
                assert max(gaps) <= 2.5 * SCRAPE_S, f"largest gap {max(gaps):.1f} s"
                assert len(outage_samples) >= 0.8 * OUTAGE_S / SCRAPE_S, len(outage_samples)

                # 3. every dashboard query runs centrally and returns data
                empty = []
                for title, raw in dashboard_queries():
                    if not central.query(expand(raw)):
                        empty.append(f"{title}: {raw}")
                assert not empty, "dashboard queries without data centrally:\n" + "\n".join(empty)
    central.client.close()
    print(
        f"\nPrometheus fleet: outage {OUTAGE_S:.0f} s at {SCRAPE_S:.0f} s scrapes, "
        f"{len(outage_samples)} samples of the outage replayed from the agent's WAL, "
        f"largest gap {max(gaps):.2f} s, replay complete {replay_s:.1f} s after the restart, "
        f"{len(dashboard_queries())} dashboard queries returned data"
    )
