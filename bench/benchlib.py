"""Shared pieces of the benches: processes, ports, the baseline tree, CPU and memory of a process.

Every bench compares against a baseline measured in the same run. For whole-gateway figures (CPU,
RSS, start-up) the baseline is the gateway at `BASELINE_REV` (the tree before issue 19's work),
extracted with `git archive` into a temporary folder and run with the same interpreter and
packages; `--baseline none` skips it (e.g. outside a git checkout).

Loopback only; processes are always stopped (terminate, then kill after a bound).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "9c28dcf"  # main after issue 15's move, before issue 19 (performance)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cpus ({model}), Python {sys.version.split()[0]}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


@contextlib.contextmanager
def baseline_tree(rev: str | None) -> Iterator[Path | None]:
    """The source tree at `rev` in a temporary folder (None: no baseline)."""
    if rev is None or rev.lower() == "none":
        yield None
        return
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        print(f"no git checkout: no baseline at {rev}")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bms-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "gateway", "protocol", "mappings", "simulator"],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            print(f"git archive {rev} failed: no baseline ({archive.stderr.decode().strip()[:200]})")
            yield None
            return
        path = Path(tmp) / "tree"
        path.mkdir()
        with tarfile.open(fileobj=_BytesIO(archive.stdout)) as tar:
            tar.extractall(path, filter="data")
        yield path


@contextlib.contextmanager
def working_tree_copy() -> Iterator[Path]:
    """This checkout's sources (uncommitted changes included) copied to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bms-ours-") as tmp:
        path = Path(tmp) / "tree"
        for package in ("gateway", "protocol", "mappings", "simulator"):
            shutil.copytree(ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__"))
        yield path


def compile_tree(path: Path) -> None:
    """Byte-compile a tree as `pip install` does at install time (a checkout run with
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module from source on every start)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(path)], check=True)


def _BytesIO(data: bytes) -> object:
    import io

    return io.BytesIO(data)


def gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli.main", *args]


@contextlib.contextmanager
def process(
    args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None, stderr: int | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A child process (stdout piped as text) that is always stopped on exit."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
    )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def read_line(proc: subprocess.Popen[str], prefix: str, timeout_s: float = 30.0) -> str:
    """The rest of the first stdout line starting with `prefix` (RuntimeError if the child exits)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited early")  # type: ignore[arg-type]
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"no {prefix!r} line")


def endpoints(proc: subprocess.Popen[str]) -> dict[str, str]:
    """The `name: where` lines `bms-gateway run` prints once every service is ready."""
    assert proc.stdout is not None
    read_line(proc, "bms-gateway ", timeout_s=60)
    found: dict[str, str] = {}
    while "system" not in found:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("gateway exited early")
        name, _, where = line.strip().partition(": ")
        found[name] = where
    return found


@contextlib.contextmanager
def simulator(
    packs: int, baud: int = 9600, profile: str = "cycle", history_records: int = 0
) -> Iterator[int]:
    """`bms-gateway simulate` with `packs` Tianpower packs paced at `baud`; yields its TCP port."""
    port = free_port()
    args = ["simulate", "--protocol", "tianpower", "--packs", str(packs), "--profile", profile]
    args += ["--listen", f"127.0.0.1:{port}", "--baud", str(baud), "--history-records", str(history_records)]
    with process(gateway_cmd(*args)) as proc:
        read_line(proc, "listen")
        yield port


@contextlib.contextmanager
def mosquitto() -> Iterator[int | None]:
    """A private Mosquitto broker on a free loopback port (None when mosquitto is not installed)."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        with process([exe, "-c", str(conf)]):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    break
                time.sleep(0.05)
            yield port


def py_spy(pid: int, svg: Path, seconds: float, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start py-spy recording `pid` into `svg` (flame graph) and `svg`.txt (collapsed stacks).

    Returns the flame-graph recorder; the collapsed-stack one runs beside it. Needs py-spy
    (`pip install 'bms-gateway[bench]'`) and ptrace rights on `pid`.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    svg.parent.mkdir(parents=True, exist_ok=True)
    common = [
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        str(rate),
        "--nonblocking",
    ]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.Popen([spy, "record", "-o", str(svg.with_suffix(".txt")), "--format", "raw", *common], **quiet)
    return subprocess.Popen([spy, "record", "-o", str(svg), "--format", "flamegraph", *common], **quiet)
