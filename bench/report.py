"""`make bench`: run every bench, then print one table of every figure with its baseline and ratio.

Each bench measures its baseline in the same run (a C server, pymodbus, the gateway before issue
19, the idle phase, the wire-time minimum) and prints `RESULT name=value` lines; this script runs
them one after another (never two at once), collects those lines and prints a Markdown table:
figure, ours, baseline, ratio, goal, and the command that measured it. The machine and its load
average are printed first: on a shared machine the ratios are the figures to compare.

Usage: .venv/bin/python bench/report.py [--skip history_download,...] [--only modbus_vs_c,...]
A bench that fails or is skipped leaves its rows empty ("n/a"); the exit code is 1 if one failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

BENCHES: dict[str, list[str]] = {  # name -> arguments (defaults are the documented runs)
    "modbus_vs_c": [],
    "modbus_throughput": [],
    "cpu_outputs": [],
    "startup": ["--imports"],
    "startup_account": [],
    "can_jitter": ["--all-at-once"],
    "poll_efficiency": [],
    "history_download": [],
}


@dataclass(frozen=True)
class Row:
    figure: str
    bench: str
    ours: str  # RESULT key of our figure
    baseline: str | None  # RESULT key of the baseline, or None
    baseline_label: str
    unit: str
    goal: str
    ratio_is_figure: bool = False  # the bench prints the ratio itself (ours = the ratio key)


ROWS = [
    Row("Modbus/TCP 1 client, req/s", "modbus_vs_c", "modbus_ours_1_rps", "modbus_c_1_rps",
        "libmodbus C", "req/s", "ratio >= 1.0"),
    Row("Modbus/TCP 8 clients, req/s", "modbus_vs_c", "modbus_ours_8_rps", "modbus_c_8_rps",
        "libmodbus C", "req/s", "ratio >= 1.0"),
    Row("Modbus/TCP 8 clients, stdlib loop", "modbus_vs_c", "modbus_ours_asyncio_8_rps", "modbus_c_8_rps",
        "libmodbus C", "req/s", "(informative)"),
    Row("Modbus/TCP 8 clients vs pymodbus", "modbus_throughput", "modbus_ours_py_8_rps",
        "modbus_pymodbus_8_rps", "pymodbus 3 server", "req/s", "ratio >= 3"),
    Row("CPU, 15 packs, every output", "cpu_outputs", "cpu_all_pct", "cpu_all_baseline_pct",
        f"gateway @ {benchlib.BASELINE_REV}", "% of 1 core", "<= 3 %"),
    Row("RSS, 15 packs, every output (+3 UI pollers)", "cpu_outputs", "rss_all_mib", "rss_all_baseline_mib",
        f"gateway @ {benchlib.BASELINE_REV}", "MiB", "<= 80 MB"),
    Row("exec -> first Modbus answer", "startup", "startup_modbus_s", "startup_modbus_baseline_s",
        f"gateway @ {benchlib.BASELINE_REV}", "s", "<= 0.5 s"),
    Row("exec -> /readyz 200", "startup", "startup_ready_s", "startup_ready_baseline_s",
        f"gateway @ {benchlib.BASELINE_REV}", "s", "<= 0.5 s"),
    Row("CPU time from exec to /readyz 200", "startup", "startup_cpu_s", "startup_cpu_baseline_s",
        f"gateway @ {benchlib.BASELINE_REV}", "s", "(informative: load-independent)"),
    Row("start-up work, one thread: ours vs third-party imports", "startup_account",
        "startup_account_ours_s", "startup_account_third_party_s",
        "the third-party imports alone", "s", "(informative: the floor)"),
    Row("CAN period jitter p99, everything at once", "can_jitter", "can_jitter_all_p99_ms",
        "can_jitter_idle_p99_ms", "same process idle", "ms", "<= 2 ms"),
    Row("RS485 poll efficiency (min over 1/4/15 packs)", "poll_efficiency", "poll_efficiency", None,
        "wire-time minimum", "", "(informative)", ratio_is_figure=True),
    Row("RS485 cycle with one silent pack", "poll_efficiency", "silent_pack_ratio", None,
        "wire-time minimum of the healthy packs", "", ">= 0.9 (issue 17)", ratio_is_figure=True),
    Row("History download, wire efficiency", "history_download", "history_wire_efficiency", None,
        "wire-time minimum", "", "(informative)", ratio_is_figure=True),
]  # fmt: skip


def run(name: str, args: list[str]) -> tuple[dict[str, float], float, int]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(benchlib.ROOT / "bench" / f"{name}.py"), *args],
        cwd=benchlib.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stdout.write(proc.stderr[-3000:])
    return parse(proc.stdout), time.monotonic() - t0, proc.returncode


def parse(output: str) -> dict[str, float]:
    """The `RESULT name=value` lines of a bench's output."""
    results: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("RESULT "):
            key, _, value = line[len("RESULT ") :].partition("=")
            try:
                results[key.strip()] = float(value.split()[0])
            except ValueError:
                continue
    return results


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s",):
        return f"{value:,.0f} {unit}"
    if unit in ("s",):
        return f"{value:.3f} s"
    return f"{value:g} {unit}".strip()


def table(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| figure | ours | baseline (same run) | ratio | goal | command |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        got = results.get(row.bench, {})
        ours = got.get(row.ours)
        base = got.get(row.baseline) if row.baseline else None
        if row.ratio_is_figure:
            ratio = ours
            ours_s = fmt(ours, "")
            base_s = row.baseline_label
        else:
            ratio = None if ours is None or base in (None, 0) else ours / base  # type: ignore[operator]
            ours_s = fmt(ours, row.unit)
            base_s = f"{fmt(base, row.unit)} ({row.baseline_label})" if base is not None else "n/a"
        args = " ".join(BENCHES[row.bench])
        command = f"`python bench/{row.bench}.py{' ' + args if args else ''}`"
        ratio_s = "n/a" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {row.figure} | {ours_s} | {base_s} | {ratio_s} | {row.goal} | {command} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated bench names not to run")
    parser.add_argument("--only", default="", help="comma-separated bench names to run (default: all)")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="NAME=LOG",
        help="take a bench's RESULT lines from the saved output of an earlier run instead of running it",
    )
    args = parser.parse_args()
    reused = dict(item.split("=", 1) for item in args.reuse)
    skip = {n for n in args.skip.split(",") if n}
    only = {n for n in args.only.split(",") if n}
    print(f"machine: {benchlib.machine()}")
    results: dict[str, dict[str, float]] = {}
    failed = []
    for name, bench_args in BENCHES.items():
        if name in reused:
            results[name] = parse(Path(reused[name]).read_text(encoding="utf-8"))
            print(f"\n===== bench/{name}.py: RESULT lines reused from {reused[name]}")
            continue
        if name in skip or (only and name not in only):
            continue
        print(f"\n===== bench/{name}.py {' '.join(bench_args)}", flush=True)
        got, took, code = run(name, bench_args)
        results[name] = got
        print(f"===== {name}: {took:.0f} s, exit {code}", flush=True)
        if code != 0:
            failed.append(name)
    print(f"\nmachine at the end: {benchlib.machine()}\n")
    print("\n".join(table(results)))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
