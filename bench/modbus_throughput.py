"""Modbus/TCP throughput: our server vs a pymodbus 3.16 server on the same image, and the poll cycle.

Three processes so that no side borrows the others' CPU time:
- the gateway: simulator (Tianpower packs at 9600 baud, paced like the wire) -> bus owner ->
  poller -> model -> our Modbus server, on one event loop (the production default: uvloop when
  installed), as in production;
- a pymodbus server (SimDevice) serving a copy of the gateway's SunSpec bank image;
- the load generator: 1 and 8 concurrent raw asyncio clients, each sending FC3 reads of 125
  registers at 40000 back to back (one outstanding request per connection), for a fixed time.

Prints requests/s and p50/p99 latency for each server and client count, and the RS485 poll cycle
(realtime reads completed per second over all packs) while idle and while each Modbus load runs.
Last lines: the req/s of both at 8 clients, then `RESULT modbus_speedup=<ours / pymodbus req/s, 8 clients>`.

Usage: .venv/bin/python bench/modbus_throughput.py [--seconds 3] [--packs 4]
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

READ_ADDRESS = 40000
READ_COUNT = 125


# ---------------------------------------------------------------------------- gateway process


def gateway_process(conn: Connection, packs: int) -> None:
    from gateway.app.loop import run

    run(_gateway(conn, packs))  # the production default loop (uvloop when installed)


async def _gateway(conn: Connection, packs: int) -> None:
    import logging

    from gateway.app.config import BusConfig, ModbusConfig
    from gateway.core.controls import Controls
    from gateway.core.model import ModelStore
    from gateway.north.modbus.server import ModbusServer
    from gateway.south.bus import BusOwner
    from gateway.south.poller import BusPoller, load_driver
    from gateway.south.transport import SerialSettings
    from simulator import Simulator, SimulatorOptions

    sim = Simulator(
        SimulatorOptions(protocol="tianpower", packs=packs, pacing=True, baud=9600, profile="cycle")
    )
    addresses = list(range(1, packs + 1))
    async with sim.serve_tcp("127.0.0.1", 0) as bus_server:
        driver = load_driver("tianpower")
        cfg = BusConfig(
            name="sim",
            url=f"socket://127.0.0.1:{bus_server.port}",
            addresses=addresses,
            request_gap_s=0.0,
            realtime_interval_s=0.05,
            response_timeout_s=1.0,
        )
        owner = BusOwner.from_url(
            cfg.name, cfg.url, SerialSettings(), driver.new_decoder, gap_s=0.0, response_timeout_s=1.0
        )
        store = ModelStore([(cfg.name, a) for a in addresses])
        poller = BusPoller(cfg, owner, store, driver)
        modbus = ModbusServer(
            ModbusConfig(listen="127.0.0.1:0", request_rate_per_s=1e9, request_burst=1_000_000),
            store,
            Controls(),
        )
        reads: list[float] = []  # monotonic time of every new realtime reading

        async def watch() -> None:
            seen: dict[tuple[str, int], float] = {}
            async for view in store.subscribe():
                for key, pack in view.packs.items():
                    t = pack.telemetry
                    if t is not None and seen.get(key) != t.measured_at:
                        seen[key] = t.measured_at
                        reads.append(time.monotonic())

        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(owner.run(lambda: None)),
                tg.create_task(poller.run(lambda: None)),
                tg.create_task(modbus.run(ready.set)),
                tg.create_task(watch()),
            ]
            await ready.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    async for view in store.subscribe():
                        if view.bank.packs_online >= packs:
                            break
            image = modbus.units[1].image.blocks[0]
            conn.send(("ready", modbus.port, image[0], image[1], store.view.bank.packs_online))
            while True:
                if await asyncio.to_thread(conn.poll, 0.2):
                    msg = conn.recv()
                    if msg == "stop":
                        break
                    if msg == "reads":
                        conn.send(list(reads))
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the simulator's teardown noise
            for t in tasks:
                t.cancel()


# ---------------------------------------------------------------------------- pymodbus process


def pymodbus_process(conn: Connection, start: int, data: bytes) -> None:
    asyncio.run(_pymodbus(conn, start, data))


async def _pymodbus(conn: Connection, start: int, data: bytes) -> None:
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    values = list(struct.unpack(f">{len(data) // 2}H", data))
    device = SimDevice(1, [SimData(start, count=len(values), values=values, datatype=DataType.REGISTERS)])
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    transport = server.transport
    assert transport is not None
    port = transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    conn.send(("ready", port))
    await asyncio.to_thread(conn.recv)
    await server.shutdown()


# ---------------------------------------------------------------------------- load generator


async def _client(port: int, seconds: float, latencies: list[float], expect: bytes | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = struct.pack(">HHHBBHH", 0, 0, 6, 1, 3, READ_ADDRESS, READ_COUNT)
    answer_len = 9 + 2 * READ_COUNT
    end = time.perf_counter() + seconds
    tid = 0
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            tid = (tid + 1) & 0xFFFF
            writer.write(struct.pack(">H", tid) + request[2:])
            answer = await reader.readexactly(answer_len)
            latencies.append(time.perf_counter() - t0)
            if answer[7] != 3 or struct.unpack(">H", answer[:2])[0] != tid:
                raise RuntimeError(f"unexpected answer {answer[:9].hex()}")
            if expect is not None and answer[9:13] != expect:
                raise RuntimeError("answer does not start with SunS")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def load(port: int, clients: int, seconds: float) -> dict[str, float]:
    async def run() -> list[float]:
        latencies: list[float] = []
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(_client(port, seconds, latencies, b"SunS"))
        return latencies

    t0 = time.perf_counter()
    lat = asyncio.run(run())
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "start": time.monotonic() - elapsed,
        "end": time.monotonic(),
    }


def _load_in_process(port: int, clients: int, seconds: float, out: Connection) -> None:
    out.send(load(port, clients, seconds))


def run_load(port: int, clients: int, seconds: float) -> dict[str, float]:
    """The load generator in its own process (so it never competes with the gateway's GIL)."""
    parent, child = mp.Pipe()
    proc = mp.Process(target=_load_in_process, args=(port, clients, seconds, child))
    proc.start()
    result: dict[str, float] = parent.recv()
    proc.join(timeout=seconds + 30)
    return result


def poll_rate(reads: list[float], start: float, end: float) -> float:
    n = sum(1 for t in reads if start <= t < end)
    return n / (end - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load run")
    parser.add_argument("--packs", type=int, default=4, help="simulated packs polled during the runs")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of polling before measuring")
    args = parser.parse_args()
    mp.set_start_method("spawn")

    gw_parent, gw_child = mp.Pipe()
    gw = mp.Process(target=gateway_process, args=(gw_child, args.packs))
    gw.start()
    _, ours_port, image_start, image_data, online = gw_parent.recv()
    pm_parent, pm_child = mp.Pipe()
    pm = mp.Process(target=pymodbus_process, args=(pm_child, image_start, image_data))
    pm.start()
    _, pm_port = pm_parent.recv()
    print(
        f"gateway: {args.packs} simulated packs at 9600 baud ({online} online),"
        f" image {len(image_data) // 2} registers"
    )
    print(f"cpu: {os.cpu_count()} logical; each load run {args.seconds:g} s, FC3 x {READ_COUNT} registers")

    time.sleep(args.warmup)  # identity and parameter tables are read at start: not the steady cycle
    t0 = time.monotonic()
    time.sleep(args.seconds)
    idle_windows = [(t0, time.monotonic())]

    results: dict[tuple[str, int], dict[str, float]] = {}
    for clients in (1, 8):
        results[("ours", clients)] = run_load(ours_port, clients, args.seconds)
        results[("pymodbus", clients)] = run_load(pm_port, clients, args.seconds)
    t0 = time.monotonic()
    time.sleep(args.seconds)
    idle_windows.append((t0, time.monotonic()))

    gw_parent.send("reads")
    reads: list[float] = gw_parent.recv()
    gw_parent.send("stop")
    pm_parent.send("stop")
    gw.join(timeout=10)
    pm.join(timeout=10)

    print()
    print(f"{'server':<10} {'clients':>7} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (server, clients), r in results.items():
        print(
            f"{server:<10} {clients:>7} {int(r['requests']):>9} {r['rps']:>9.0f}"
            f" {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
        )
    before, after = (poll_rate(reads, *w) for w in idle_windows)
    idle = (before + after) / 2
    print()
    print("RS485 poll cycle (realtime reads completed per second, all packs):")
    print(f"  no Modbus load:                {idle:6.2f}/s  (before {before:.2f}, after {after:.2f})")
    for clients in (1, 8):
        r = results[("ours", clients)]
        loaded = poll_rate(reads, r["start"], r["end"])
        print(f"  {clients} Modbus client(s) on ours:   {loaded:6.2f}/s  ({loaded / idle:5.1%} of idle)")
    speedup = results[("ours", 8)]["rps"] / results[("pymodbus", 8)]["rps"]
    print()
    print(f"RESULT modbus_ours_py_8_rps={results[('ours', 8)]['rps']:.0f}")
    print(f"RESULT modbus_pymodbus_8_rps={results[('pymodbus', 8)]['rps']:.0f}")
    print(f"RESULT modbus_speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
