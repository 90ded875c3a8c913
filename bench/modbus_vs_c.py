"""Modbus/TCP: our server vs a libmodbus C server, same C load generator, same run.

Processes, so that no side borrows another's interpreter:
- `bms-gateway simulate`: 4 Tianpower packs at 9600 baud, paced like the wire;
- `bms-gateway run` polling them continuously (gap 0) with the Modbus server on, once per event
  loop (`event_loop = "uvloop"` when uvloop is installed, and `"asyncio"`): the production process;
- `bench/c/modbus_server.c`: a minimal libmodbus server (one thread, select(), the pattern of
  libmodbus's own multi-client example) serving a copy of the gateway's SunSpec bank image, read
  from the gateway over Modbus at the start;
- `bench/c/modbus_load.c`: N threads, one connection each, FC3 reads of 125 registers at 40000
  back to back (one outstanding request per connection), every answer checked.

Each (server, clients) pair runs `--repeat` times interleaved; the best run counts. Prints req/s
and latency per server and client count, then `RESULT modbus_vs_c_1=<ours/C, 1 client>` and
`RESULT modbus_vs_c_8=<ours/C, 8 clients>` (ours = the production default loop).

The C files are built with gcc against libmodbus (Debian: `libmodbus-dev`). When they are missing
the bench installs them with apt-get if it runs as root, else it prints SKIP and exits 0.

Usage: .venv/bin/python bench/modbus_vs_c.py [--seconds 3] [--repeat 3] [--packs 4]
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "bench" / "c"
READ_ADDRESS = 40000
READ_COUNT = 125


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_toolchain() -> bool:
    return shutil.which("gcc") is not None and Path("/usr/include/modbus/modbus.h").exists()


def ensure_toolchain() -> str | None:
    """None when gcc and libmodbus are usable, else why not."""
    if have_toolchain():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "gcc and libmodbus-dev are needed (apt-get install gcc libmodbus-dev; not root here)"
    print("installing gcc and libmodbus-dev with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "gcc", "libmodbus-dev"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0 or not have_toolchain():
        return f"apt-get install gcc libmodbus-dev failed: {result.stderr.strip()[-300:]}"
    return None


def build(out: Path) -> tuple[Path, Path]:
    server, load = out / "modbus_server", out / "modbus_load"
    flags = ["-O2", "-Wall", "-Wextra"]
    subprocess.run(
        [
            "gcc",
            *flags,
            "-I/usr/include/modbus",
            "-o",
            str(server),
            str(C_DIR / "modbus_server.c"),
            "-lmodbus",
        ],
        check=True,
    )
    subprocess.run(["gcc", *flags, "-pthread", "-o", str(load), str(C_DIR / "modbus_load.c")], check=True)
    return server, load


def read_line(proc: subprocess.Popen[str], prefix: str, timeout_s: float = 30.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.args!r} exited early")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"no {prefix!r} line from {proc.args!r}")


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def gateway_config(tmp: Path, sim_port: int, packs: int, loop: str) -> Path:
    cfg = tmp / f"gateway-{loop}.toml"
    cfg.write_text(
        f'state_dir = "{tmp}/{loop}"\nevent_loop = "{loop}"\nlog_level = "warning"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[modbus]\nlisten = "127.0.0.1:0"\nrequest_rate_per_s = 1e9\nrequest_burst = 1000000\n'
        "max_connections = 64\n"
        "[recording]\nenabled = false\n"
        f'[[bus]]\nname = "b"\nurl = "socket://127.0.0.1:{sim_port}"\nprotocol = "tianpower"\n'
        f"addresses = {list(range(1, packs + 1))}\nrequest_gap_s = 0.0\nrealtime_interval_s = 0.05\n",
        encoding="utf-8",
    )
    return cfg


def endpoints(proc: subprocess.Popen[str]) -> dict[str, str]:
    """The `name: where` lines the gateway prints once ready."""
    assert proc.stdout is not None
    read_line(proc, "bms-gateway ")
    found: dict[str, str] = {}
    while "system" not in found:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("gateway exited early")
        name, _, where = line.strip().partition(": ")
        found[name] = where
    return found


def modbus_read(sock: socket.socket, tid: int, address: int, count: int) -> bytes | None:
    sock.sendall(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, address, count))
    head = _recv(sock, 9)
    if head[7] & 0x80:
        return None
    return _recv(sock, head[8])


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def bank_image(port: int) -> bytes:
    """The gateway's SunSpec bank image from 40000 on (whole reads until the map ends)."""
    image = b""
    address = READ_ADDRESS
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        tid = 0
        while True:
            count = READ_COUNT
            data = None
            while count >= 1:
                tid += 1
                data = modbus_read(s, tid & 0xFFFF, address, count)
                if data is not None:
                    break
                count //= 2
            if data is None:
                return image
            image += data
            address += count


def wait_online(port: int, packs: int, timeout_s: float = 60.0) -> None:
    """Until the bank image shows every pack (SunSpec 802 is only served with data)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, RuntimeError),
            socket.create_connection(("127.0.0.1", port), 2) as s,
        ):
            if modbus_read(s, 1, READ_ADDRESS, READ_COUNT) is not None:
                return
        time.sleep(0.2)
    raise RuntimeError("the gateway's bank unit never answered")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(load: Path, port: int, clients: int, seconds: float, pid: int | None = None) -> dict[str, float]:
    cpu0 = cpu_s(pid) if pid is not None else 0.0
    out = subprocess.run(
        [str(load), str(port), str(clients), str(seconds), str(READ_ADDRESS), str(READ_COUNT)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed on port {port}: {out.stderr.strip()}")
    words = out.stdout.split()
    result = {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}
    if pid is not None:  # server CPU per answered request: what the server costs, load or not
        result["cpu_us"] = 1e6 * (cpu_s(pid) - cpu0) / max(1.0, result["requests"])
    return result


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per (server, clients); best counts")
    parser.add_argument("--packs", type=int, default=4, help="simulated packs polled during the runs")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="SVG",
        help="also record a py-spy flame graph of ours under 8 clients (pip install 'bms-gateway[bench]')",
    )
    args = parser.parse_args()
    why = ensure_toolchain()
    if why is not None:
        print(f"SKIP modbus_vs_c: {why}")
        return 0
    loops = ["uvloop", "asyncio"] if uvloop_installed() else ["asyncio"]
    default_loop = loops[0]
    if len(loops) == 1:
        print("uvloop is not installed: ours runs on the stdlib loop only (pip install 'bms-gateway[fast]')")
    gw = [sys.executable, "-m", "gateway.cli.main"]
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        c_server, c_load = build(tmp)
        sim_ports: dict[str, int] = {}
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for loop in loops:
            sim_ports[loop] = free_port()
            sim = stack.enter_context(
                process(
                    *gw, "simulate", "--protocol", "tianpower", "--packs", str(args.packs), "--profile",
                    "cycle", "--listen", f"127.0.0.1:{sim_ports[loop]}", "--baud", "9600",
                )
            )  # fmt: skip
            read_line(sim, "listen")
            gateway = stack.enter_context(
                process(*gw, "run", "--config", str(gateway_config(tmp, sim_ports[loop], args.packs, loop)))
            )
            found = endpoints(gateway)
            ports[f"ours-{loop}"] = int(found["modbus"].rsplit(":", 1)[1])
            pids[f"ours-{loop}"] = gateway.pid
            wait_online(ports[f"ours-{loop}"], args.packs)
        image = bank_image(ports[f"ours-{default_loop}"])
        (tmp / "image.bin").write_bytes(image)
        c_port = free_port()
        c = stack.enter_context(
            process(str(c_server), str(c_port), str(READ_ADDRESS), str(tmp / "image.bin"))
        )
        read_line(c, "ready")
        ports["libmodbus"] = c_port
        pids["libmodbus"] = c.pid
        print(
            f"ours: bms-gateway run polling {args.packs} simulated packs at 9600 baud (gap 0), "
            f"bank image {len(image) // 2} registers; C: libmodbus {libmodbus_version()} select() server"
        )
        print(
            f"load: bench/c/modbus_load.c, FC3 x {READ_COUNT} at {READ_ADDRESS}, {args.seconds:g} s per run, "
            f"best of {args.repeat}; cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
        )
        time.sleep(2.0)  # identity and parameter reads at start are not the steady cycle
        best: dict[tuple[str, int], dict[str, float]] = {}
        for clients in (1, 8):
            for _ in range(args.repeat):
                for name, port in ports.items():
                    r = run_load(c_load, port, clients, args.seconds, pids[name])
                    if r["rps"] > best.get((name, clients), {"rps": -1.0})["rps"]:
                        best[(name, clients)] = r
        if args.profile is not None:
            profile(
                args.profile,
                pids[f"ours-{default_loop}"],
                c_load,
                ports[f"ours-{default_loop}"],
                args.seconds,
            )
    print()
    print(
        f"{'server':<16} {'clients':>7} {'req/s':>9} {'p50 us':>8} {'p99 us':>8}"
        f" {'cpu us/req':>10} {'vs C':>6}"
    )
    for (name, clients), r in best.items():
        ratio = r["rps"] / best[("libmodbus", clients)]["rps"]
        print(
            f"{name:<16} {clients:>7} {r['rps']:>9.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
            f" {r['cpu_us']:>10.1f} {ratio:>6.2f}"
        )
    print()
    for clients in (1, 8):
        ours, c_rps = best[(f"ours-{default_loop}", clients)]["rps"], best[("libmodbus", clients)]["rps"]
        print(f"RESULT modbus_ours_{clients}_rps={ours:.0f}")
        print(f"RESULT modbus_c_{clients}_rps={c_rps:.0f}")
        if "ours-asyncio" in ports and default_loop != "asyncio":
            print(f"RESULT modbus_ours_asyncio_{clients}_rps={best[('ours-asyncio', clients)]['rps']:.0f}")
        print(f"RESULT modbus_vs_c_{clients}={ours / c_rps:.2f}")
    return 0


def profile(svg: Path, pid: int, load: Path, port: int, seconds: float) -> None:
    """A py-spy flame graph (and the top frames as text next to it) of `pid` under 8 clients."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: no profile (pip install 'bms-gateway[bench]')")
        return
    svg.parent.mkdir(parents=True, exist_ok=True)
    duration = max(2, int(seconds * 2))
    common = ["--pid", str(pid), "--duration", str(duration), "--rate", "500", "--nonblocking"]
    rec = subprocess.Popen([spy, "record", "-o", str(svg), "--format", "flamegraph", *common],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    raw = svg.with_suffix(".txt")
    col = subprocess.Popen([spy, "record", "-o", str(raw), "--format", "raw", *common],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    run_load(load, port, 8, duration + 1)
    rec.wait(60)
    col.wait(60)
    print(f"profile: {svg} (flame graph), {raw} (collapsed stacks)")


def libmodbus_version() -> str:
    header = Path("/usr/include/modbus/modbus-version.h")
    with contextlib.suppress(OSError):
        for line in header.read_text().splitlines():
            if line.startswith("#define LIBMODBUS_VERSION_STRING"):
                return line.split('"')[1]
    return "?"


if __name__ == "__main__":
    sys.exit(main())
