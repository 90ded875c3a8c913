"""Real Pylontech RS485 answers (tests/captures/pylon_rs485_*.toml) decode to the values their sources
state, and our responder answers with the same layouts (same INFO length, same field positions, the
same signs) as the real packs did."""

from __future__ import annotations

import pytest

from mappings.flags import load_outputs
from protocol.inverter.rs485.base import BankView, Identity, Limits, ModuleView, SystemParameters
from protocol.inverter.rs485.pylon import PylonFrame, PylonResponder, parse_frame
from protocol.inverter.rs485.pylon_peer import (
    build_request,
    decode_alarm_answer,
    decode_analog_answer,
    decode_management_answer,
    decode_manufacturer_answer,
    decode_serial_answer,
    decode_system_parameters_answer,
)
from tests.support.captures import Capture, by_name, load
from tests.support.pylon_rs485_helpers import bank_of

ZIVILLIAN = "pylon_rs485_zivillian_us3000c.toml"
FRANK = "pylon_rs485_python_pylontech.toml"
MARTIBY = "pylon_rs485_martiby_us2000c.toml"
FILES = (ZIVILLIAN, FRANK, MARTIBY)
ANSWERS = [c for f in FILES for c in load(f) if c.kind == "answer"]
REQUESTS = [c for f in FILES for c in load(f) if c.kind == "request"]


def frame(c: Capture) -> PylonFrame:
    f = parse_frame(c.ascii_frame)
    assert (f.chksum_ok, f.lchksum_ok, f.lenid_ok) == (True, True, True), c.name
    return f


def command_of(c: Capture) -> int:
    return int(c.name.split()[0], 16)


@pytest.mark.parametrize("capture", ANSWERS, ids=lambda c: f"{c.file}:{c.name}")
def test_every_real_answer_frames_and_decodes_exactly(capture: Capture) -> None:
    f = frame(capture)
    assert (f.ver, f.cid1, f.cid2) == (0x20, 0x46, 0x00), "VER 20, CID1 46, RTN 00"
    cmd = command_of(capture)
    if cmd == 0x42:
        whole = capture.entry.get("request_info") == "FF"
        a = decode_analog_answer(f.info, whole_stack=whole)
        assert a.info_flag in (0x00, 0x10, 0x11)
        assert len(a.modules) == (a.command_value if whole else 1)
    elif cmd == 0x44:
        alarm = decode_alarm_answer(f.info)
        assert alarm.command_value == f.adr
        assert alarm.tail == b"\x00"  # every real answer: one byte after Status5
    elif cmd == 0x47:
        decode_system_parameters_answer(f.info)
    elif cmd == 0x92:
        assert decode_management_answer(f.info).command_value == f.adr
    elif cmd == 0x93:
        assert decode_serial_answer(f.info)[0] == f.adr
    elif cmd == 0x51:
        decode_manufacturer_answer(f.info)
    elif cmd == 0x96:
        assert f.info[0] == f.adr and len(f.info) == 6  # ADR + 2 manufacturer + 3 main-line bytes
    else:
        assert cmd == 0x4F and f.info == b""


@pytest.mark.parametrize("file", [FRANK, MARTIBY])
def test_analog_values_are_those_the_source_states(file: str) -> None:
    for c in load(file):
        if c.kind != "answer" or command_of(c) != 0x42 or not c.stated:
            continue
        whole = c.entry["request_info"] == "FF"
        a = decode_analog_answer(frame(c).info, whole_stack=whole)
        s = c.stated
        if "modules" in s:
            assert a.command_value == s["modules"], c.name
        if "address" in s:
            assert a.command_value == s["address"], c.name
        if "cells" in s:
            assert [len(m.cell_voltages_v) for m in a.modules] == s["cells"], c.name
            assert [m.current_a for m in a.modules] == pytest.approx(s["current_a"]), c.name
            assert [m.voltage_v for m in a.modules] == pytest.approx(s["voltage_v"]), c.name
            assert [m.cycles for m in a.modules] == s["cycles"], c.name
            assert [m.remaining_capacity_ah for m in a.modules] == pytest.approx(s["remaining_ah"]), c.name
            assert [m.full_capacity_ah for m in a.modules] == pytest.approx(s["full_ah"]), c.name
            assert [m.temperatures_c[0] for m in a.modules] == pytest.approx(s["bms_temperature_c"]), c.name
        if "first_cells_v" in s:
            assert list(a.modules[0].cell_voltages_v) == pytest.approx(s["first_cells_v"])
        if "cells_mv" in s:
            m = a.modules[0]
            assert [round(v * 1000) for v in m.cell_voltages_v] == s["cells_mv"]
            assert list(m.temperatures_c) == pytest.approx(s["temperatures_c"])
            assert round(m.remaining_capacity_ah * 1000) == s["remaining_mah"]
            assert round(m.full_capacity_ah * 1000) == s["full_mah"]
            assert (m.cycles, m.current_a, m.voltage_v) == (s["cycles"], s["current_a"], s["voltage_v"])


def test_management_values_and_the_negative_discharge_limit() -> None:
    up2500 = by_name(FRANK, "0x92 management, UP2500")
    m = decode_management_answer(frame(up2500).info)
    s = up2500.stated
    assert (m.charge_voltage_v, m.discharge_voltage_v) == (s["charge_voltage_v"], s["discharge_voltage_v"])
    assert (m.charge_current_a, m.discharge_current_a) == (s["charge_current_a"], s["discharge_current_a"])
    assert bool(m.status & 0x80) == s["charge_enable"] and bool(m.status & 0x40) == s["discharge_enable"]
    us3000c = decode_management_answer(frame(by_name(ZIVILLIAN, "0x92 charge/discharge management")).info)
    assert (us3000c.charge_voltage_v, us3000c.discharge_voltage_v) == (53.25, 45.0)
    assert (us3000c.charge_current_a, us3000c.discharge_current_a) == (37.0, -37.0)  # FE8E
    assert us3000c.status == 0xC0
    _, params = decode_system_parameters_answer(frame(by_name(ZIVILLIAN, "0x47 system parameters")).info)
    assert params.charge_current_limit_a == 90.0 and params.discharge_current_limit_a == -90.0  # FC7C
    assert (params.cell_high_voltage_v, params.cell_low_voltage_v, params.cell_under_voltage_v) == (
        3.65,
        3.05,
        2.8,
    )
    assert (params.module_high_voltage_v, params.module_low_voltage_v) == (54.0, 46.0)


@pytest.mark.parametrize(
    ("file", "name"),
    [
        (MARTIBY, "0x93 answer, ADR 2"),
        (MARTIBY, "0x93 answer, ADR 3"),
        (MARTIBY, "0x51 answer, US2000C"),
        (MARTIBY, "0x51 answer, second pack asked alone"),
        (ZIVILLIAN, "0x51 manufacturer info"),
        (MARTIBY, "0x44 answer, ADR 2"),
        (MARTIBY, "0x44 answer, ADR 3"),
    ],
)
def test_identity_and_alarm_values_are_those_the_source_states(file: str, name: str) -> None:
    c = by_name(file, name)
    info = frame(c).info
    if "serial" in c.stated:
        assert decode_serial_answer(info)[1] == c.stated["serial"]
    elif "battery" in c.stated:
        ident = decode_manufacturer_answer(info)
        assert ident.battery_name == c.stated["battery"] and ident.manufacturer == c.stated["manufacturer"]
        assert list(ident.software_version) == c.stated["software_version"]
    else:
        alarm = decode_alarm_answer(info)
        assert len(alarm.cell_states) == c.stated["cells"]
        assert len(alarm.temperature_states) == c.stated["temperatures"]
        assert list(alarm.status) == c.stated["status"]


# --------------------------------------------------------------------------------------------
# Our responder: the same layouts as the real packs


LIMITS = Limits(53.25, 45.0, 37.0, 37.0, True, True)
OUTPUTS = load_outputs()


def bank_view(modules: tuple[ModuleView, ...], limits: Limits, **kw: object) -> BankView:
    return BankView(modules, limits, bank_of(modules), flag_outputs=OUTPUTS, **kw)  # type: ignore[arg-type]


def module_like(position: int, cells: int, temps: int, full_ah: float) -> ModuleView:
    """A module with the counts of a captured one (board + cell-group sensors, no MOS sensor)."""
    return ModuleView(
        position=position,
        fresh=True,
        cell_voltages_v=(3.3,) * cells,
        board_temperature_c=23.0,
        cell_temperatures_c=(22.0,) * (temps - 1),
        voltage_v=3.3 * cells,
        current_a=-2.5,
        soc_pct=60.0,
        remaining_capacity_ah=full_ah * 0.6,
        full_capacity_ah=full_ah,
        cycles=31,
        charge_mos_on=True,
        discharge_mos_on=True,
        serial="HPTCR03171112590",
        software_version=(1, 3, 0, 6, 9),
    )


def ours(view: BankView, adr: int, cmd: int, info: bytes = b"") -> PylonFrame:
    exchange = PylonResponder().handle(build_request(0x20, adr, cmd, info), view, now=0.0)
    assert exchange.response is not None and exchange.valid_poll, exchange
    return parse_frame(exchange.response)


@pytest.mark.parametrize(
    ("file", "name", "modules", "cells", "temps", "full_ah"),
    [
        (ZIVILLIAN, "0x42 analog values", 1, 15, 5, 74.0),
        (MARTIBY, "0x42 answer, US2000", 1, 15, 5, 50.0),
        (MARTIBY, "0x42 answer, US3000", 1, 15, 5, 74.0),
        (FRANK, "0x42 one module, UP2500", 1, 8, 5, 111.0),
        (FRANK, "0x42 whole stack, 3 x US2000", 3, 15, 5, 50.0),
        (FRANK, "0x42 whole stack, 4 x US3000", 4, 15, 5, 74.0),
    ],
)
def test_our_analog_answer_has_the_real_layout(
    file: str, name: str, modules: int, cells: int, temps: int, full_ah: float
) -> None:
    real = frame(by_name(file, name))
    whole = modules > 1
    view = bank_view(tuple(module_like(p, cells, temps, full_ah) for p in range(1, modules + 1)), LIMITS)
    mine = ours(view, 2, 0x42, b"\xff" if whole else b"\x02")
    assert len(mine.info) == len(real.info)
    theirs = decode_analog_answer(real.info, whole_stack=whole)
    ours_ = decode_analog_answer(mine.info, whole_stack=whole)
    assert ours_.command_value == theirs.command_value
    assert [m.user_defined for m in ours_.modules] == [m.user_defined for m in theirs.modules]


@pytest.mark.parametrize(("file", "name"), [(ZIVILLIAN, "0x44 alarm info"), (MARTIBY, "0x44 answer, ADR 2")])
def test_our_alarm_answer_has_the_real_layout(file: str, name: str) -> None:
    real = frame(by_name(file, name))
    mine = ours(bank_view((module_like(1, 15, 5, 74.0),), LIMITS), 2, 0x44, b"\x02")
    assert len(mine.info) == len(real.info) == 33
    theirs, ours_ = decode_alarm_answer(real.info), decode_alarm_answer(mine.info)
    assert ours_.info_flag == 0x00 and ours_.command_value == theirs.command_value == 2
    assert ours_.tail == theirs.tail == b"\x00"
    assert ours_.status[1] == theirs.status[1] & 0x0E  # MOSFETs on, using pack power (discharging)


def test_our_management_and_parameters_answers_have_the_real_layout_and_signs() -> None:
    view = bank_view((module_like(1, 15, 5, 74.0),), LIMITS)
    real = frame(by_name(ZIVILLIAN, "0x92 charge/discharge management"))
    mine = ours(view, 2, 0x92, b"\x02")
    assert len(mine.info) == len(real.info) == 10
    assert decode_management_answer(mine.info) == decode_management_answer(real.info)  # same values
    real47 = frame(by_name(ZIVILLIAN, "0x47 system parameters"))
    params = SystemParameters(
        cell_high_voltage_v=3.65,
        cell_low_voltage_v=3.05,
        cell_under_voltage_v=2.8,
        charge_high_temperature_c=60.0,
        charge_low_temperature_c=-10.0,
        charge_current_limit_a=90.0,
        module_high_voltage_v=54.0,
        module_low_voltage_v=46.0,
        module_under_voltage_v=43.0,
        discharge_high_temperature_c=60.0,
        discharge_low_temperature_c=-10.0,
        discharge_current_limit_a=90.0,
    )
    mine47 = ours(bank_view(view.modules, LIMITS, parameters=params), 2, 0x47)
    assert mine47.info[1:] == real47.info[1:]  # byte for byte after INFOFLAG (theirs 0x10, ours 0x00)
    assert mine47.info[0] == 0x00


def test_our_identity_answers_have_the_real_layout() -> None:
    view = bank_view(
        (module_like(1, 15, 5, 74.0),),
        LIMITS,
        identity=Identity(battery_name="US3000C", manufacturer="Pylon", software_version=(1, 3)),
    )
    real51 = frame(by_name(ZIVILLIAN, "0x51 manufacturer info"))
    assert ours(view, 2, 0x51).info == real51.info  # byte for byte, padding included
    real93 = frame(by_name(MARTIBY, "0x93 answer, ADR 2"))
    assert ours(view, 2, 0x93, b"\x02").info == real93.info
    real96 = frame(by_name(ZIVILLIAN, "0x96 firmware info"))
    assert ours(view, 2, 0x96, b"\x02").info == real96.info
    assert ours(view, 2, 0x4F).info == frame(by_name(ZIVILLIAN, "0x4F protocol version")).info == b""


@pytest.mark.parametrize("capture", REQUESTS, ids=lambda c: c.name)
def test_real_requests_are_answered(capture: Capture) -> None:
    f = frame(capture)
    view = bank_view((module_like(1, 15, 5, 74.0), module_like(2, 15, 5, 74.0)), LIMITS)
    exchange = PylonResponder().handle(capture.ascii_frame, view, now=0.0)
    assert exchange.valid_poll and exchange.response is not None, exchange
    answer = parse_frame(exchange.response)
    assert (answer.adr, answer.cid2) == (f.adr, 0x00)
