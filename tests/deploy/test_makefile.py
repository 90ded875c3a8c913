"""`make run` installs the runtime only; `make test` adds the test extras (issue 17, defect 13).

Read from `make -n` (what make would run) in a scratch venv path, so nothing is installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def plan(target: str, tmp_path: Path) -> str:
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_run_installs_the_runtime_only_and_test_adds_the_extras(tmp_path: Path) -> None:
    run = plan("run", tmp_path)
    installs = [line for line in run.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all("[test]" not in line for line in installs), run
    assert "bms-gateway run" in run
    test = plan("test", tmp_path)
    assert any("pip install" in line and "'.[test]'" in line for line in test.splitlines()), test
    assert "pytest" in test
