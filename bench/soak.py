"""Soak: the gateway for N minutes with 15 packs, bus faults and continuous Modbus/HTTP/MQTT load.

One `bms-gateway run` process (its built-in simulator: 15 Tianpower packs, profile cycle, wire
faults), an MQTT broker (Mosquitto when installed, else amqtt), and this load generator:
- Modbus/TCP: 4 clients reading the SunSpec bank unit and the native unit back to back;
- HTTP: `/api/packs`, `/api/system` and `/metrics` in a loop;
- MQTT: a subscriber to every topic of the gateway (counts messages).

Every `--every` seconds it samples the gateway process: RSS, open file descriptors, threads (psutil)
and the asyncio task count (the `bmsgw_asyncio_tasks` metric). At the end it prints the slope of each
per hour (least squares, over the whole run and over the run after its first fifth, which is
warm-up), the request and error counts of every load, and the bus's fault counters. Last line:
`RESULT soak_minutes=... rss_mb_per_h=... fds_per_h=... threads_per_h=... tasks_per_h=... errors=...`.

Usage: .venv/bin/python bench/soak.py [--minutes 30] [--every 10] [--packs 15] [--json out.json]
Loopback only; bounded by --minutes; every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiomqtt
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAULTS = "corrupt=0.001,drop=0.02,truncate=0.01,garbage=0.01,echo"
MODBUS_CLIENTS = 4


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0
    last_error: str = ""

    def fail(self, err: BaseException | str) -> None:
        self.errors += 1
        self.last_error = str(err)[:200]


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    tasks: int | None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    modbus: Counts = field(default_factory=Counts)
    http: Counts = field(default_factory=Counts)
    mqtt: Counts = field(default_factory=Counts)  # requests = messages received


def slope_per_h(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per hour (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / var * 3600.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        cmd = [mosquitto, "-c", str(conf)]
    else:
        conf = workdir / "amqtt.yaml"
        conf.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        cmd = [sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()", "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def start_gateway(workdir: Path, packs: int, mqtt_port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    config = workdir / "gateway.toml"
    config.write_text(
        f"""state_dir = "state"
[http]
listen = "127.0.0.1:0"
[modbus]
listen = "127.0.0.1:0"
[simulator]
enabled = true
packs = {packs}
profile = "cycle"
pacing = false
faults = "{FAULTS}"
[mqtt]
enabled = true
url = "mqtt://127.0.0.1:{mqtt_port}"
base_topic = "soak"
client_id = "soak-gateway"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    endpoints: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while not ("http" in endpoints and "modbus" in endpoints):
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the gateway did not start within 60 s")
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the gateway exited early (code {proc.poll()})")
        name, sep, value = line.partition(":")
        if sep and " " not in name and value.strip():
            endpoints[name.strip()] = value.strip()
    return proc, endpoints


async def modbus_load(host: str, port: int, counts: Counts, stop: asyncio.Event) -> None:
    """One client: FC3 reads of the SunSpec bank unit (40000, 125) and the native unit (0, 45)."""
    import struct

    tid = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, TimeoutError) as err:
            counts.fail(err)
            await asyncio.sleep(1)
            continue
        try:
            while not stop.is_set():
                for unit, address, count in ((1, 40000, 125), (2, 0, 45)):
                    tid = (tid + 1) & 0xFFFF
                    writer.write(struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, address, count))
                    header = await asyncio.wait_for(reader.readexactly(7), 5)
                    rtid, _, length, _ = struct.unpack(">HHHB", header)
                    body = await asyncio.wait_for(reader.readexactly(length - 1), 5)
                    counts.requests += 1
                    if rtid != tid or body[0] & 0x80:
                        counts.fail(f"unit {unit}: answer {body[:2].hex()} to tid {tid}")
                await asyncio.sleep(0.01)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
            counts.fail(err)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def http_load(url: str, counts: Counts, stop: asyncio.Event, tasks: list[int | None]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            for path in ("/api/packs", "/api/system", "/metrics"):
                try:
                    r = await client.get(path)
                    counts.requests += 1
                    if r.status_code != 200:
                        counts.fail(f"{path}: {r.status_code}")
                    elif path == "/metrics":
                        m = re.search(r"^bmsgw_asyncio_tasks (\S+)$", r.text, re.M)
                        tasks[0] = int(float(m.group(1))) if m else None
                except httpx.HTTPError as err:
                    counts.fail(err)
            await asyncio.sleep(0.05)


async def mqtt_load(port: int, counts: Counts, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=None) as client:
                await client.subscribe("soak/#", qos=1)
                async for _ in client.messages:
                    counts.requests += 1
                    if stop.is_set():
                        return
        except aiomqtt.MqttError as err:
            counts.fail(err)
            await asyncio.sleep(1)


async def soak(minutes: float, every_s: float, packs: int) -> tuple[Run, dict[str, object]]:
    workdir = Path(tempfile.mkdtemp(prefix="bmsgw-soak-"))
    broker, mqtt_port = start_broker(workdir)
    gateway: subprocess.Popen[str] | None = None
    run = Run()
    try:
        await asyncio.sleep(1.0)  # the broker binds
        gateway, endpoints = start_gateway(workdir, packs, mqtt_port)
        proc = psutil.Process(gateway.pid)
        host, _, port = endpoints["modbus"].removeprefix("modbus-tcp://").rpartition(":")
        stop = asyncio.Event()
        tasks: list[int | None] = [None]
        loads = [
            asyncio.create_task(modbus_load(host, int(port), run.modbus, stop)) for _ in range(MODBUS_CLIENTS)
        ]
        loads.append(asyncio.create_task(http_load(endpoints["http"], run.http, stop, tasks)))
        loads.append(asyncio.create_task(mqtt_load(mqtt_port, run.mqtt, stop)))
        t0 = time.monotonic()
        end = t0 + minutes * 60.0
        while True:
            now = time.monotonic()
            if gateway.poll() is not None:
                raise SystemExit(f"the gateway exited during the soak (code {gateway.returncode})")
            run.samples.append(
                Sample(now - t0, proc.memory_info().rss / 2**20, proc.num_fds(), proc.num_threads(), tasks[0])
            )
            if now >= end:
                break
            await asyncio.sleep(min(every_s, max(0.0, end - now)))
        stop.set()
        for t in loads:
            t.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        async with httpx.AsyncClient(base_url=endpoints["http"], timeout=10) as client:
            system = (await client.get("/api/system")).json()
        counters = {name: b.get("counters") for name, b in system["gateway"]["buses"].items()}
        return run, {"buses": counters, "workdir": str(workdir)}
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(5)
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()


def report(run: Run, extra: dict[str, object], minutes: float) -> dict[str, object]:
    warm = run.samples[0].t_s + (run.samples[-1].t_s - run.samples[0].t_s) / 5
    out: dict[str, object] = {"minutes": minutes, "samples": len(run.samples)}
    print(f"soak: {minutes:g} min, {len(run.samples)} samples")
    print(f"{'quantity':<10} {'start':>10} {'end':>10} {'slope/h':>10} {'slope/h after warm-up':>22}")
    for name in ("rss_mb", "fds", "threads", "tasks"):
        pts = [(s.t_s, float(v)) for s in run.samples if (v := getattr(s, name)) is not None]
        if not pts:
            print(f"{name:<10} {'-':>10}")
            continue
        late = [p for p in pts if p[0] >= warm]
        whole, after = slope_per_h(pts), slope_per_h(late)
        out[name] = {
            "start": pts[0][1],
            "end": pts[-1][1],
            "slope_per_h": whole,
            "slope_per_h_after_warmup": after,
        }
        print(f"{name:<10} {pts[0][1]:>10.1f} {pts[-1][1]:>10.1f} {whole:>10.2f} {after:>22.2f}")
    for name in ("modbus", "http", "mqtt"):
        c: Counts = getattr(run, name)
        out[name] = asdict(c)
        what = "messages" if name == "mqtt" else "requests"
        last = f" (last: {c.last_error})" if c.errors else ""
        print(f"{name:<7} {c.requests:>9} {what}, {c.errors} errors{last}")
    buses = extra.get("buses") or {}
    for bus, counters in buses.items():  # type: ignore[union-attr]
        if isinstance(counters, dict):
            keys = ("requests", "responses", "checksum_errors", "timeouts", "retries", "no_response")
            print(f"bus {bus}: " + ", ".join(f"{k} {counters.get(k)}" for k in keys))
    out["buses"] = buses
    errors = run.modbus.errors + run.http.errors + run.mqtt.errors

    def s(name: str) -> float:
        v = out.get(name)
        return float(v["slope_per_h_after_warmup"]) if isinstance(v, dict) else float("nan")

    print(
        f"RESULT soak_minutes={minutes:g} rss_mb_per_h={s('rss_mb'):.2f} fds_per_h={s('fds'):.2f} "
        f"threads_per_h={s('threads'):.2f} tasks_per_h={s('tasks'):.2f} errors={errors}"
    )
    out["errors"] = errors
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--packs", type=int, default=15, help="simulated packs (default 15)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    if args.minutes <= 0 or args.every <= 0 or not 1 <= args.packs <= 15:
        ap.error("--minutes and --every must be positive, --packs 1..15")
    run, extra = asyncio.run(soak(args.minutes, args.every, args.packs))
    figures = report(run, extra, args.minutes)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
