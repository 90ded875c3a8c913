"""The MQTT fleet path with real parts: gateway → site Mosquitto → bridge → central Mosquitto.

The site broker runs `deploy/mosquitto/bridge.conf.template` and the central broker
`deploy/mosquitto/central.conf.template` + `central.acl` (TLS, one client certificate per site, each
site confined to `sites/<id>/#`), rendered with their documented placeholders only. The simulator
takes pack 2 offline for 3 s every 6 s, so the gateway keeps publishing QoS 1 events.

Asserted: state, availability (birth) and events arrive centrally under `sites/<id>/…`; the central
broker stopped for 30 s while events keep coming loses none of them (every event the site broker saw
arrives centrally after the restart, counted); the bridge's notification topic shows the outage; a
killed gateway's last will reaches the centre. The figures are printed (`-s`) for docs/fleet.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from tests.fleet.stack import (
    DEPLOY,
    Mosquitto,
    brokers,
    free_port,
    gateway,
    gateway_config,
    make_pki,
    render,
    simulator,
    stop,
)

pytestmark = [pytest.mark.fleet, pytest.mark.e2e, pytest.mark.timeout(240)]

SITE = "site-test"
OUTAGE_S = 30.0


class Collector:
    """Every message under the filters, with arrival times; survives reconnects (persistent session)."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, bytes]] = []

    def on(self, topic: str) -> list[bytes]:
        return [p for _, t, p in self.messages if t == topic]

    def events(self, topic: str) -> list[tuple[object, ...]]:
        out = []
        for payload in self.on(topic):
            doc = json.loads(payload)
            out.append((doc["at"], doc["bus"], doc["address"], doc["kind"], doc["name"], doc["active"]))
        return out


@contextlib.asynccontextmanager
async def collect(
    port: int, filters: tuple[str, ...], *, identifier: str | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Collector]:
    """A subscriber that reconnects by itself (bounded backoff) until the block ends."""
    col = Collector()
    subscribed = asyncio.Event()

    async def session() -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    port,
                    identifier=identifier,
                    clean_session=identifier is None,
                    tls_context=tls,
                    timeout=5.0,
                ) as client:
                    for f in filters:
                        await client.subscribe(f, qos=1)
                    subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        col.messages.append((time.monotonic(), str(m.topic), payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    task = asyncio.create_task(session())
    try:
        async with asyncio.timeout(20):
            await subscribed.wait()
        yield col
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: object, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit_s} s: {what}")
        await asyncio.sleep(0.2)


async def test_site_broker_bridged_to_central_loses_no_event_across_an_outage(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", [SITE, "fleet-reader"])
    central_port, site_port = free_port(), free_port()
    (tmp_path / "central-data").mkdir()
    (tmp_path / "site-data").mkdir()
    central_conf = tmp_path / "central.conf"
    # `user`: run as root (CI), Mosquitto would switch to the `mosquitto` user, which cannot read
    # pytest's private tmp_path; the deployed files run with the packaged default
    central_conf.write_text(
        f"user {getpass.getuser()}\n"
        + render(
            DEPLOY / "mosquitto" / "central.conf.template",
            {
                "PORT": str(central_port),
                "BIND": "127.0.0.1",
                "CERT_DIR": str(pki.dir),
                "CONF_DIR": str(DEPLOY / "mosquitto"),
                "DATA_DIR": str(tmp_path / "central-data"),
            },
        ),
        encoding="utf-8",
    )
    bridge = render(
        DEPLOY / "mosquitto" / "bridge.conf.template",
        {
            "SITE_ID": SITE,
            "CENTRAL_HOST": "127.0.0.1",
            "CENTRAL_PORT": str(central_port),
            "CERT_DIR": str(pki.dir),
        },
    )
    site_conf = tmp_path / "site.conf"
    # the site's own listener (as deploy/mosquitto.conf, on a test port) followed by the bridge
    site_conf.write_text(
        f"user {getpass.getuser()}\nlistener {site_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path / 'site-data'}/\n\n{bridge}",
        encoding="utf-8",
    )
    central = Mosquitto(central_conf, central_port, tmp_path / "central.log")
    site = Mosquitto(site_conf, site_port, tmp_path / "site.log")
    reader_tls = ssl.create_default_context(cafile=str(pki.ca))
    reader_tls.load_cert_chain(*(str(p) for p in pki.cert("fleet-reader")))

    prefix = f"sites/{SITE}/bms-gateway"
    with brokers(central, site), simulator(tmp_path, "--faults", "offline=2:6/3") as sim_port:
        cfg = gateway_config(
            tmp_path,
            sim_port,
            f'[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:{site_port}"\nbase_topic = "bms-gateway"\n'
            "discovery = false\nmin_interval_s = 1.0\n",
        )
        async with (
            collect(site_port, ("bms-gateway/events", f"sites/{SITE}/bridge/state")) as local,
            collect(central_port, (f"sites/{SITE}/#",), identifier="fleet-reader", tls=reader_tls) as centre,
        ):
            with gateway(cfg, tmp_path) as gw:
                # 1. everything arrives centrally, remapped under sites/<id>/
                await until(lambda: b"online" in centre.on(f"{prefix}/status"), 30, "birth at the centre")
                await until(lambda: centre.on(f"{prefix}/b1/1/state"), 30, "pack state at the centre")
                await until(
                    lambda: centre.on(f"{prefix}/b1/2/availability"), 30, "availability at the centre"
                )
                await until(lambda: centre.events(f"{prefix}/events"), 30, "an event at the centre")
                state = json.loads(centre.on(f"{prefix}/b1/1/state")[-1])
                assert state["bus"] == "b1" and state["address"] == 1 and state["telemetry"]["voltage_v"] > 40
                assert centre.on(f"sites/{SITE}/bridge/state")[-1:] == [b"1"]

                # 2. the centre goes away for 30 s while the gateway keeps publishing events
                central.stop()
                before = len(local.events("bms-gateway/events"))
                await asyncio.sleep(OUTAGE_S)
                during = local.events("bms-gateway/events")[before:]
                assert len(during) >= 3, "the simulator's outages should have produced events"
                assert b"0" in local.on(f"sites/{SITE}/bridge/state"), "the bridge reported no outage"
                central.start()

                # 3. every event published meanwhile arrives centrally (0 lost), then the link is up
                t0 = time.monotonic()
                await until(
                    lambda: set(during) <= set(centre.events(f"{prefix}/events")),
                    60,
                    "the events of the outage at the centre",
                )
                replay_s = time.monotonic() - t0
                await until(
                    lambda: local.on(f"sites/{SITE}/bridge/state")[-1:] == [b"1"], 30, "bridge up again"
                )
                lost = set(during) - set(centre.events(f"{prefix}/events"))
                assert not lost

                # 4. the gateway dies: its last will reaches the centre
                stop(gw, signal.SIGKILL)
                await until(lambda: centre.on(f"{prefix}/status")[-1:] == [b"offline"], 60, "last will")
    print(
        f"\nMQTT fleet: outage {OUTAGE_S:.0f} s, events published during it {len(during)}, "
        f"delivered after restart {len(during) - len(lost)}, lost {len(lost)}, "
        f"all delivered {replay_s:.1f} s after the central broker restarted"
    )
