"""CPU and memory of the gateway polling 15 packs, per output, so a regression names its owner.

One `bms-gateway run` process per variant, all running at the same time (same machine load), each
polling its own `bms-gateway simulate` (15 Tianpower packs at 9600 baud, paced like the wire) with
the same polling for every tree (today's defaults: 4 ms gap, 5 s interval; a cycle takes ~2.9 s):

- `poll`: HTTP API only (no output), the cost every variant shares;
- one variant per output, each alone on top of `poll`: `modbus` (an EMS reading 125 registers of
  the bank once a second), `can` (python-can `virtual`, protocol pylon), `rs485` (an emulated
  inverter polling Pylontech 0x42/0x44 for every module, one request per 100 ms, through
  `socket://`), `mqtt` (a private Mosquitto broker, Home Assistant discovery), `metrics` (a
  scrape of /metrics every 10 s), `recording` (one sample per pack per second to SQLite);
- `all`: every output above at once; `all-asyncio`: the same on the standard library's loop;
- `all@baseline`: `all` on the gateway at `benchlib.BASELINE_REV` (before issue 19), same run.

CPU is the process's user + system time over the window divided by the window (% of one core);
an output's own cost is its variant minus `poll`. RSS is read at the end of the window, then again
after 10 s of 3 HTTP clients polling /api/packs once a second (stand-in for 3 open web UIs).

Last lines: `RESULT cpu_all_pct=...`, `RESULT cpu_all_baseline_pct=...`, `RESULT rss_all_mib=...`.
Usage: .venv/bin/python bench/cpu_outputs.py [--seconds 30] [--warmup 20] [--only all,poll]
Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

PACKS = 15
GAP_S = 0.004  # the production default since issue 17 (a 15-pack realtime cycle of about 2.9 s)
INTERVAL_S = 5.0
OUTPUTS = ("modbus", "can", "rs485", "mqtt", "metrics", "recording")


@dataclass
class Variant:
    name: str
    outputs: tuple[str, ...]
    loop: str | None = "auto"  # None: the baseline tree (no event_loop key)
    tree: Path = benchlib.ROOT
    pid: int = 0
    http: str = ""
    modbus_port: int = 0
    cpu0: float = 0.0
    cpu_pct: float = float("nan")
    rss_mib: float = float("nan")
    rss_ui_mib: float = float("nan")
    extras: dict[str, object] = field(default_factory=dict)


def config_text(v: Variant, tmp: Path, sim_port: int, rs485_port: int, mqtt_port: int | None) -> str:
    on = set(v.outputs)
    lines = [f'state_dir = "{tmp}/{v.name}"', 'log_level = "warning"']
    if v.loop is not None:
        lines.append(f'event_loop = "{v.loop}"')
    lines += ["[http]", 'listen = "127.0.0.1:0"']
    lines += ["[modbus]", f"enabled = {str('modbus' in on).lower()}", 'listen = "127.0.0.1:0"']
    lines += ["[recording]", f"enabled = {str('recording' in on).lower()}"]
    if "can" in on:
        channel = f"cpu-{uuid.uuid4().hex[:8]}"
        lines += ["[can]", "enabled = true", 'interface = "virtual"', f'channel = "{channel}"']
        lines += ['protocol = "pylon"', "keepalive_expected = false"]
    if "rs485" in on:
        lines += ["[inverter_rs485]", "enabled = true", f'url = "socket://127.0.0.1:{rs485_port}"']
    if "mqtt" in on and mqtt_port is not None:
        lines += ["[mqtt]", "enabled = true", f'url = "mqtt://127.0.0.1:{mqtt_port}"']
        lines += [
            f'client_id = "cpu-{v.name.replace("@", "-")}"',
            f'base_topic = "cpu-{v.name.replace("@", "-")}"',
        ]
    lines += ["[[bus]]", 'name = "b"', f'url = "socket://127.0.0.1:{sim_port}"', 'protocol = "tianpower"']
    lines.append(f"addresses = {list(range(1, PACKS + 1))}")
    # the same polling for every tree (the baseline's default gap was 200 ms, today's is 4 ms)
    lines += [f"request_gap_s = {GAP_S}", f"realtime_interval_s = {INTERVAL_S}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- the load of each output


class Inverter(threading.Thread):
    """An emulated Pylontech RS485 inverter behind a TCP converter: the gateway connects to it."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="inverter")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answers = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        from protocol.ydt1363 import encode_frame

        self.listener.settimeout(1.0)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.1)
                adr = 2
                cid2 = 0x42
                while not self.stopped.is_set():
                    try:
                        conn.sendall(encode_frame(0x20, adr, 0x46, cid2, bytes((adr,))))
                        got = b""
                        deadline = time.monotonic() + 0.1
                        while not got.endswith(b"\r") and time.monotonic() < deadline:
                            with contextlib.suppress(TimeoutError):
                                chunk = conn.recv(4096)
                                if not chunk:
                                    raise ConnectionError
                                got += chunk
                        self.answers += got.count(b"\r")
                        time.sleep(max(0.0, deadline - time.monotonic()))
                    except OSError:
                        break
                    cid2 = 0x44 if cid2 == 0x42 else 0x42
                    if cid2 == 0x42:
                        adr = 2 + (adr - 1) % 14

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.listener.close()


async def ems(port: int, stop: asyncio.Event) -> None:
    """An EMS reading the bank: 125 registers at 40000 once a second."""
    import struct

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tid = 0
    try:
        while not stop.is_set():
            tid = (tid + 1) & 0xFFFF
            writer.write(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, 40000, 125))
            await reader.readexactly(9 + 250)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        writer.close()


async def scraper(url: str, stop: asyncio.Event, every_s: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            (await client.get("/metrics")).raise_for_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


async def wait_online(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            packs = (await client.get("/api/packs")).json()
            if len(packs) == PACKS and all(p["availability"] == "online" for p in packs):
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url}: not every pack came online")


# ------------------------------------------------------------------------- the run


@contextlib.contextmanager
def start_variant(
    v: Variant, tmp: Path, mqtt_port: int | None, stack: contextlib.ExitStack
) -> Iterator[Variant]:
    sim_port = stack.enter_context(benchlib.simulator(PACKS))
    inverter = None
    if "rs485" in v.outputs:
        inverter = Inverter()
        inverter.start()
        stack.callback(inverter.stop)
        v.extras["inverter"] = inverter
    cfg = tmp / f"{v.name}.toml"
    cfg.write_text(config_text(v, tmp, sim_port, inverter.port if inverter else 0, mqtt_port))
    env = dict(os.environ, PYTHONPATH=str(v.tree))
    proc = stack.enter_context(
        benchlib.process(benchlib.gateway_cmd("run", "--config", str(cfg)), v.tree, env)
    )
    found = benchlib.endpoints(proc)
    v.pid = proc.pid
    v.http = found["http"]
    if "modbus" in found:
        v.modbus_port = int(found["modbus"].rsplit(":", 1)[1])
    yield v


async def drive(variants: list[Variant], warmup_s: float, seconds: float, svg: Path | None) -> None:
    await asyncio.gather(*(wait_online(v.http) for v in variants))
    stop = asyncio.Event()
    loads = []
    for v in variants:
        if v.modbus_port:
            loads.append(asyncio.create_task(ems(v.modbus_port, stop)))
        if "metrics" in v.outputs:
            loads.append(asyncio.create_task(scraper(v.http, stop, 10.0)))
    await asyncio.sleep(warmup_s)  # identity and parameter reads, discovery, first decisions
    for v in variants:
        v.cpu0 = benchlib.cpu_s(v.pid)
    t0 = time.monotonic()
    spies = [
        benchlib.py_spy(v.pid, svg.with_name(f"{svg.stem}-{v.name}{svg.suffix}"), seconds)
        for v in variants
        if v.name in ("all", "poll") and svg is not None
    ]
    await asyncio.sleep(seconds)
    for spy in spies:
        await asyncio.to_thread(spy.wait, 60)
    elapsed = time.monotonic() - t0
    for v in variants:
        v.cpu_pct = 100 * (benchlib.cpu_s(v.pid) - v.cpu0) / elapsed
        v.rss_mib = benchlib.rss_mib(v.pid)
    ui = [v for v in variants if v.name.startswith("all")]
    await asyncio.gather(*(ui_clients(v.http, 10.0) for v in ui))
    for v in ui:
        v.rss_ui_mib = benchlib.rss_mib(v.pid)
    stop.set()
    await asyncio.gather(*loads, return_exceptions=True)


async def ui_clients(url: str, seconds: float) -> None:
    """3 clients polling /api/packs once a second (stand-in for 3 open web UIs: issue 18 is not merged)."""
    import httpx

    async def one() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                (await client.get("/api/packs")).raise_for_status()
                await asyncio.sleep(1.0)

    await asyncio.gather(one(), one(), one())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds after all packs are online")
    parser.add_argument("--baseline", default=benchlib.BASELINE_REV, help="git revision, or 'none'")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all of them)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="SVG",
        help="py-spy flame graphs of `all` and `poll` (SVG-all.svg, SVG-poll.svg)",
    )
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        benchlib.baseline_tree(args.baseline) as base,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        mqtt_port = stack.enter_context(benchlib.mosquitto())
        if mqtt_port is None:
            print("mosquitto is not installed: the mqtt output is not measured (apt-get install mosquitto)")
        variants = [Variant("poll", ())]
        variants += [Variant(o, (o,)) for o in OUTPUTS if o != "mqtt" or mqtt_port is not None]
        every = tuple(o for o in OUTPUTS if o != "mqtt" or mqtt_port is not None)
        variants += [Variant("all", every), Variant("all-asyncio", every, loop="asyncio")]
        if base is not None:
            variants.append(Variant("all@baseline", every, loop=None, tree=base))
        if only:
            variants = [v for v in variants if v.name in only]
        for v in variants:
            stack.enter_context(start_variant(v, tmp, mqtt_port, stack))
        print(f"machine: {benchlib.machine()}")
        print(
            f"{len(variants)} gateways, each polling {PACKS} simulated packs at 9600 baud; "
            f"window {args.seconds:g} s after {args.warmup:g} s warm-up"
        )
        asyncio.run(drive(variants, args.warmup, args.seconds, args.profile))
        load = os.getloadavg()
    by_name = {v.name: v for v in variants}
    poll = by_name.get("poll")
    print()
    print(f"{'variant':<14} {'CPU % of 1 core':>16} {'own cost':>9} {'RSS MiB':>8} {'RSS +3 UI':>10}")
    for v in variants:
        own = f"{v.cpu_pct - poll.cpu_pct:+9.2f}" if poll is not None and v is not poll else " " * 9
        ui = f"{v.rss_ui_mib:10.1f}" if v.rss_ui_mib == v.rss_ui_mib else " " * 10
        print(f"{v.name:<14} {v.cpu_pct:>16.2f} {own} {v.rss_mib:>8.1f} {ui}")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if "all" in by_name:
        print(f"RESULT cpu_all_pct={by_name['all'].cpu_pct:.2f}")
        print(f"RESULT rss_all_mib={max(by_name['all'].rss_mib, by_name['all'].rss_ui_mib):.1f}")
    if "all@baseline" in by_name:
        print(f"RESULT cpu_all_baseline_pct={by_name['all@baseline'].cpu_pct:.2f}")
        b = by_name["all@baseline"]
        print(f"RESULT rss_all_baseline_mib={max(b.rss_mib, b.rss_ui_mib):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
