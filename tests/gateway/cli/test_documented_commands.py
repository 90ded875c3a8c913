"""Every command of docs/admin.md, docs/history.md and docs/firmware.md, typed as written, in its
human (table) mode, against a served gateway: `bms-gateway run` on its built-in simulator (Tianpower
packs sim/1..3) plus a PACE pack pace/1 from `bms-gateway simulate`, over real sockets (issue 17:
the tests drove the API or --json, and every single-pack write crashed the table output).

The commands are read from the documents' shell blocks, so a command added to the docs without an
expectation here fails the test (and an expectation whose command left the docs fails too). Only
placeholders are replaced: the configuration path (`...`, `/etc/bms-gateway/config.toml`), the
token id `ID` and the firmware job id of the docs' example.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.served import ROOT, Result, Served, served_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DOCS = ("docs/admin.md", "docs/history.md", "docs/firmware.md")
DOC_JOB_ID = "3f2a9c01d4e7"
ZONE = "+01:00"  # TZ=Europe/Berlin in December (tests/support/served.py)


def doc_commands(path: Path) -> list[str]:
    """`bms-gateway ...` lines of the untyped or `sh` code blocks, without trailing comments."""
    out: list[str] = []
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("```"):
            fence = None if fence is not None else text[3:].strip()
            continue
        if fence in ("", "sh") and text.startswith("bms-gateway "):
            out.append(re.sub(r"\s+#.*$", "", text).strip())
    return out


@dataclass(frozen=True)
class Expect:
    code: int
    stdout: tuple[str, ...] = ()  # regular expressions that must all match stdout
    stderr: tuple[str, ...] = ()
    check: Callable[[Result, Served], None] | None = None


TABLE_WRITE = r"┃ Pack +┃ Item +┃ Requested +┃ Before +┃ After +┃ Outcome"


def no_float_noise(_r: Result, served: Served) -> None:
    """Values carry their unit's resolution, nothing like 0.0009999999999998899 (defect 5)."""
    import httpx

    def walk(obj: object, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]")
        elif isinstance(obj, float) and not re.search(r"(_at|age_s|uptime_s|_duration_s|drift_s)$", path):
            assert len(repr(obj).partition(".")[2]) <= 4, f"{path} = {obj!r}"

    walk(httpx.get(f"{served.url}/api/packs", timeout=10).json(), "packs")
    walk(httpx.get(f"{served.url}/api/system", timeout=10).json()["bank"], "bank")


def exported_xml(_r: Result, served: Served) -> None:
    text = (served.cwd / "pack1.xml").read_text()
    assert "<Name>CELL_OV_Start</Name>" in text
    assert "Set_Remaining_capacity" not in text and "Set_Full_charge_capacity" not in text  # defect 4


EXPECT: dict[str, Expect] = {
    # ---- docs/admin.md: tokens --------------------------------------------------------------------
    'bms-gateway token create --role admin --config /etc/bms-gateway/config.toml --label "ems"': Expect(
        0, (r"^bmsg_[0-9a-f]+_\S+$",), (r"created token [0-9a-f]+ with role admin",)
    ),
    "bms-gateway token list --config ...": Expect(0, (r"\tadmin\tactive\tems", r"\tfactory\tactive\ttests")),
    "bms-gateway token revoke ID --config ...": Expect(0, (r"^revoked [0-9a-f]+$",)),
    # ---- docs/admin.md: the admin CLI -------------------------------------------------------------
    "bms-gateway admin whoami": Expect(0, (r"token [0-9a-f]+ role factory \(tests\)",)),
    "bms-gateway admin params get sim/1": Expect(
        0,
        (
            r"sim/1 \(tianpower, ",
            r"┃ No\. +┃ Name +┃ (Tool label +┃ )?Value +┃ Unit +┃ Set Range",
            r"│ CELL_OV_Start +│ (\S+ +│ )?3\.7 ",
        ),
    ),
    "bms-gateway admin params all": Expect(0, (r"┃ Name +┃ Unit +┃ pace/1 +┃ sim/1 +┃ sim/2 +┃ sim/3",)),
    "bms-gateway admin params set sim/1 CELL_OV_Start=3.65 --dry-run": Expect(
        0,
        (TABLE_WRITE, r"│ sim/1 +│ CELL_OV_Start +│ 3\.65 +│ 3\.7 +│ +│ would_change", r"outcome: dry_run"),
        check=lambda r, s: (
            None if "--allow-inferred" in r.out and '"allow_inferred"' not in r.out else pytest.fail(r.out)
        ),
    ),
    # `all` includes the PACE pack, whose table has neither name: refused before anything is sent
    "bms-gateway admin params set all CELL_OV_Start=3.65 LC_Style=4 --allow-inferred": Expect(
        4, (), (r"422: pace: unknown parameter 'CELL_OV_Start'",)
    ),
    "bms-gateway admin params export sim/1 --format xml -o pack1.xml": Expect(
        0, (), (r"wrote pack1\.xml \(xml\) \(per-pack state left out",), exported_xml
    ),
    "bms-gateway admin params export sim/1 -o pack1.xlsx": Expect(
        0,
        (),
        (r"wrote pack1\.xlsx \(xlsx\)",),
        lambda r, s: (
            None if (s.cwd / "pack1.xlsx").read_bytes().startswith(b"PK") else pytest.fail("not xlsx")
        ),
    ),
    "bms-gateway admin params import sim/2 pack1.xml": Expect(
        0, (r"sim/2: \d+ change\(s\), \d+ unchanged", r"preview only: repeat with --apply")
    ),
    "bms-gateway admin params import sim/2 pack1.xml --apply --allow-inferred": Expect(
        0, (r"sim/2: \d+ change\(s\)",)
    ),
    "bms-gateway admin params load-origin sim/1 --dry-run": Expect(0, (TABLE_WRITE, r"outcome: dry_run")),
    "bms-gateway admin params set sim/1 CELL_OV_Delay=4000 --allow-inferred --force": Expect(
        0, (TABLE_WRITE, r"│ sim/1 +│ CELL_OV_Delay +│ 4000 +│", r"outcome: ok")
    ),
    "bms-gateway admin params table tianpower": Expect(
        0,
        (
            r"┃ Name +┃ Unit +┃ Set Range",
            r"│ LC_Style +│ +│ one of 0, 3, 4, 5, 10 +│ 4 ",
            r"0 = unlimited flow mode",
        ),
    ),
    "bms-gateway admin config capacities sim/1 --full 200 --nominal 200 --allow-inferred": Expect(
        0, (TABLE_WRITE, r"│ sim/1 +│ full_ah +│ 200", r"outcome: ok")
    ),
    "bms-gateway admin config cell-count sim/1 16 --confirm": Expect(
        0, (TABLE_WRITE, r"│ sim/1 +│ cells +│ 16 +│ 16 +│ +│ written", r"outcome: ok")
    ),
    "bms-gateway admin config serial sim/1 BG-0042": Expect(
        0,
        (TABLE_WRITE, r"│ sim/1 +│ serial +│ BG-0042 +│ \S+ +│ BG-0042 +│ verified", r"outcome: ok"),
    ),
    "bms-gateway admin config anti-theft sim/1 --comm on": Expect(0, (TABLE_WRITE, r"outcome: ok")),
    "bms-gateway admin config unlock sim/1": Expect(0, (TABLE_WRITE, r"outcome: ok")),
    "bms-gateway admin config pack-protocol pace/1 --can 1 --rs485 1 --mode manual": Expect(
        0, (TABLE_WRITE, r"│ pace/1 +│", r"outcome: ok")
    ),
    "bms-gateway admin control sim/1 charge_mos off": Expect(
        0, (TABLE_WRITE, r"│ sim/1 +│ charge_mos +│ False", r"verified", r"outcome: ok")
    ),
    "bms-gateway admin sleep sim/1": Expect(0, (TABLE_WRITE, r"│ sim/1 +│ forced_sleep", r"outcome: ok")),
    "bms-gateway admin clock read": Expect(
        0,
        (
            r"┃ Pack +┃ Pack time +┃ Drift s",
            rf"│ sim/1 +│ \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\{ZONE} +│ [+-]\d+\.\d",
        ),
        check=no_float_noise,
    ),
    "bms-gateway admin clock sync": Expect(
        0, (TABLE_WRITE, r"│ sim/3 +│ drift_s", r"outcome: ok; written: ")
    ),
    "bms-gateway admin protocol --can victron": Expect(
        0,
        (r"after: .*victron", r"persisted: True"),
        check=lambda r, s: (
            None if 'protocol = "victron"' in s.config.read_text() else pytest.fail("not persisted")
        ),
    ),
    "bms-gateway admin audit --limit 20": Expect(
        0, (r"┃ Id +┃ At +┃ Token", rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\{ZONE}", r"config\.serial")
    ),
    # ---- docs/history.md ----------------------------------------------------------------------------
    "bms-gateway admin history pull sim/1": Expect(
        0, (r"history download", r"│ sim/1 +│ done +│ \d+ +│ \d+ +│"), check=lambda r, s: _no_json(r)
    ),
    "bms-gateway admin history pull sim": Expect(
        0, (r"│ sim/1 +│ done", r"│ sim/2 +│ done", r"│ sim/3 +│ done")
    ),
    "bms-gateway admin history pull sim/1 --restart": Expect(0, (r"│ sim/1 +│ done",)),
    "bms-gateway admin history stop sim": Expect(0, (r"^stopped: 0 download\(s\)$",)),
    "bms-gateway admin history list --pack sim/1 "
    '--event "Timing record" --since 2024-05-01 --limit 50': Expect(
        0,
        (
            r"history records \(\d+ of \d+\)",
            r"┃ Serial +┃ Pack +┃ Time +┃ Event",
            rf"\{ZONE} +│ Timing record",
        ),
    ),
    "bms-gateway admin history export -o records.xlsx --pack sim "
    "--since 2024-05-01T00:00 --until 2024-06-01": (Expect(0, (r"^wrote records\.xlsx$",))),
    "bms-gateway admin history interval sim/1": Expect(0, (r"^sim/1: storage interval \d+ min$",)),
    "bms-gateway admin history interval sim/1 30": Expect(
        0, (r"^sim/1: storage interval \d+ -> 30 min \(ok\)$",)
    ),
    "bms-gateway admin history record-time sim/1 --start 2024-05-01T08:00:00": Expect(
        0, (r"^sim/1: records from 2024-05-01T08:00:00 to ",)
    ),
    "bms-gateway admin history delete sim/1 --confirm": Expect(
        4, (), (r"409: tianpower: deleting the records stored in the pack is not supported",)
    ),
    "bms-gateway admin record export -o today.xlsx --since 2024-05-09T00:00 sim/1 sim/2": Expect(
        0, (r"^wrote today\.xlsx$",)
    ),
    "bms-gateway admin record interval": Expect(0, (r"^recording interval 1 s$",)),
    "bms-gateway admin record interval 5": Expect(
        0, (r"^recording interval 1 -> 5 s \(until restart; \[recording\] interval_s keeps it\)$",)
    ),
    # ---- docs/firmware.md ---------------------------------------------------------------------------
    "bms-gateway firmware-image -o new-firmware.bgfw "
    "--target HY-PT003-B200LT55 --version HY-PT003-B200LT55-V1.1.0": (
        Expect(0, (r"^wrote new-firmware\.bgfw: tianpower HY-PT003-B200LT55-V1\.1\.0 for HY-PT003-B200LT55",))
    ),
    "bms-gateway admin firmware flash sim/1 new-firmware.bgfw": Expect(
        0,
        (r"^sim/1: done: upgraded from 'HY-PT003-B200LT55-V1\.0\.3' to 'HY-PT003-B200LT55-V1\.1\.0'$",),
        check=lambda r, s: _no_json(r),
    ),
    "bms-gateway admin firmware status": Expect(
        0, (r"┃ Job +┃ Pack +┃ State", r"│ sim/1 +│ done +│ confirm")
    ),
    # the docs' job id stands for the job of the second image (started below): running, then aborted
    f"bms-gateway admin firmware status {DOC_JOB_ID}": Expect(0, (r"│ sim/2 +│ (running|pending) ",)),
    f"bms-gateway admin firmware abort {DOC_JOB_ID}": Expect(0, (r"^job [0-9a-f]{12}: aborted: ",)),
    f"bms-gateway admin firmware resume {DOC_JOB_ID}": Expect(
        0, (r"^sim/2: done: upgraded from 'HY-PT003-B200LT55-V1\.0\.3' to 'HY-PT003-B200LT55-V1\.2\.0'$",)
    ),
}

# Commands that change a pack so that later documented commands could not run on it: run last.
LAST = ("bms-gateway admin sleep sim/1",)


def _no_json(r: Result) -> None:
    assert not any(line.startswith("{") for line in r.out.splitlines()), "human mode printed JSON lines"


def test_every_documented_command_has_an_expectation() -> None:
    documented = [c for d in DOCS for c in doc_commands(ROOT / d)]
    assert len(documented) == len(set(documented)), "a command is documented twice"
    assert set(documented) == set(EXPECT), {
        "documented, not tested": sorted(set(documented) - set(EXPECT)),
        "tested, no longer documented": sorted(set(EXPECT) - set(documented)),
    }


def test_every_documented_command_as_typed_in_human_mode(tmp_path: Path) -> None:
    documented = [c for d in DOCS for c in doc_commands(ROOT / d)]
    order = [c for c in documented if c not in LAST] + [c for c in documented if c in LAST]
    with served_gateway(tmp_path, simulator_extra="history_records = 40") as served:
        revoke_id = ""
        for line in order:
            typed = (
                line.replace("/etc/bms-gateway/config.toml", str(served.config))
                .replace("--config ...", f"--config {served.config}")
                .replace(" ID ", f" {revoke_id} ")
            )
            if DOC_JOB_ID in typed:
                typed = typed.replace(DOC_JOB_ID, _second_job(served))
            result = served.cli(typed)
            expect = EXPECT[line]
            assert result.code == expect.code, f"{typed}\n{result}"
            assert "Traceback" not in result.err, f"{typed}\n{result}"
            for pattern in expect.stdout:
                assert re.search(pattern, result.out, re.M), f"{typed}: stdout lacks {pattern!r}\n{result}"
            for pattern in expect.stderr:
                assert re.search(pattern, result.err, re.M), f"{typed}: stderr lacks {pattern!r}\n{result}"
            if expect.check is not None:
                expect.check(result, served)
            if line.startswith("bms-gateway token create"):
                revoke_id = result.out.strip().split("_")[1]


_jobs: dict[str, str] = {}


def _second_job(served: Served) -> str:
    """A second upgrade (of sim/2, a larger image) started without waiting: the job the docs' id
    stands for, so `status`, `abort` and `resume` act on a job that is really running."""
    key = str(served.cwd)
    if key not in _jobs:
        made = served.cli(
            "bms-gateway firmware-image -o v2.bgfw --target HY-PT003-B200LT55 "
            "--version HY-PT003-B200LT55-V1.2.0 --size 40000"
        )
        assert made.code == 0, made
        started = served.cli("bms-gateway admin firmware flash sim/2 v2.bgfw --no-wait --json")
        assert started.code == 0, started
        _jobs[key] = json.loads(started.out)["id"]
    return _jobs[key]
