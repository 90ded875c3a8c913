"""CAN frame period jitter of the gateway, idle and while Modbus/TCP clients load the process.

One gateway process as in production (`run_app`: built-in simulator -> bus owner -> poller ->
model -> policy -> CAN on python-can's `virtual` interface, plus the Modbus/TCP server). A
receiver thread on a second virtual bus in the same process timestamps every frame of one id;
jitter is |period - the protocol's cadence|. Phase 1 measures the idle process, phase 2 the same
process while separate load processes send back-to-back FC3 reads (125 registers at 40000) on
several connections. python-can's virtual bus is in-process, so the receiver shares the process
(and its GIL) with the gateway: the figures include delivery to the receiver, an upper bound.

Prints p50/p99/max for both phases and the Modbus request rate, then
`RESULT can_jitter_idle_p99_ms=<idle p99>` and, as the last line, `RESULT can_jitter_p99_ms=<loaded p99>`.

Usage: .venv/bin/python bench/can_jitter.py [--protocol sma] [--seconds 20] [--clients 4]
Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing as mp
import statistics
import struct
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

READ_ADDRESS = 40000
READ_COUNT = 125


def load_client(host: str, port: int, seconds: float, counter: mp.Value) -> None:  # type: ignore[valid-type]
    """Back-to-back FC3 reads on one connection for `seconds` (runs in its own process)."""
    import socket

    deadline = time.monotonic() + seconds
    done = 0
    with socket.create_connection((host, port), timeout=5) as s:
        tid = 0
        while time.monotonic() < deadline:
            tid = (tid + 1) & 0xFFFF
            s.sendall(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, READ_ADDRESS, READ_COUNT))
            header = b""
            while len(header) < 7:
                chunk = s.recv(7 - len(header))
                if not chunk:
                    return
                header += chunk
            length = struct.unpack(">H", header[4:6])[0] - 1
            body = b""
            while len(body) < length:
                chunk = s.recv(length - len(body))
                if not chunk:
                    return
                body += chunk
            done += 1
    with counter.get_lock():  # type: ignore[attr-defined]
        counter.value += done  # type: ignore[attr-defined]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class Receiver:
    """Timestamps every frame of `ident` on a virtual bus (own thread, perf_counter)."""

    def __init__(self, channel: str, ident: int) -> None:
        import can

        self.bus = can.Bus(interface="virtual", channel=channel)
        self.ident = ident
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jitter-rx", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.05)
            if msg is not None and msg.arbitration_id == self.ident:
                self.times.append(time.perf_counter())

    def take(self) -> list[float]:
        times, self.times = self.times, []
        return times

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.bus.shutdown()


def jitter_ms(times: list[float], period_s: float) -> list[float]:
    return [abs((b - a) - period_s) * 1000 for a, b in itertools.pairwise(times)]


async def bench(protocol: str, seconds: float, clients: int) -> int:
    from gateway.app.config import Config
    from gateway.app.context import AppContext
    from gateway.app.wiring import run_app
    from protocol.inverter.can import registry

    proto = registry.create(protocol)
    if not proto.groups:
        print(f"{protocol} only answers the inverter; pick a cyclic protocol", file=sys.stderr)
        return 2
    period = proto.groups[0].period_s
    ident = proto.encode(proto.groups[0].messages[0], _any_state(), 0.0).arbitration_id
    channel = f"jitter-{uuid.uuid4().hex[:8]}"
    config = Config.model_validate(
        {
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"enabled": True, "listen": "127.0.0.1:0"},
            "simulator": {"enabled": True, "packs": 2, "profile": "cycle"},
            "can": {"enabled": True, "interface": "virtual", "channel": channel, "protocol": protocol},
        }
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    seen: list[AppContext] = []

    def on_ready(ctx: AppContext) -> None:
        seen.append(ctx)
        ready.set()

    receiver = Receiver(channel, ident)
    app = asyncio.ensure_future(run_app(config, install_signals=False, stop=stop, on_all_ready=on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        modbus = seen[0].endpoints["modbus"].removeprefix("modbus-tcp://")
        host, port = modbus.rsplit(":", 1)
        await asyncio.sleep(3.0)  # first decision, frames flowing
        receiver.take()
        await asyncio.sleep(seconds)
        idle = jitter_ms(receiver.take(), period)

        ctx = mp.get_context("spawn")
        counter = ctx.Value("q", 0)
        procs = [
            ctx.Process(target=load_client, args=(host, int(port), seconds, counter)) for _ in range(clients)
        ]
        for p in procs:
            p.start()
        await asyncio.sleep(1.0)  # let the clients connect
        receiver.take()
        await asyncio.sleep(max(1.0, seconds - 1.5))
        loaded = jitter_ms(receiver.take(), period)
        for p in procs:
            await asyncio.to_thread(p.join, seconds + 10)
        requests = counter.value
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await app
        receiver.close()

    def show(label: str, values: list[float]) -> None:
        print(
            f"{label:7s} periods={len(values):4d}  p50={percentile(values, 50):7.3f} ms  "
            f"p99={percentile(values, 99):7.3f} ms  max={max(values, default=float('nan')):7.3f} ms"
        )

    print(f"protocol {protocol}: id {ident:#x} every {period * 1000:.0f} ms; {clients} Modbus clients")
    show("idle", idle)
    show("loaded", loaded)
    print(f"modbus  {requests / max(seconds - 1.5, 1.0):.0f} requests/s during the loaded phase")
    if statistics.fmean(loaded or [0.0]) > 1000 * period:
        print("warning: the loaded phase lost frames", file=sys.stderr)
    print(f"RESULT can_jitter_idle_p99_ms={percentile(idle, 99):.3f}")
    print(f"RESULT can_jitter_p99_ms={percentile(loaded, 99):.3f}")
    return 0


def _any_state() -> object:
    from gateway.app.config import PolicyConfig
    from gateway.core.controls import Controls
    from gateway.core.model import ModelStore
    from gateway.core.policy.engine import PolicyEngine

    store = ModelStore()
    return PolicyEngine(PolicyConfig()).evaluate(store.view, Controls().state(0.0), 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="sma", help="a cyclic protocol (default sma, 500 ms)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=4, help="Modbus load connections (processes)")
    args = parser.parse_args()
    return asyncio.run(bench(args.protocol, args.seconds, args.clients))


if __name__ == "__main__":
    sys.exit(main())
