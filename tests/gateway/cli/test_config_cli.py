"""`bms-gateway config check` counts what will run, the built-in simulator's bus included, and the
data bits of a bus are configurable (issue 17, defect 9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.app.config import load_config
from gateway.app.wiring import build_context

BIN = Path(sys.executable).with_name("bms-gateway")

CONFIG = """\
[[bus]]
name = "rack"
url = "/dev/ttyUSB0"
addresses = [1, 2]
bytesize = 7
{simulator}
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(text)
    return subprocess.run(
        [str(BIN), "config", "check", str(cfg)], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_counts_the_simulator_bus_and_its_packs(tmp_path: Path) -> None:
    done = check(tmp_path, CONFIG.format(simulator="[simulator]\nenabled = true\npacks = 3"))
    assert done.returncode == 0, done.stderr
    assert "OK (2 bus(es), 5 pack(s), of which the built-in simulator: 3 tianpower pack(s))" in done.stdout
    done = check(tmp_path, CONFIG.format(simulator=""))
    assert done.returncode == 0 and "OK (1 bus(es), 2 pack(s))" in done.stdout
    done = check(tmp_path, "[simulator]\npacks = 4\n")
    assert "OK (1 bus, 4 pack(s); no bus configured: built-in simulator: 4 tianpower pack(s))" in done.stdout


def test_data_bits_reach_the_serial_line_and_bad_ones_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(simulator=""))
    ctx = build_context(load_config(cfg), cfg)
    settings = ctx.buses["rack"].settings
    assert settings is not None and settings.bytesize == 7 and settings.bits_per_byte() == 9
    done = check(tmp_path, CONFIG.format(simulator="").replace("bytesize = 7", "bytesize = 9"))
    assert done.returncode == 2 and "bus.0.bytesize" in done.stderr


def test_check_refuses_a_hardware_fault_the_simulated_family_does_not_report(tmp_path: Path) -> None:
    # `hw=` names a status flag of the family's codec: a misspelt one is refused by the check, as
    # the start would refuse it, and a real one (per family) passes. The key is named; the check
    # holds for a simulator that is off too, as the syntax check always did.
    done = check(tmp_path, '[simulator]\nenabled = true\nfaults = "hw=1:NTC_Disconected"\n')
    assert done.returncode == 2, done.stdout
    named = "simulator.faults: hardware fault 'NTC_Disconected' for pack 1 is not a fault flag of tianpower"
    assert named in done.stderr
    assert "valid: " in done.stderr and "NTC_Disconnected" in done.stderr
    done = check(tmp_path, '[simulator]\nenabled = true\nfaults = "hw=1:NTC_Disconnected"\n')
    assert done.returncode == 0, done.stderr
    done = check(
        tmp_path, '[simulator]\nenabled = true\nprotocol = "pace"\nfaults = "hw=2:NTC_Disconnected"\n'
    )
    assert done.returncode == 2 and "is not a fault flag of pace" in done.stderr
    done = check(tmp_path, '[[bus]]\nname = "b"\nurl = "/dev/ttyUSB0"\n[simulator]\nfaults = "hw=1:Typo"\n')
    assert done.returncode == 2 and "simulator.faults: hardware fault 'Typo'" in done.stderr


def test_a_file_that_cannot_be_read_is_a_configuration_error_not_a_traceback(tmp_path: Path) -> None:
    # exit 2 with one line naming the file, for `config check` and for `run` alike
    latin = tmp_path / "latin.toml"
    latin.write_bytes('log_level = "info" # café\n'.encode("latin-1"))
    cases = {tmp_path: "is a directory", latin: "not UTF-8 text"}
    for path, said in cases.items():
        for argv in (["config", "check", str(path)], ["run", "--config", str(path)]):
            done = subprocess.run([str(BIN), *argv], capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 2, (argv, done.stderr)
            assert said in done.stderr and str(path) in done.stderr, done.stderr
            assert "Traceback" not in done.stderr


def test_a_configuration_the_user_may_not_read_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret.toml"
    secret.write_text("[simulator]\npacks = 1\n")
    secret.chmod(0o600)
    argv = [str(BIN), "config", "check", str(secret)]
    if os.geteuid() == 0:  # root reads anything: check as nobody, as an operator without sudo would
        tmp_path.chmod(0o755)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"{secret}: cannot read the configuration file: permission denied" in done.stderr


def test_check_refuses_faults_for_packs_the_simulator_does_not_have(tmp_path: Path) -> None:
    done = check(tmp_path, '[simulator]\nenabled = true\npacks = 2\nfaults = "sleep=3"\n')
    assert done.returncode == 2
    assert "simulator.faults: sleep: pack 3 is not simulated (addresses 1..2)" in done.stderr, done.stderr
    done = check(tmp_path, '[simulator]\nenabled = true\npacks = 2\nfirst_address = 2\nfaults = "sleep=3"\n')
    assert done.returncode == 0, done.stderr
