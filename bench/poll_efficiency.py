"""Poll efficiency: a full realtime cycle over N packs at 9600 baud against its wire-time minimum.

For N = 1, 4, 15 simulated Tianpower packs (`bms-gateway simulate` in its own process, paced at
9600 baud, 10 bits per byte, 50 ms turnaround), the gateway's bus owner and driver read every
pack's realtime data with the inter-frame gap at its minimum (0). The wire-time minimum of a
cycle is (request + response bytes) x 10 / baud plus the turnaround, summed over the packs;
efficiency = minimum / measured. Then the real `bms-gateway run` process polls 15 packs
continuously and its CPU and memory are sampled.

Output: a table, then the last line `RESULT poll_efficiency=<min over N>`. Measured, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.south.bus import BusOwner  # noqa: E402
from gateway.south.poller import load_driver  # noqa: E402
from gateway.south.transport import SerialSettings  # noqa: E402

BAUD = 9600
TURNAROUND_S = 0.05
CYCLES = 5
PACK_COUNTS = (1, 4, 15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def child(*args: str, ready: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = ""
    async with asyncio.timeout(30):
        while not line.startswith(ready):
            raw = await proc.stdout.readline()
            if not raw:
                raise RuntimeError(f"{args[0]} exited early")
            line = raw.decode().strip()
    try:
        yield proc, line[len(ready) :].strip()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)


async def simulator(packs: int, port: int) -> contextlib.AbstractAsyncContextManager[object]:
    return child(
        "simulate",
        "--protocol",
        "tianpower",
        "--packs",
        str(packs),
        "--profile",
        "idle",
        "--listen",
        f"127.0.0.1:{port}",
        "--baud",
        str(BAUD),
        "--turnaround",
        str(TURNAROUND_S),
        ready="listen",
    )


async def measure_cycles(packs: int) -> tuple[float, float, int]:
    """(median measured cycle s, wire-time minimum s, bytes per cycle)."""
    port = free_port()
    driver = load_driver("tianpower")
    async with await simulator(packs, port):  # type: ignore[attr-defined]
        owner = BusOwner.from_url(
            "bench",
            f"socket://127.0.0.1:{port}",
            SerialSettings(baudrate=BAUD),
            driver.new_decoder,
            gap_s=0.0,
            response_timeout_s=2.0,
            retries=0,
        )
        task = asyncio.ensure_future(owner.run(lambda: None))
        try:
            addresses = range(1, packs + 1)
            for a in addresses:  # warm-up cycle
                await driver.read_realtime(owner, a, time.time())
            cycles: list[float] = []
            wire: list[float] = []
            sizes: list[int] = []
            for _ in range(CYCLES):
                sent0, recv0 = owner.counters.bytes_sent, owner.counters.bytes_received
                t0 = time.perf_counter()
                for a in addresses:
                    await driver.read_realtime(owner, a, time.time())
                cycles.append(time.perf_counter() - t0)
                nbytes = owner.counters.bytes_sent - sent0 + owner.counters.bytes_received - recv0
                sizes.append(nbytes)
                wire.append(nbytes * 10 / BAUD + packs * TURNAROUND_S)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return statistics.median(cycles), statistics.median(wire), int(statistics.median(sizes))


async def gateway_load(packs: int = 15, seconds: float = 6.0) -> tuple[float, float, float]:
    """(CPU % of one core, RSS MiB, realtime reads per second) of `bms-gateway run` polling `packs`."""
    port = free_port()
    async with await simulator(packs, port):  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "bench.toml"
            cfg.write_text(
                f'state_dir = "{tmp}"\n[http]\nlisten = "127.0.0.1:0"\n[modbus]\nenabled = false\n'
                f'[[bus]]\nname = "b"\nurl = "socket://127.0.0.1:{port}"\nprotocol = "tianpower"\n'
                f"addresses = {list(range(1, packs + 1))}\nrequest_gap_s = 0.0\nrealtime_interval_s = 0.05\n",
                encoding="utf-8",
            )
            async with child("run", "--config", str(cfg), ready="http:") as (proc, url):
                import httpx

                async with httpx.AsyncClient(base_url=url) as client:
                    for _ in range(200):
                        packs_json = (await client.get("/api/packs")).json()
                        if all(p["availability"] == "online" for p in packs_json):
                            break
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(2.0)  # past the identity/parameter reads
                    ps = psutil.Process(proc.pid)
                    before = (await client.get("/api/system")).json()["gateway"]["buses"]["b"]["counters"]
                    ps.cpu_percent(None)
                    await asyncio.sleep(seconds)
                    cpu = ps.cpu_percent(None)
                    rss = ps.memory_info().rss / 2**20
                    after = (await client.get("/api/system")).json()["gateway"]["buses"]["b"]["counters"]
                reads = (after["responses"] - before["responses"]) / seconds
    return cpu, rss, reads


async def main() -> None:
    print(
        f"poll efficiency at {BAUD} baud, gap 0, turnaround {TURNAROUND_S * 1000:.0f} ms, "
        f"median of {CYCLES} cycles"
    )
    print(f"{'packs':>5} {'bytes/cycle':>12} {'cycle s':>9} {'wire min s':>11} {'efficiency':>11}")
    results = []
    for n in PACK_COUNTS:
        cycle, wire, nbytes = await measure_cycles(n)
        eff = wire / cycle
        results.append(eff)
        print(f"{n:>5} {nbytes:>12} {cycle:>9.3f} {wire:>11.3f} {eff:>11.3f}")
    cpu, rss, reads = await gateway_load()
    print(
        f"gateway process polling 15 packs continuously: {cpu:.1f} % of one core, "
        f"RSS {rss:.1f} MiB, {reads:.1f} realtime reads/s (cpus: {os.cpu_count()})"
    )
    print(f"RESULT poll_efficiency={min(results):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
