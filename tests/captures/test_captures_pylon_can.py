"""Real Pylontech CAN frames (US5000, firmware with CAN V1.2 and V1.3 frame sets) decode through our
DBC files to the values of the Pylon scales, re-encode byte for byte (our layout is theirs), and our
`pylon` / `pylon-v2` protocols send the message set each firmware sent."""

from __future__ import annotations

import re

import pytest

from mappings.flags import load_outputs
from protocol.inverter.can import dbc, registry
from protocol.inverter.can.frame import CanFrame
from tests.support.captures import Capture, load

CAPTURES = load("pylon_can_setfirelabs_us5000.toml")
OLD = [c for c in CAPTURES if c.name.startswith("old")]
NEW = [c for c in CAPTURES if c.name.startswith("new")]
LINE = re.compile(r"ID: (?P<id>[0-9A-F]+) Buffer: (?P<data>[0-9A-F ]+)$")

SIGNALS = {  # our DBC signal name for each decoded value in the capture file
    "charge_voltage_v": "ChargeVoltageLimit",
    "charge_current_a": "ChargeCurrentLimit",
    "discharge_current_a": "DischargeCurrentLimit",
    "discharge_voltage_v": "DischargeVoltageLimit",
    "soc_pct": "SOC",
    "soh_pct": "SOH",
    "voltage_v": "Voltage",
    "current_a": "Current",
    "temperature_c": "Temperature",
    "modules": "ModuleCount",
    "charge_enable": "ChargeEnable",
    "discharge_enable": "DischargeEnable",
}


def can_frame(c: Capture) -> CanFrame:
    """The page prints bytes without leading zeros ('14 2 C0 ...')."""
    m = LINE.match(c.text)
    assert m, c.text
    return CanFrame(int(m["id"], 16), bytes(int(b, 16) for b in m["data"].split()))


@pytest.mark.parametrize(("captures", "dbc_file"), [(OLD, "pylon.dbc"), (NEW, "pylon_v2.dbc")])
def test_real_frames_decode_and_reencode_byte_for_byte(captures: list[Capture], dbc_file: str) -> None:
    db = dbc.load(dbc_file)
    for c in captures:
        frame = can_frame(c)
        name, values = dbc.decode(db, frame)
        for key, expected in c.entry.get("decoded", {}).items():
            assert values[SIGNALS[key]] == pytest.approx(float(expected)), (c.name, key)
        assert dbc.encode(db, name, values) == frame, c.name  # same layout, same bytes


def test_old_firmware_name_frame_says_pylon() -> None:
    name = next(c for c in OLD if c.name == "old 0x35E name")
    assert can_frame(name).data == b"PYLON   "


@pytest.mark.parametrize(("captures", "protocol"), [(OLD, "pylon"), (NEW, "pylon-v2")])
def test_our_protocol_sends_every_message_the_real_firmware_sent(
    captures: list[Capture], protocol: str
) -> None:
    p = registry.create(protocol, flag_outputs=load_outputs())
    ours = {
        p.db.get_message_by_name(n).frame_id: p.db.get_message_by_name(n).length for n in p.messages_sent()
    }
    for c in captures:
        frame = can_frame(c)
        assert frame.arbitration_id in ours, (protocol, c.name)
        assert ours[frame.arbitration_id] == len(frame.data), (protocol, c.name)
