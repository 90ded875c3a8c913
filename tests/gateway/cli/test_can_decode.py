"""`bms-gateway can-decode`: candump logs decoded through the protocol's DBC."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gateway.cli.can_decode import LineError, parse_line
from gateway.cli.main import main
from gateway.north.can.service import candump_line
from mappings.flags import load_outputs
from protocol.inverter.can import registry
from protocol.inverter.can.base import CanFrame
from tests.support.can_policy_fixtures import decision

NOW = 1_800_000_000.0


def test_decodes_a_log_written_by_the_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    protocol = registry.create("pylon", flag_outputs=load_outputs())
    state = decision(charge_current_a=123.4, soc_pct=63.0)
    log = tmp_path / "can.log"
    log.write_text("".join(candump_line(NOW, "can0", f) for f in protocol.due(state, NOW)))
    assert main(["can-decode", "--protocol", "pylon", "--json", str(log)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["message"]: r["signals"] for r in rows}
    assert by_name["Limits"]["ChargeCurrentLimit"] == pytest.approx(123.4)
    assert by_name["SocSoh"]["SOC"] == 63
    assert rows[0]["timestamp"] == NOW and rows[0]["id"] == "351"


def test_pylon_hv_addresses_and_little_endian_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    protocol = registry.create(
        "pylon-hv", {"address": 1, "byte_order": "little"}, flag_outputs=load_outputs()
    )
    frames = protocol.on_frame(CanFrame(0x4200, bytes(8), True), decision(voltage_v=400.5), NOW).frames
    text = "".join(candump_line(NOW, "can1", f) for f in frames)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["can-decode", "--protocol", "pylon-hv", "--option", "byte_order=little", "--json", "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["id"] == "00004211" and rows[0]["message"] == "SystemData"
    assert rows[0]["signals"]["Voltage"] == pytest.approx(400.5)


def test_screen_format_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "screen.txt"
    log.write_text(
        "  can0  356   [6]  7A 13 F2 FE 6B 01\n"
        "# a comment\n"
        "(3.0) can0 351#R\n"
        "nonsense here\n"
        "(4.0) can0 7FF#00\n"
        "  can0  355   [4]  1A 00\n"
    )
    assert main(["can-decode", "--protocol", "pylon", str(log)]) == 1
    out, err = capsys.readouterr()
    assert "Measurements: Voltage=49.86 Current=-27 Temperature=36.3" in out
    assert "7FF#00  (unknown" in out
    assert "line 4: not a candump line" in err and "line 6: [4] but 2 data bytes" in err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["can-decode", "--protocol", "nope", "-"]) == 2
    assert "unknown inverter CAN protocol" in capsys.readouterr().err
    assert main(["can-decode", "--protocol", "pylon", "--option", "bad", "-"]) == 2
    assert main(["can-decode", "--protocol", "pylon", str(tmp_path / "missing.log")]) == 1
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("(1.5) vcan0 00004210#0102", (0x4210, True, b"\x01\x02")),
        ("(1.5) vcan0 305#", (0x305, False, b"")),
        ("vcan0  18FF50E5   [2]  01 02", (0x18FF50E5, True, b"\x01\x02")),
    ],
)
def test_parse_line(line: str, expected: tuple[int, bool, bytes]) -> None:
    item = parse_line(line, 1)
    assert item is not None
    assert (item.frame.arbitration_id, item.frame.is_extended, item.frame.data) == expected


@pytest.mark.parametrize("line", ["(1.5) can0 351#123", "(1.5) can0 351#ZZ", "(1.0) can0 800#00", "x"])
def test_parse_line_rejects(line: str) -> None:
    with pytest.raises(LineError):
        parse_line(line, 7)
