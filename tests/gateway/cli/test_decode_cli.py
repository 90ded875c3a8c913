"""`bms-gateway decode`: JSON for good frames, clear errors and exit codes for bad ones."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from gateway.cli.decode import InputError, parse_input
from gateway.cli.main import main
from mappings.bms.params import load_table
from protocol.bms.registry import families
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.realtime import decode_realtime, status_bytes

BASENGREEN_HEX = families()["tianpower"].examples["basengreen_realtime_response"].hex(" ").upper()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_basengreen_capture_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--protocol", "tianpower", *BASENGREEN_HEX.split())
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["direction"] == "response" and doc["address"] == 1 and doc["command_name"] == "realtime data"
    assert doc["cell_count"] == 16 and doc["cell_min_v"] == 3.391 and doc["cell_max_v"] == 3.397
    assert doc["current_a"] == 0.0 and doc["soc_pct"] == 99.99 and doc["full_capacity_ah"] == 280.0
    assert [t["temperature_c"] for t in doc["temperatures"]] == [21, 22, 22, 21, 22, 25]
    assert [t["sensor"] for t in doc["temperatures"][4:]] == ["mos", "ambient"]
    assert doc["cycles"] == 28 and doc["voltage_v"] == 54.29 and doc["soh_pct"] == 100.0
    assert doc["protections"] == [] and doc["alarms"] == []
    assert doc["counters"][0] == {"group": "0x0B", "values": [6661], "meaning": doc["counters"][0]["meaning"]}


def test_hex_in_one_argument_with_prefixes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--protocol", "tianpower", "--compact", "0x7E,0x01,0x43,0xE0,0x7E,0x0D")
    assert code == 0
    doc = json.loads(out)
    assert doc["request"] == "ReadParamTable" and doc["table"] == "protection"
    assert "\n" not in out.strip()


def test_flags_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    raw = families()["tianpower"].examples["basengreen_realtime_response"]
    rt = decode_realtime(raw[4:-2])
    flagged = m.encode_realtime(
        1, replace(rt, status=status_bytes("Short_Circuit_Prot", "CHG_MOS_Off", "Charging"))
    )
    code, out, _ = run(capsys, "--protocol", "tianpower", flagged.hex())
    doc = json.loads(out)
    assert code == 0
    assert doc["protections"] == ["Short_Circuit_Prot"]
    assert set(doc["states"]) == {"CHG_MOS_Off", "Charging"} and doc["charge_mos_on"] is False


def test_parameter_table_decoded_through_the_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    specs = load_table("tianpower").where_wire(table=0xE0)
    records = tuple(
        m.ParamRecord(s.wire["record"], s.to_wire(s.default)) for s in specs if s.default is not None
    )
    code, out, _ = run(capsys, "--protocol", "tianpower", m.encode_param_table(1, records).hex(" "))
    doc = json.loads(out)
    assert code == 0 and doc["table"] == "protection" and doc["record_count"] == 51
    first = doc["parameters"][0]
    assert (first["name"], first["value"], first["unit"]) == ("CELL_OV_Start", 3.7, "V")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("7E 01 01 00 FF 0D", "checksum mismatch: frame has 0xFF, computed 0xFE"),
        ("7E 01 01 05 FE 0D", "wrong length: LEN 0x05"),
        ("7E 01 77 00 FE 0D", "unknown command 0x77"),
    ],
)
def test_invalid_frames_exit_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], frame: str, message: str
) -> None:
    code, out, err = run(capsys, "--protocol", "tianpower", *frame.split())
    assert code == 1 and out == ""
    assert message in err and "invalid tianpower frame" in err


def test_pace_frame_through_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--protocol", "pace", "~25014642E00201FD30")
    assert code == 0
    assert json.loads(out)["address"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["7E 01 0"], "odd number of hex digits"),
        (["7E", "01", "ZZ"], "not hex: unexpected character 'Z'"),
        (["7E0", "1"], "split across separators"),
    ],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "--protocol", "tianpower", *argv)
    assert code == 2 and out == "" and message in err


def test_unknown_protocol_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["decode", "--protocol", "modbus", "00"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_parse_input_forms() -> None:
    assert parse_input(["7e0101", "00fe0d"]) == bytes.fromhex("7E010100FE0D")
    assert parse_input(["~20014A420000FDA2"]) == b"~20014A420000FDA2\r"
    assert parse_input(["~20014A420000FDA2\\r"]) == b"~20014A420000FDA2\r"
    with pytest.raises(InputError, match="no frame given"):
        parse_input([" "])


@pytest.mark.e2e
def test_console_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "decode", "--protocol", "tianpower", "7E 01 33 00 FE 0D"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["command_name"] == "version / model string"
