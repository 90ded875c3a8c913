"""The CLI as people use it, against a served gateway process (issue 17): `bms-gateway watch` (a live
INFO view over the HTTP API) renders once (`--once`) and refreshes on a terminal (a pseudo-terminal
here); `admin history pull` follows the download over one server-sent-events request, so a token
with a small rate limit no longer fails with 429 while the job goes on (defect 10); a spinner on
stderr while a call runs (terminal only, never with --json); parameter files by extension, XLSX,
per-pack state left out (defect 4); times local with zone, JSON with ISO and epoch (defect 5);
refusals in the CLI's words with the import's row numbers (defect 9)."""

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
    # 30 requests per minute and token: the CLI used to poll the job list twice a second
    with served_gateway(
        tmp_path_factory.mktemp("served"), rate=30, simulator_extra="history_records = 400"
    ) as gw:
        yield gw


@pytest.fixture(autouse=True)
def own_token(served: Served) -> None:
    served.new_token()  # every test starts with a full rate-limit budget


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
    assert re.search(r"│ sim/1 +│ done +│ 4\d\d +│ 4\d\d +│ 0 +│", r.out), r.out
    assert "429" not in r.err
    # the download lasted long enough for the old twice-a-second polling to exceed 30 requests/min
    assert elapsed > 16.0, f"the download took only {elapsed:.1f} s: not a test of the rate limit"
    assert not any(line.startswith("{") for line in r.out.splitlines())
    lines = served.cli("bms-gateway admin history pull sim/1 --restart --json")
    assert lines.code == 0, lines
    docs = [line for line in lines.out.splitlines() if line.startswith("{")]
    assert len(docs) >= 2 and '"state": "done"' in docs[-1]


def run_on_pty(served: Served, argv: list[str], timeout_s: float = 60) -> tuple[int, bytes]:
    main, child = pty.openpty()
    env = {**served.env, "COLUMNS": "160", "LINES": "60", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(BIN), *argv], stdin=child, stdout=child, stderr=child, env=env, close_fds=True
    )
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(10), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(main)


def test_a_spinner_on_a_terminal_while_the_gateway_works_and_none_in_json(served: Served) -> None:
    code, seen = run_on_pty(served, ["admin", "params", "get", "pace/1", "--fresh"])
    assert code == 0, seen[-2000:]
    assert b"waiting for the gateway" in seen and b"Cell_OV_Alarm" in seen and b"Cell OV Alarm" in seen
    code, seen = run_on_pty(served, ["admin", "params", "get", "pace/1", "--fresh", "--json"])
    assert code == 0 and b"waiting for the gateway" not in seen
    piped = served.cli("bms-gateway admin params get pace/1")  # not a terminal: tables only
    assert piped.code == 0 and "waiting" not in piped.err + piped.out


def test_parameter_files_by_extension_xlsx_and_per_pack_state(served: Served) -> None:
    for ext in ("json", "csv", "xml", "xlsx"):
        r = served.cli(f"bms-gateway admin params export sim/1 -o p1.{ext}")
        assert r.code == 0, r
        assert f"wrote p1.{ext} ({ext})" in r.err
    assert (served.cwd / "p1.json").read_text().lstrip().startswith("{")
    assert (served.cwd / "p1.xml").read_text().startswith("<?xml")
    assert (served.cwd / "p1.xlsx").read_bytes().startswith(b"PK")
    for ext in ("json", "csv", "xml"):
        assert "Set_Remaining_capacity" not in (served.cwd / f"p1.{ext}").read_text()
    bad = served.cli("bms-gateway admin params export sim/1 -o p1.txt")
    assert bad.code == 2 and "name the file .json, .csv, .xml or .xlsx" in bad.err
    # cloning pack 1's workbook onto pack 2 leaves pack 2's own capacities alone
    preview = served.cli("bms-gateway admin params import sim/2 p1.xlsx")
    assert preview.code == 0, preview
    assert "Set_Remaining_capacity" not in preview.out and "Set_Full_charge_capacity" not in preview.out
    full = served.cli("bms-gateway admin params export sim/1 -o all.csv --per-pack-state")
    assert full.code == 0 and "Set_Remaining_capacity" in (served.cwd / "all.csv").read_text()
    skipped = served.cli("bms-gateway admin params import sim/2 all.csv")
    assert skipped.code == 0, skipped
    assert re.search(r"skipped row \d+: Set_Full_charge_capacity is this pack's own state", skipped.out)
    assert "(--per-pack-state writes them)" in skipped.out
    included = served.cli("bms-gateway admin params import sim/2 all.csv --per-pack-state")
    assert included.code == 0 and "Set_Remaining_capacity" in included.out


def test_refusals_name_cli_flags_and_import_rows(served: Served) -> None:
    text = "No.,Name,Data,Unit,Set Range\n1,CELL_OV_Start,9.9,V,1/6\n2,NO_SUCH,1,,\n3,CELL_OV_Delay,abc,ms,\n"
    (served.cwd / "bad.csv").write_text(text)
    r = served.cli("bms-gateway admin params import sim/1 bad.csv")
    assert r.code == 4, r
    assert "row 1: CELL_OV_Start: 9.9 V is outside the allowed range 1..6 V" in r.err
    assert (
        "row 2: unknown parameter 'NO_SUCH'" in r.err
        and "row 3: CELL_OV_Delay: 'abc' is not a number" in r.err
    )
    r = served.cli("bms-gateway admin history delete sim/1")
    assert r.code == 4 and "--confirm" in r.err and 'confirm = "DELETE"' not in r.err
    r = served.cli("bms-gateway admin params set sim/1 CELL_OV_Start=3.64")
    assert r.code == 4 and "--allow-inferred" in r.err and '"allow_inferred"' not in r.err


def test_times_local_with_zone_in_tables_iso_and_epoch_in_json(served: Served) -> None:
    import json as _json

    r = served.cli("bms-gateway admin clock read --json")
    assert r.code == 0, r
    pack = _json.loads(r.out)["packs"][0]
    assert isinstance(pack["pack_time"], float) and pack["pack_time_iso"].endswith("+01:00")
    r = served.cli("bms-gateway admin audit --json --limit 1")
    entry = _json.loads(r.out)[0]
    assert isinstance(entry["at"], float) and entry["at_iso"].endswith("+01:00")
    assert "1.79" not in served.cli("bms-gateway admin audit --limit 5").out  # no epoch in the table
