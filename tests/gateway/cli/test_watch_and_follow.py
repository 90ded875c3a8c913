"""`bms-gateway watch` (a live INFO view over the HTTP API) and long CLI operations that follow a job,
against a served gateway process (issue 17): the watch view renders once (`--once`) and refreshes
on a terminal (a pseudo-terminal here); `admin history pull` follows the download over one
server-sent-events request, so a token with a small rate limit no longer fails with 429 while the
job goes on (defect 10)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.served import BIN, Served, served_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # 6 requests per minute: the CLI used to poll the job list twice a second
    with served_gateway(
        tmp_path_factory.mktemp("watch"), rate=6, simulator_extra="history_records = 200"
    ) as gw:
        yield gw


def test_watch_once_shows_cells_flags_bank_and_policy(served: Served) -> None:
    r = served.cli("bms-gateway watch --once sim/2")
    assert r.code == 0, r
    out = r.out
    assert re.search(r"^Bank: 4/4 online +\d+\.\d\d V", out, re.M), out
    assert re.search(
        r"^Policy: CVL \d+\.\d V +CCL \d+\.\d A +DCL \d+\.\d A +DVL \d+\.\d V +charge on", out, re.M
    )
    assert re.search(r"sim/2 +online +data \d+\.\d s old +SN \S+", out), out
    assert re.search(r"cells: min \d\.\d{3} V \(#\d+\) +max \d\.\d{3} V \(#\d+\) +diff \d+ mV", out), out
    assert re.search(r"#\d+ +\d\.\d{3} max", out) and re.search(r"#\d+ +\d\.\d{3} min", out), out
    assert "temperatures: cell1 " in out and "charge MOS on" in out
    assert "no protection, alarm or fault active" in out
    assert "sim/1" not in out.split("Policy:")[1]  # only the pack asked for
    every = served.cli("bms-gateway watch --once")
    assert every.code == 0 and all(f"{p}  online" in every.out for p in ("sim/1", "sim/3", "pace/1"))
    unknown = served.cli("bms-gateway watch --once sim/9")
    assert unknown.code == 2 and "no pack sim/9" in unknown.err


def test_watch_refreshes_on_a_terminal_until_interrupted(served: Served) -> None:
    main, child = pty.openpty()
    env = {**served.env, "COLUMNS": "160", "LINES": "60", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(BIN), "watch", "sim/1", "--interval", "0.5"],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen.count(b"Policy: CVL") < 3:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
        assert seen.count(b"Policy: CVL") >= 3, seen[-2000:]  # the first frame and two refreshes
        assert b"sim/1" in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(main)


def test_history_pull_follows_over_one_request_within_a_small_rate_limit(served: Served) -> None:
    started = time.monotonic()
    r = served.cli("bms-gateway admin history pull sim/1")
    elapsed = time.monotonic() - started
    assert r.code == 0, r
    assert re.search(r"│ sim/1 +│ done +│ 2\d\d +│ 2\d\d +│ 0 +│", r.out), r.out
    assert "429" not in r.err
    # the download lasted long enough for the old twice-a-second polling to exceed 6 requests/min
    assert elapsed > 4.0, f"the download took only {elapsed:.1f} s: not a test of the rate limit"
    assert not any(line.startswith("{") for line in r.out.splitlines())
    lines = served.cli("bms-gateway admin history pull sim/1 --restart --json")
    assert lines.code == 0, lines
    docs = [line for line in lines.out.splitlines() if line.startswith("{")]
    assert len(docs) >= 2 and '"state": "done"' in docs[-1]
