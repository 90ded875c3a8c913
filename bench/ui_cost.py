"""What the web UI costs: the gateway's RSS and CPU with 15 simulated packs, without any browser
and with 3 headless Chromium pages open on the UI (live pages: Multi packs, Single pack, Parallel
group), plus start-up to the first HTTP answer with `[http] ui` on and off, page weight, and the
latency of a live update (model change -> value in the browser).

Real processes on 127.0.0.1: `bms-gateway simulate` (15 Tianpower packs, cycle profile) and
`bms-gateway run` polling it every second; Debian's chromium through Playwright
(`executable_path`, never a downloaded browser). RSS is the gateway's resident set (psutil), CPU its
user+system time over the window divided by the window.

Last line: `RESULT ui_rss_ratio=<with 3 browsers / without> ui_cpu_ratio=<...>`.

Usage: .venv/bin/python bench/ui_cost.py [--window 20] [--packs 15]
Bounded: about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

EXE = Path(sys.executable).parent / "bms-gateway"
LIVE_PAGES = ["info/multi", "info/single", "info/parallel"]


class Proc:
    def __init__(self, *args: str, cwd: Path) -> None:
        self.p = subprocess.Popen(
            [str(EXE), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.01)
        raise SystemExit(f"no {pattern!r} in:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.t.join(5)
        if self.p.stdout:
            self.p.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp: Path, sim_port: int, packs: int, ui: bool, http_port: int = 0) -> Path:
    cfg = tmp / f"gateway-{ui}.toml"
    cfg.write_text(
        f'state_dir = "state-{ui}"\n[[bus]]\nname = "sim"\nurl = "socket://127.0.0.1:{sim_port}"\n'
        f"addresses = {list(range(1, packs + 1))}\nrealtime_interval_s = 1.0\nrequest_gap_s = 0.005\n"
        f'[http]\nlisten = "127.0.0.1:{http_port}"\nui = {str(ui).lower()}\n'
        '[modbus]\nlisten = "127.0.0.1:0"\n'
    )
    return cfg


def first_answer_s(tmp: Path, sim_port: int, packs: int, ui: bool) -> float:
    """Process start -> first 200 from / (the UI) or /healthz (ui off), polled every 5 ms."""
    port = free_port()
    gw = Proc("run", "--config", str(config(tmp, sim_port, packs, ui, port)), cwd=tmp)
    path = "/ui/info/single" if ui else "/healthz"
    try:
        with httpx.Client() as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if c.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                        return time.monotonic() - gw.started
                except httpx.HTTPError:
                    time.sleep(0.005)
            raise SystemExit("no answer within 30 s:\n" + "\n".join(gw.lines[-20:]))
    finally:
        gw.stop()


def measure_without_ui(tmp: Path, sim_port: int, packs: int, window_s: float) -> tuple[float, float]:
    gw = Proc("run", "--config", str(config(tmp, sim_port, packs, False)), cwd=tmp)
    try:
        url = gw.wait_for(r"^http: (http://\S+)").group(1)
        wait_all_read(url)
        return usage(gw.p.pid, window_s)
    finally:
        gw.stop()


def wait_all_read(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        packs = httpx.get(url + "/api/packs", timeout=5).json()
        if all(p["telemetry"] for p in packs):
            break
        time.sleep(0.5)
    time.sleep(3)


def usage(pid: int, window_s: float) -> tuple[float, float]:
    """(RSS MiB at the end, CPU % over the window) of one process."""
    proc = psutil.Process(pid)
    t0, c0 = time.monotonic(), proc.cpu_times()
    time.sleep(window_s)
    t1, c1 = time.monotonic(), proc.cpu_times()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100.0
    return proc.memory_info().rss / 1048576, cpu


def page_weight(url: str) -> dict[str, tuple[int, int]]:
    out = {}
    with httpx.Client(base_url=url) as c:
        for page in [
            "info/single",
            "info/multi",
            "info/parallel",
            "info/record",
            "param",
            "config",
            "storage",
            "gateway",
        ]:
            html = c.get(f"/ui/{page}").content
            assets = re.findall(rb'(?:src|href)="(/ui/static/[^"?]+)', html)
            data = [html] + [c.get(a.decode()).content for a in assets]
            raw = sum(len(d) for d in data)
            gz = sum(len(gzip.compress(d)) for d in data)
            out[page] = (raw, gz)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=float, default=20.0, help="seconds per measurement window")
    ap.add_argument("--packs", type=int, default=15)
    args = ap.parse_args()
    chromium = os.environ.get("BMSG_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim = Proc(
            "simulate", "--packs", str(args.packs), "--listen", "127.0.0.1:0", "--profile", "cycle", cwd=tmp
        )
        try:
            port = int(sim.wait_for(r"listening: 127\.0\.0\.1:(\d+)").group(1))
            starts = {
                ui: min(first_answer_s(tmp, port, args.packs, ui) for _ in range(3)) for ui in (False, True)
            }
            rss_off, cpu_off = measure_without_ui(tmp, port, args.packs, args.window)
            gw = Proc("run", "--config", str(config(tmp, port, args.packs, True)), cwd=tmp)
            try:
                url = gw.wait_for(r"^http: (http://\S+)").group(1)
                wait_all_read(url)
                rss0, cpu0 = usage(gw.p.pid, args.window)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(
                        executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
                    )
                    pages = []
                    for path in LIVE_PAGES:
                        page = browser.new_context().new_page()
                        page.goto(f"{url}/ui/{path}")
                        pages.append(page)
                    time.sleep(5)
                    rss1, cpu1 = usage(gw.p.pid, args.window)
                    # live-update latency: the newest reading's age when it reaches the browser
                    lat = pages[0].evaluate(
                        """async () => { const out = []; const ctl = new AbortController();
                           const res = await fetch('/api/stream?interval_s=0.2', {signal: ctl.signal});
                           const rd = res.body.getReader(); const dec = new TextDecoder(); let buf = '';
                           while (out.length < 20) {
                             const {value} = await rd.read(); buf += dec.decode(value, {stream: true});
                             let i; while ((i = buf.indexOf('\\n\\n')) >= 0) {
                               const doc = JSON.parse(buf.slice(5, i)); buf = buf.slice(i + 2);
                               const newest = Math.max(...doc.packs.map(p => p.link.last_success_at || 0));
                               out.push(Date.now() / 1000 - newest); } }
                           ctl.abort(); return out.slice(1); }"""
                    )
                    browser.close()
                weight = page_weight(url)
            finally:
                gw.stop()
        finally:
            sim.stop()
    print(f"gateway with {args.packs} simulated packs polled every 1 s, window {args.window:.0f} s")
    print(f"{'':34}{'RSS MiB':>10}{'CPU %':>10}")
    print(f"{'UI off ([http] ui = false)':34}{rss_off:10.1f}{cpu_off:10.1f}")
    print(f"{'UI on, no browser':34}{rss0:10.1f}{cpu0:10.1f}")
    print(f"{'UI on, 3 browsers (live pages)':34}{rss1:10.1f}{cpu1:10.1f}")
    print(
        f"start-up to first answer: ui=false {starts[False]:.3f} s (/healthz), ui=true {starts[True]:.3f} s "
        "(the first page; best of 3)"
    )
    print(
        "live update latency (reading -> browser, stream at 0.2 s): "
        f"median {statistics.median(lat) * 1000:.0f} ms, "
        f"max {max(lat) * 1000:.0f} ms"
    )
    print("page weight (HTML + CSS + JS, raw / gzip):")
    for page, (raw, gz) in weight.items():
        print(f"  {page:16}{raw / 1024:7.1f} KiB {gz / 1024:7.1f} KiB")
    print(f"3 browsers vs UI on without browser: RSS x{rss1 / rss0:.3f}, CPU x{cpu1 / max(cpu0, 0.01):.3f}")
    print(
        f"UI on without browser vs UI off:    RSS x{rss0 / rss_off:.3f}, CPU x{cpu0 / max(cpu_off, 0.01):.3f}"
    )
    print(f"RESULT ui_rss_ratio={rss1 / rss0:.3f} ui_cpu_ratio={cpu1 / max(cpu0, 0.01):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
