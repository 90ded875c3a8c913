"""`bms-gateway decode --request REQUEST ANSWER`: an answer decoded as the answer to its request, run
as a user runs it (the installed console script: exit code, stdout, stderr)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.bms.pace import commands as c
from protocol.bms.tianpower.frame import SOI_ALT, build_frame

pytestmark = pytest.mark.e2e  # runs the installed console script

# The real INFO of a PACE master's two-pack status answer (tests/captures/pace_bmspace_bank_status.toml),
# framed for the command line: the source printed the INFO only.
BANK_STATUS_INFO = bytes.fromhex(
    "000210000000000000000000000000000000000600000000000000000000000E0000000000001110000000000000000000000"
    "000000000000600000000000000000000000E00000000000000"
)
BANK_STATUS = c.response(1, 0, BANK_STATUS_INFO).decode().rstrip("\r")
BANK_STATUS_REQUEST = "~25014644E002FFFD03"
SPDG_ANALOG = (
    "~2501460051280002100C9B0C9C0C9E0C9C0C9D0C9D0C9F0C9D0C9D0C9E0C9F0C9F0C9F0C9F0C9D0C9C060BC20BAE0B990B8C0BDC"
    "0BD6FBC4C9DC2CA6097C14002A714824714871487148714864CA120000100C950C970C980C9B0C9B0C970C980C9A0C980C990C8F"
    "0C980C950C990C9A0C95060B8C0B850B7C0B7C0B910B82FB9BC9782C8B037AA8000676C02476C076C076C076C064C9F70000BB68"
)


def bms_gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("bms-gateway", path=str(Path(sys.executable).parent))
    assert exe is not None, "the console script is installed with the package"
    return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60, check=False)


def test_bank_status_answer_with_its_request() -> None:
    done = bms_gateway("decode", "--protocol", "pace", "--request", BANK_STATUS_REQUEST, BANK_STATUS)
    assert done.returncode == 0 and done.stderr == ""
    doc = json.loads(done.stdout)
    assert doc["answer_to"] == "status" and doc["request"]["whole_bank"] is True
    assert doc["value"]["command_value"] == 2
    assert [len(p["cell_warnings"]) for p in doc["value"]["packs"]] == [16, 16]
    assert doc["value"]["pack_flags"] == [0x11, 0x00]
    assert "interpretations" not in doc


def test_without_request_the_answer_keeps_todays_interpretations() -> None:
    done = bms_gateway("decode", "--protocol", "pace", "--compact", BANK_STATUS)
    assert done.returncode == 0 and done.stdout.count("\n") == 1  # --compact: one line
    doc = json.loads(done.stdout)
    assert "status_bank" in [i["as"] for i in doc["interpretations"]] and "answer_to" not in doc


def test_an_answer_no_layout_fits_is_refused_with_the_reason() -> None:
    done = bms_gateway("decode", "--protocol", "pace", "--request", "~25014642E002FFFD05", SPDG_ANALOG)
    assert done.returncode == 1 and done.stdout == ""
    assert "invalid pace frame" in done.stderr and "fit neither exactly one layout" in done.stderr


def test_request_and_answer_must_belong_together() -> None:
    other_address = bms_gateway(
        "decode", "--protocol", "pace", "--request", "~25024644E002FFFD02", BANK_STATUS
    )
    assert other_address.returncode == 1 and "address 1, the request asks address 2" in other_address.stderr
    swapped = bms_gateway("decode", "--protocol", "pace", "--request", BANK_STATUS, BANK_STATUS_REQUEST)
    assert swapped.returncode == 1 and "not a request" in swapped.stderr
    not_hex = bms_gateway("decode", "--protocol", "tianpower", "--request", "7E 0G", "7E 01 01 00 FE 0D")
    assert not_hex.returncode == 2 and "--request: not hex" in not_hex.stderr


def test_a_broken_request_is_named_as_the_request() -> None:
    # the answer is a whole, valid frame: the refusal must say the --request is the broken one
    done = bms_gateway("decode", "--protocol", "tianpower", "--request", "7E0101", "7E 01 01 00 FE 0D")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("bms-gateway decode: --request: invalid tianpower frame (3 bytes):"), (
        done.stderr
    )
    broken_answer = bms_gateway("decode", "--protocol", "pace", "--request", BANK_STATUS_REQUEST, "~2501")
    assert broken_answer.returncode == 1
    assert broken_answer.stderr.startswith("bms-gateway decode: invalid pace frame"), broken_answer.stderr


def test_tianpower_answer_with_its_request() -> None:
    version = "7C 01 33 16 54 50 2D 42 44 31 36 53 34 38 56 31 35 30 2D 56 33 2E 31 2E 32 39 E2 0D"
    request = build_frame(1, 0x33, soi=SOI_ALT)
    done = bms_gateway("decode", "--protocol", "tianpower", "--request", request.hex(" "), *version.split())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["text"] == "TP-BD16S48V150-V3.1.29" and doc["request"]["request"]
    wrong = build_frame(1, 0x01, soi=SOI_ALT).hex(" ")
    refused = bms_gateway("decode", "--protocol", "tianpower", "--request", wrong, *version.split())
    assert refused.returncode == 1 and "does not answer the request" in refused.stderr
