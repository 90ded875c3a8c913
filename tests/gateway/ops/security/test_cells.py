"""Formula injection (issue 20, failure 3): an SN such as `=HYPERLINK("http://x","y")` (accepted by
the SN rule, and a pack may report any SN by itself) must never become a live formula in a file we
write. Every CSV/XLSX writer (history, recording, parameters, audit) goes through
`gateway.ops.security.cells`; the world test drives them through the CLI against a served gateway and
opens the files the way a spreadsheet would (csv module, openpyxl, the sheet XML)."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openpyxl
import pytest

from gateway.cli.main import main
from gateway.ops.admin.transfer import parse, render
from gateway.ops.history.export import to_csv, to_xlsx
from gateway.ops.security.auth import Role
from gateway.ops.security.cells import csv_cell, csv_uncell, is_dangerous
from mappings.bms.params import load_table
from tests.support.records_support import RecordsGateway

EVIL = '=HYPERLINK("http://x","y")'


@pytest.mark.parametrize(
    ("value", "dangerous"),
    [
        (EVIL, True),
        ("+cmd|' /C calc'!A0", True),
        ("-50/200", True),  # a set range is text
        ("@SUM(A1)", True),
        ("\tx", True),
        ("\r=1", True),
        ("-20.0", False),  # a number written as text stays a number
        ("+3.5e-2", False),
        ("BG-0042", False),
        ("", False),
    ],
)
def test_which_texts_a_spreadsheet_could_evaluate(value: str, dangerous: bool) -> None:
    assert is_dangerous(value) is dangerous
    assert csv_uncell(str(csv_cell(value))) == value  # the prefix is the only change, and reversible


def test_numbers_stay_numbers_in_both_formats(tmp_path: Path) -> None:
    header = ["n", "text"]
    rows = [[-50, "-50/200"], [-1.5, EVIL], [None, "#N/A"]]
    got = list(csv.reader(io.StringIO(to_csv(header, rows).decode())))
    assert got[1:] == [["-50", "'-50/200"], ["-1.5", "'" + EVIL], ["", "#N/A"]]
    path = tmp_path / "t.xlsx"
    path.write_bytes(to_xlsx(header, rows))
    wb = openpyxl.load_workbook(path)
    cells = [[(c.value, c.data_type) for c in row] for row in wb.active.iter_rows(min_row=2)]  # type: ignore[union-attr]
    assert cells == [[(-50, "n"), ("-50/200", "s")], [(-1.5, "n"), (EVIL, "s")], [(None, "n"), ("#N/A", "s")]]


def test_parameter_csv_set_ranges_are_text_and_import_round_trips() -> None:
    table = load_table("tianpower")
    values = {
        s.name: (s.min if s.min < 0 else (s.default if s.default is not None else s.max)) for s in table
    }
    text = render("csv", table, values, {})
    rows = list(csv.reader(io.StringIO(text)))
    negative = [r for r in rows[1:] if r[4].startswith("'-")]
    assert negative, "the Tianpower table has negative set ranges"
    assert all(not c or not is_dangerous(c) for r in rows for c in r)
    assert any(r[2].startswith("-") for r in negative)  # negative values stay plain numbers
    assert dict(parse(text, "csv")) == {r[1]: r[2] for r in rows[1:]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordsGateway]:
    with RecordsGateway(tmp_path_factory.mktemp("cells"), packs=1) as gw:
        yield gw


def _cli(gw: RecordsGateway, role: Role, *args: str) -> list[str]:
    return ["admin", *args, "--url", gw.url, "--token", gw.token(role)]


def _assert_no_formula(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/")]
        assert sheets and not any(b"<f>" in z.read(n) or b"<f " in z.read(n) for n in sheets)


def test_an_evil_serial_is_inert_in_every_file_we_write(
    gateway: RecordsGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(gateway, Role.ADMIN, "config", "serial", "sim/1", EVIL)) == 0
    # the pack now reports the SN; publish it now instead of waiting for the next identity read
    stack = gateway.stack
    assert stack is not None and gateway._loop is not None
    snap = stack.ctx.store.view.pack("sim", 1)
    assert snap is not None
    poller = stack.ctx.pollers["sim"]
    gateway._loop.call_soon_threadsafe(poller.set_identity, 1, replace(snap.identity, serial=EVIL))
    deadline = time.monotonic() + 5
    while stack.ctx.store.view.pack("sim", 1).identity.serial != EVIL:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert main(_cli(gateway, Role.OPERATOR, "history", "pull", "sim/1")) == 0
    capsys.readouterr()
    files = {}
    for name, args in {
        "history.csv": ("history", "export"),
        "history.xlsx": ("history", "export"),
        "audit.csv": ("audit", "--limit", "500"),
        "audit.xlsx": ("audit", "--limit", "500"),
        "params.csv": ("params", "export", "sim/1", "--format", "csv"),
    }.items():
        files[name] = tmp_path / name
        role = Role.ADMIN if args[0] in ("audit", "params") else Role.VIEWER
        assert main(_cli(gateway, role, *args, "-o", str(files[name]))) == 0, name
    capsys.readouterr()

    history = list(csv.reader(io.StringIO(files["history.csv"].read_text())))
    serial_col = history[0].index("pack_serial")
    assert {r[serial_col] for r in history[1:]} == {"'" + EVIL}
    audit = list(csv.reader(io.StringIO(files["audit.csv"].read_text())))
    assert any("'" + EVIL in cell or (EVIL in cell and not cell.startswith("=")) for r in audit for cell in r)
    for name in ("history.csv", "audit.csv", "params.csv"):
        for row in csv.reader(io.StringIO(files[name].read_text())):
            assert not any(is_dangerous(c) for c in row), (name, row)

    for name in ("history.xlsx", "audit.xlsx"):
        _assert_no_formula(files[name])
        wb = openpyxl.load_workbook(files[name])
        texts = [c for row in wb.active.iter_rows() for c in row if isinstance(c.value, str)]  # type: ignore[union-attr]
        assert all(c.data_type == "s" for c in texts), name
        if name == "history.xlsx":
            assert EVIL in {c.value for c in texts}  # kept exactly, as text
        wb.close()
