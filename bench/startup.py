"""Start-up: from exec of `bms-gateway run` to the first Modbus/TCP answer and to `/readyz` 200.

The gateway is configured as on a real box: one bus of 15 Tianpower packs (a `bms-gateway simulate`
process at 9600 baud, started beforehand and not timed), the Modbus server, inverter CAN (python-can
`virtual`), MQTT to a private Mosquitto broker when installed, metrics and recording. Ports are
chosen before the exec, so the clients poll from the first millisecond: a Modbus client sends an
FC3 read every 2 ms until an answer arrives (any well-formed answer: data or 0x0B "no data yet"),
an HTTP client asks `/readyz` every 5 ms until it answers 200 (every service ready).

Each run starts a fresh process; best of `--repeat`, ours (a copy of this checkout) and the
baseline tree (`benchlib.BASELINE_REV`) interleaved in the same run. Both trees are byte-compiled
first, as `pip install` does (`--from-source` skips that: then every start compiles every module,
which is what a checkout run with PYTHONDONTWRITEBYTECODE=1 pays). Also prints the ten slowest imports of one
run of each (`python -X importtime`, cumulative).

Last lines: `RESULT startup_modbus_s=...`, `RESULT startup_ready_s=...` (ours, best).
Usage: .venv/bin/python bench/startup.py [--repeat 5] [--baseline REV|none]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

PACKS = 15


def config(tmp: Path, name: str, sim_port: int, mqtt_port: int | None) -> tuple[Path, int, int]:
    http, modbus = benchlib.free_port(), benchlib.free_port()
    lines = [
        f'state_dir = "{tmp}/{name}"',
        'log_level = "warning"',
        "[http]",
        f'listen = "127.0.0.1:{http}"',
        "[modbus]",
        f'listen = "127.0.0.1:{modbus}"',
        "[can]",
        "enabled = true",
        'interface = "virtual"',
        f'channel = "startup-{name}-{os.getpid()}"',
        'protocol = "pylon"',
    ]
    if mqtt_port is not None:
        lines += ["[mqtt]", "enabled = true", f'url = "mqtt://127.0.0.1:{mqtt_port}"']
        lines += [f'client_id = "startup-{name}"', f'base_topic = "startup-{name}"']
    lines += ["[[bus]]", 'name = "b"', f'url = "socket://127.0.0.1:{sim_port}"', 'protocol = "tianpower"']
    lines.append(f"addresses = {list(range(1, PACKS + 1))}")
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, http, modbus


def first_modbus_answer(port: int, t0: float, deadline: float) -> float:
    request = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 40000, 2)
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(request)
                head = s.recv(9)
                if len(head) >= 9 and head[:2] == b"\x00\x01":
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.002)
    return float("nan")


def first_ready(port: int, t0: float, deadline: float) -> float:
    url = f"http://127.0.0.1:{port}/readyz"
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)
    return float("nan")


def one_run(tree: Path, cfg: Path, http: int, modbus: int) -> tuple[float, float, float]:
    """(s to the first Modbus answer, s to /readyz 200, CPU s the process used until then)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    results: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        benchlib.gateway_cmd("run", "--config", str(cfg)),
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = t0 + 30
        threads = [
            threading.Thread(
                target=lambda: results.__setitem__("m", first_modbus_answer(modbus, t0, deadline))
            ),
            threading.Thread(target=lambda: results.__setitem__("r", first_ready(http, t0, deadline))),
        ]
        for t in threads:
            t.start()
        threads[1].join()
        results["cpu"] = benchlib.cpu_s(proc.pid)  # the work of starting, whatever the machine's load
        threads[0].join()
    finally:
        benchlib.stop(proc)  # type: ignore[arg-type]
    return results["m"], results["r"], results["cpu"]


def import_top(tree: Path, cfg: Path, n: int = 10) -> list[tuple[float, str]]:
    """The `n` slowest imports (cumulative ms) of one start, stopped once ready."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", *benchlib.gateway_cmd("run", "--config", str(cfg))[1:]],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        time.sleep(5.0)
        benchlib.stop(proc)  # type: ignore[arg-type]
        err.seek(0)
        rows: list[tuple[float, str]] = []
        total = 0.0
        for line in err:
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            _, cum, name = line.split(":", 1)[1].split("|")
            rows.append((int(cum) / 1000, name.rstrip()))
            if not name.startswith("  "):
                total += int(cum) / 1000
    rows.sort(reverse=True)
    return [(total, "(all imports)"), *rows[:n]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="starts per tree; the best counts")
    parser.add_argument("--baseline", default=benchlib.BASELINE_REV, help="git revision, or 'none'")
    parser.add_argument(
        "--imports", action="store_true", help="also list the 10 slowest imports of each tree"
    )
    parser.add_argument(
        "--from-source",
        action="store_true",
        help="do not byte-compile the trees first (every start compiles every module, as a checkout "
        "run with PYTHONDONTWRITEBYTECODE=1 does)",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        benchlib.working_tree_copy() as ours,
        benchlib.baseline_tree(args.baseline) as base,
        benchlib.mosquitto() as mqtt_port,
        benchlib.simulator(PACKS) as sim_port,
    ):
        tmp = Path(tmpdir)
        trees = {"ours": ours}
        if base is not None:
            trees["baseline"] = base
        for tree in trees.values():
            if not args.from_source:
                benchlib.compile_tree(tree)
        how = "from source" if args.from_source else "byte-compiled as by pip install"
        best: dict[str, tuple[float, float, float]] = {}
        print(f"machine: {benchlib.machine()}")
        for i in range(args.repeat):
            for name, tree in trees.items():
                cfg, http, modbus = config(tmp, f"{name}{i}", sim_port, mqtt_port)
                m, r, cpu = one_run(tree, cfg, http, modbus)
                old = best.get(name, (float("inf"), float("inf"), float("inf")))
                best[name] = (min(old[0], m), min(old[1], r), min(old[2], cpu))
        tops = {}
        if args.imports:
            for name, tree in trees.items():
                cfg, _, _ = config(tmp, f"{name}-imports", sim_port, mqtt_port)
                tops[name] = import_top(tree, cfg)
    print(f"best of {args.repeat} starts (15 packs, Modbus, CAN, MQTT, metrics, recording); {how}")
    print(f"{'tree':<10} {'first Modbus answer s':>22} {'/readyz 200 s':>14} {'CPU s until ready':>18}")
    for name, (m, r, cpu) in best.items():
        print(f"{name:<10} {m:>22.3f} {r:>14.3f} {cpu:>18.3f}")
    for name, rows in tops.items():
        print(f"\nslowest imports, {name} (cumulative ms, python -X importtime):")
        for ms, mod in rows:
            print(f"  {ms:8.1f}  {mod.strip()}")
    if "baseline" in best:
        print(f"RESULT startup_modbus_baseline_s={best['baseline'][0]:.3f}")
        print(f"RESULT startup_ready_baseline_s={best['baseline'][1]:.3f}")
        print(f"RESULT startup_cpu_baseline_s={best['baseline'][2]:.3f}")
    print(f"RESULT startup_cpu_s={best['ours'][2]:.3f}")
    print(f"RESULT startup_modbus_s={best['ours'][0]:.3f}")
    print(f"RESULT startup_ready_s={best['ours'][1]:.3f}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
