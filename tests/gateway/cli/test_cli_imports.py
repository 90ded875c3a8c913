"""The command line imports only the command it runs (start-up time of `bms-gateway run`)."""

from __future__ import annotations

import subprocess
import sys

from gateway.cli import COMMANDS
from gateway.cli.main import build_parser
from tests.support import REPO

PROBE = """
import sys
from gateway.cli.main import build_parser
build_parser(sys.argv[1:])
names = ("httpx", "simulator", "rich", "openpyxl", "cantools", "gateway.cli.admin")
heavy = [m for m in names if m in sys.modules]
print(",".join(heavy))
"""


def test_run_does_not_import_other_commands_or_their_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "run", "--config", "x.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_help_and_unknown_commands_still_know_every_command() -> None:
    for argv in ([], ["--help"], ["-v"], ["nosuch"]):
        parser = build_parser(argv)
        sub = next(a for a in parser._actions if a.dest == "command")
        assert set(sub.choices) == set(COMMANDS), argv  # type: ignore[arg-type]


def test_each_command_alone_registers_its_parser() -> None:
    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if a.dest == "command")
        assert list(sub.choices) == [name]  # type: ignore[arg-type]
