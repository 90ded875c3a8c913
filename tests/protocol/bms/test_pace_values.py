"""PACE payloads: golden captures both directions, multi-pack bank answers, round trips."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bms.pace import EXAMPLES, describe
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import PaceDecoder, PaceFrame, encode_frame, parse_frame
from protocol.errors import LocalProtocolError, RemoteProtocolError


def info(raw: bytes) -> bytes:
    return parse_frame(raw).info


# ---- analog ---------------------------------------------------------------------------------


def test_v25_analog_golden() -> None:
    raw = EXAMPLES["v25_analog_response"]
    resp = v.decode_analog(info(raw))
    assert (resp.data_flag, resp.command_value, resp.trailing) == (0, 1, b"")
    (p,) = resp.packs
    assert len(p.cell_voltages_v) == 16
    assert p.cell_voltages_v[0] == 3.271 and p.cell_voltages_v[1] == 3.272
    assert min(p.cell_voltages_v) == 3.269
    assert p.temperatures_c == (24.1, 23.9, 23.9, 23.9, 26.5, 27.4)
    assert p.current_a == -2.25
    assert p.voltage_v == 52.429
    assert p.remaining_ah == 48.19
    assert p.user_defined == (10346, 140, 10000)
    assert (p.full_capacity_ah, p.cycles, p.design_capacity_ah) == (103.46, 140, 100.0)
    assert p.soc_pct == 46.58 and p.soh_pct == 103.46
    # encode direction: the builder gives back the captured frame
    assert v.encode_analog(resp) == info(raw)
    assert c.response(1, 0, v.encode_analog(resp)) == raw


EG4_ANALOG = (
    b"~20014A00A0CA1001100D2F0D2C0D2C0D2D0D2D0D2F0D2F0D2F0D2C0D2D0D2D0D2F0D300D2C0D300D2C040B9B0BA50B9B"
    b"0B9B0BB90BAF029D151521A9268400540F005700620D300D2C00040BA50B9B000ADAC0000A54550005D473000570A6"
    b"00000680000004CA56897E24D1A5\r"
)


def test_eg4_analog_declares_four_temperatures_and_sends_six() -> None:
    resp = v.decode_analog(info(EG4_ANALOG), variant=v.Variant.EG4)
    (p,) = resp.packs
    assert (resp.data_flag, resp.command_value) == (0x10, 1)
    assert len(p.cell_voltages_v) == 16 and p.cell_voltages_v[0] == 3.375
    assert len(p.temperatures_c) == 6
    assert p.current_a == 6.69
    assert p.voltage_v == 53.97  # v20: 10 mV
    assert (p.remaining_ah, p.full_capacity_ah, p.cycles) == (86.17, 98.6, 84)
    assert resp.trailing  # EG4's undocumented rest, kept raw
    assert v.encode_analog(resp, variant=v.Variant.EG4) == info(EG4_ANALOG)


def _block(cells: int, temps: int, user: tuple[int, ...], base_mv: int = 3300) -> v.AnalogBlock:
    return v.AnalogBlock(
        tuple((base_mv + i) / 1000 for i in range(cells)),
        tuple(20.0 + i / 10 for i in range(temps)),
        -12.34,
        (base_mv * cells) / 1000,
        55.5,
        user,
    )


def test_bank_analog_parsed_by_declared_counts() -> None:
    # Three packs with different cell/temperature counts and P values; pack 2's user-defined items
    # contain 0x10 and 0x0F bytes (what made heuristic parsers jump to the next pack too early).
    blocks = (
        _block(16, 6, (10346, 140, 10000)),
        _block(15, 4, (0x1010, 0x0010, 10000, 0x0010, 0x1000)),
        _block(16, 6, (28000, 3, 28000), base_mv=3350),
    )
    resp = v.bank_analog(blocks)
    raw = c.response(1, 0, v.encode_analog(resp))
    frame = parse_frame(raw)
    back = v.decode_analog(frame.info, bank=True)
    assert back.command_value == 3
    assert back.packs == blocks
    assert back.trailing == b""
    assert [len(p.cell_voltages_v) for p in back.packs] == [16, 15, 16]
    assert back.packs[1].user_defined[3:] == (0x0010, 0x1000)


def test_bank_analog_truncated_is_remote_error() -> None:
    resp = v.bank_analog((_block(16, 6, (1, 2, 3)), _block(16, 6, (1, 2, 3))))
    data = v.encode_analog(resp)
    with pytest.raises(RemoteProtocolError, match="INFO ends"):
        v.decode_analog(data[:-3], bank=True)
    # a count that promises more packs than the INFO holds
    with pytest.raises(RemoteProtocolError):
        v.decode_analog(data[:1] + b"\x03" + data[2:], bank=True)


def test_single_read_keeps_unexpected_trailing_bytes_raw() -> None:
    resp = v.single_analog(2, _block(8, 2, (100, 1, 100)))
    data = v.encode_analog(resp) + b"\x01\x02"
    back = v.decode_analog(data)
    assert back.trailing == b"\x01\x02" and back.packs == resp.packs


# ---- status ---------------------------------------------------------------------------------

V25_STATUS = (
    b"~25014600004C000110000000000000000000000000000000000600000000000000000000000E000000000000EF3A\r"
)


def test_v25_status_golden() -> None:
    resp = v.decode_status(info(V25_STATUS))
    (s,) = resp.packs
    assert len(s.cell_warnings) == 16 and len(s.temp_warnings) == 6
    assert s.system == 0x0E
    assert s.charge_mos_on and s.discharge_mos_on
    flags = s.flags()
    assert flags.states == {"Charge MOS on", "Discharge MOS on", "Discharging"}
    assert not flags.protections and not flags.alarms and not flags.faults
    assert v.encode_status(resp) == info(V25_STATUS)


def test_v25_status_every_bit_has_a_name_and_class() -> None:
    s = v.StatusBlock(
        (0, 1, 2, 0x85, 0xF0),
        (2,),
        charge_current_warning=2,
        protection1=0xFF,
        protection2=0xFF,
        system=0xFF,
        configuration=0xFF,
        fault=0xFF,
        balancing=0b101,
        warning1=0xFF,
        warning2=0xFF,
    )
    f = s.flags()
    assert "Cell OV protection" in f.protections and "Short circuit protection" in f.protections
    assert "Fully charged" in f.states and "Fully charged" not in f.protections
    assert "Terminals reversed" in f.faults and "NTC fault" in f.faults
    assert {"Cell OV alarm", "Low SOC alarm", "MOS OT alarm"} <= f.alarms
    assert "Cell 2 below lower limit" in f.alarms and "Cell 3 above upper limit" in f.alarms
    assert "Cell 4 user-defined fault 0x85" in f.faults and "Cell 5 other fault 0xF0" in f.faults
    assert "Temperature 1 above upper limit" in f.alarms and "Charge current above upper limit" in f.alarms
    assert s.balancing_cells == (1, 3)
    total = len(f.protections) + len(f.alarms) + len(f.faults) + len(f.states)
    assert total == 7 * 8 + 6 + 1  # 56 bits + 6 non-zero warning values + "Balancing"


def test_bank_status_round_trip() -> None:
    blocks = (
        v.StatusBlock((0,) * 16, (0,) * 6, system=0x06, balancing=0x8001),
        v.StatusBlock((0,) * 15, (0,) * 4, protection1=0x01, warning2=0x80),
    )
    resp = v.StatusResponse(0, 2, blocks)
    back = v.decode_status(v.encode_status(resp), bank=True)
    assert back == resp
    assert back.packs[1].flags().protections == {"Cell OV protection"}
    assert back.packs[0].balancing_cells == (1, 16)


EG4_STATUS = (
    b"~20014A007054100110000000000000000000000000000000000400000000000000000900000000000003020000000000EDC3\r"
)


def test_eg4_status_golden() -> None:
    s = v.decode_status_eg4(info(EG4_STATUS))
    assert len(s.cell_warnings) == 16 and len(s.temp_warnings) == 6
    assert s.constant == 9
    assert s.fet_status == 0x03 and s.charge_mos_on and s.discharge_mos_on
    assert s.system == 0x02 and "Charging" in s.flags().states
    assert v.encode_status_eg4(s) == info(EG4_STATUS)


def test_v20_status_round_trip_and_flags() -> None:
    s = v.StatusV20(0, 1, (0,) * 16, (0,) * 4, status1=0x81, status2=0x06, status3=0xA0, status5=0x01)
    back = v.decode_status_v20(v.encode_status_v20(s))
    assert back == s
    f = back.flags()
    assert f.protections == {"Pack OV protection", "Pack UV protection"}
    assert "Cell 9 fault" in f.faults and back.heater_on and back.charge_mos_on


# ---- parameter groups (PbmsTools captures) -------------------------------------------------

GROUP_VECTORS = [
    # read request, read answer, write request, expected values
    (
        b"~250046D10000FD9A\r",
        b"~25004600F010010E100E740D340AFA35\r",
        b"~250046D0F010010E100E740D340AFA21\r",
        (3600, 3700, 3380, 10),
    ),
    (b"~250046D50000FD96\r", b"~25004600F01001E100E740D2F00AFA24\r", None, (57600, 59200, 54000, 10)),
    (
        b"~250046D30000FD98\r",
        b"~25004600F010010AF009C40B540AFA24\r",
        b"~250046D2F010010AF009C40B540AFA0E\r",
        (2800, 2500, 2900, 10),
    ),
    (
        b"~250046D70000FD94\r",
        b"~25004600F01001AF009C40B5400AFA24\r",
        b"~250046D6F01001AF009C40B5400AFA0A\r",
        (44800, 40000, 46400, 10),
    ),
    (
        b"~250046D90000FD92\r",
        b"~25004600400C010068006E0AFB1D\r",
        b"~250046D8400C010068006E0AFB01\r",
        (104, 110, 10),
    ),
    (b"~250046DB0000FD89\r", b"~25004600400C01FF97FF920AFAD3\r", None, (105, 110, 10)),
    (b"~250046E30000FD97\r", b"~25004600400C009604009604FB32\r", b"~250046E2A006009604FC4E\r", (150, 4)),
    (b"~250046E50000FD95\r", b"~25004600E0020CFD25\r", b"~250046E4E0020CFD0C\r", (12,)),
    (b"~250046B60000FD97\r", b"~2500460080080D48001EFBE9\r", b"~250046B580080D48001EFBD2\r", (3400, 30)),
    (b"~250046A00000FD9E\r", b"~2500460080080C1C0005FBF3\r", b"~250046A880080C1C0005FBDA\r", (3100, 0, 5)),
    (
        b"~250046AF0000FD88\r",
        b"~25004600600ADAC007D005FB60\r",
        b"~250046AE600ADAC007D005FB3A\r",
        (56000, 2000, 5),
    ),
    (
        b"~250046DD0000FD87\r",
        b"~25004600501A010CA80CD00C9E0CDA0D020CD0F7BE\r",
        b"~250046DC501A010CA80CD00C9E0CDA0D020CD0F797\r",
        (3240, 3280, 3230, 3290, 3330, 3280),
    ),
    (
        b"~250046DF0000FD85\r",
        b"~25004600501A010AAA0A780AAA0A1409E20A14F7E5\r",
        b"~250046DE501A010AAA0A780AAA0A1409E20A14F7BC\r",
        (2730, 2680, 2730, 2580, 2530, 2580),
    ),
    (
        b"~250046E10000FD99\r",
        b"~25004600200E010E2E0EF60DFCFA5D\r",
        b"~250046E0200E010E2E0EF60DFCFA48\r",
        (3630, 3830, 3580),
    ),
    (
        b"~250046E70000FD93\r",
        b"~25004600501A0109E209B009E20D340D660D34F806\r",
        b"~250046E6501A0109E209B009E20D340D660D34F7EB\r",
        (2530, 2480, 2530, 3380, 3430, 3380),
    ),
    (b"~250046ED0000FD86\r", b"~25004600C0040064FCCE\r", b"~250046EEC0040064FCA4\r", (100,)),
]


@pytest.mark.parametrize(("req", "answer", "write", "expected"), GROUP_VECTORS)
def test_parameter_group_golden(
    req: bytes, answer: bytes, write: bytes | None, expected: tuple[int, ...]
) -> None:
    rq = parse_frame(req)
    assert c.simple_request(0, rq.command) == req
    g = c.decode_group_read(rq.command, info(answer))
    assert g.values == expected
    # the answer is rebuilt byte for byte (the simulator's direction)
    assert c.response(0, 0, c.encode_group_read(g)) == answer
    parsed_read = c.parse_request(rq)
    assert parsed_read.argument is None and parsed_read.name.startswith("read_")
    if write is not None:
        built = c.group_write_request(0, g)
        assert built == write
        parsed = c.parse_request(parse_frame(write))
        assert parsed.argument == c.GroupValues(g.key, g.values, g.lead)


def test_discharge_oc1_read_negative_written_positive() -> None:
    g = c.decode_group_read(0xDB, info(b"~25004600400C01FF97FF920AFAD3\r"))
    assert g.values == (105, 110, 10)
    assert c.group_write_request(0, g.replace({0: 105})) == b"~250046DA400C010069006E0AFAF7\r"


def test_pack_ov_write_golden_with_changed_alarm() -> None:
    g = c.decode_group_read(0xD5, info(b"~25004600F01001E100E740D2F00AFA24\r"))
    assert c.group_write_request(0, g.replace({0: 57610})) == b"~250046D4F01001E10AE740D2F00AF9FB\r"


def test_group_write_with_trailing_bytes_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        c.decode_group_write(0xE4, b"\x0c\x00")
    with pytest.raises(LocalProtocolError):
        c.encode_group_read(c.GroupValues("cell_ov", (1, 2, 3)))
    with pytest.raises(LocalProtocolError):
        c.encode_group_read(c.GroupValues("short_circuit", (300,)))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_group_round_trips(data: st.DataObject) -> None:
    layout = data.draw(st.sampled_from(c.PARAM_GROUPS))
    vals = tuple(
        data.draw(st.integers(0, 0xFF if f.kind is c.FieldKind.U8 else 0x7FFF)) for f in layout.fields
    )
    lead = data.draw(st.integers(0, 255)) if layout.lead else None
    g = c.GroupValues(layout.key, vals, lead)
    assert c.decode_group_read(layout.read, c.encode_group_read(g)) == g
    w = parse_frame(c.group_write_request(3, g))
    assert w.command == layout.write and c.decode_group_write(layout.write, w.info) == g


# ---- identity, clock, capacities, protocols, switches, history -----------------------------


def test_identity_strings() -> None:
    hw = info(b"~25014600602850313653313030412D313831322D312E30302000F58E\r")
    assert c.decode_text(hw) == "P16S100A-1812-1.00"
    sn = info(
        b"~25014600B05031383132313031333830333039442020202020202020202020202020202020202020202020202020EE0F\r"
    )
    assert c.decode_text(sn) == "1812101380309D"
    assert c.decode_text(c.encode_text("P1812101380309D", 40)) == "P1812101380309D"
    assert c.decode_text(b"AB\x01C\x00\x00") == "AB\\x01C"
    with pytest.raises(LocalProtocolError):
        c.encode_text("x" * 21, 20)


def test_v20_manufacturer() -> None:
    data = c.encode_manufacturer_v20("EG4-LL", (1, 2), "EG4 Electronics")
    m = c.decode_manufacturer_v20(data)
    assert (m.device_name, m.software_version, m.manufacturer) == ("EG4-LL", (1, 2), "EG4 Electronics")
    odd = info(
        b"~20014A00F05C202020202020202020202020202020202020202000005154484E2020202020202020202020202020202030640306EBA8\r"
    )
    assert c.decode_manufacturer_v20(odd).device_name is None
    assert "QTHN" in c.decode_manufacturer_v20(odd).text


def test_clock_golden_v25_and_v20() -> None:
    assert c.simple_request(0, c.Cmd.READ_TIME) == b"~250046B10000FD9C\r"
    assert c.decode_datetime(info(b"~25004600400C180815051D1FFB10\r"), v.Variant.V25) == dt.datetime(
        2024, 8, 21, 5, 29, 31
    )
    assert c.datetime_request(0, dt.datetime(2024, 8, 20, 14, 15, 37)) == b"~250046B2400C1808140E0F25FAFC\r"
    v20 = dict(version=0x20, cid1=0x4A)
    assert c.simple_request(1, c.Cmd.V20_READ_TIME, **v20) == b"~20014A4D0000FD90\r"
    assert c.decode_datetime(info(b"~20014A00200E07E809110B3B1FFA84\r"), v.Variant.EG4) == dt.datetime(
        2024, 9, 17, 11, 59, 31
    )
    assert (
        c.datetime_request(1, dt.datetime(2024, 9, 17, 12, 4, 2), **v20)
        == b"~20014A4E200E07E809110C0402FA90\r"
    )
    with pytest.raises(RemoteProtocolError, match="not a valid time"):
        c.decode_datetime(bytes([24, 13, 1, 0, 0, 0]), v.Variant.V25)


def test_capacities_golden() -> None:
    assert c.simple_request(0, c.Cmd.READ_CAPACITIES) == b"~250046A60000FD98\r"
    cap = c.decode_capacities(info(b"~25004600400C183C286A2710FB0E\r"))
    assert cap == c.Capacities(62.04, 103.46, 100.0)
    assert c.encode_capacities(cap) == info(b"~25004600400C183C286A2710FB0E\r")


def test_protocols_golden_and_tables() -> None:
    p = c.decode_protocols(info(EXAMPLES["v25_protocols_answer"]))
    assert (p.can_name, p.rs485_name, p.mode_name) == ("Afore", "RONGKE", "auto")
    assert c.protocols_request(0, p) == EXAMPLES["v25_protocols_write"]
    assert len([k for k in c.CAN_PROTOCOLS if k != 0xFF]) == 23
    assert len([k for k in c.RS485_PROTOCOLS if k != 0xFF]) == 25
    assert c.CAN_PROTOCOLS[0x03] == "Victron" and c.RS485_PROTOCOLS[0x18] == "Leoch_V106"
    with pytest.raises(LocalProtocolError, match="CAN protocol code"):
        c.protocols_request(0, c.Protocols(0x17, 0, 0))
    with pytest.raises(LocalProtocolError, match="mode"):
        c.protocols_request(0, c.Protocols(0, 0, 2))


def test_switch_mos_shutdown_golden() -> None:
    assert c.switch_request(0, c.SwitchCode.BUZZER_ON) == b"~25004699E0020DFD12\r"
    assert c.switch_request(0, c.SwitchCode.BUZZER_OFF) == b"~25004699E0020CFD13\r"
    assert c.switch_request(0, c.SwitchCode.LED_ALARM_OFF) == b"~25004699E00206FD20\r"
    assert c.switch_request(0, c.SwitchCode.LIMITER_ON) == b"~25004699E0020BFD14\r"
    assert c.switch_request(0, c.SwitchCode.LIMITER_LOW_GEAR) == b"~25004699E00209FD1D\r"
    ack = c.decode_switch_ack(info(b"~25004600C0040D01FCC3\r"))
    assert ack == c.SwitchAck(0x0D, 0x01)
    assert c.encode_switch_ack(ack) == info(b"~25004600C0040D01FCC3\r")
    assert c.mos_request(0, charge=True, on=True) == b"~2500469AE00200FD1E\r"
    assert c.mos_request(0, charge=False, on=False) == b"~2500469BE00201FD1C\r"
    assert c.decode_mos_ack(info(b"~25004600E00226FD30\r")) & 0x02  # charge MOS on afterwards
    assert not c.decode_mos_ack(info(b"~25004600E00224FD32\r")) & 0x02
    assert c.shutdown_request(0) == b"~2500469CE00201FD1B\r"


HISTORY = (
    b"~25004600709018021D020038100D970D990D9A0D990D990D970D990D980D990D980D800D980D980D990D980D98060B740B75"
    b"0B770B760B710B79FF6ED9D7286A286A0000000000060043FFFFFFFFDDE3\r"
)


def test_history_golden() -> None:
    assert c.history_request(0, 399) == b"~250046A1C004018FFCA7\r"
    rec = c.decode_history(info(HISTORY))
    assert rec is not None
    assert rec.recorded_at == dt.datetime(2024, 2, 29, 2, 0, 56)
    assert rec.current_a == -1.46 and rec.voltage_v == 55.767
    assert (rec.remaining_ah, rec.full_ah) == (103.46, 103.46)
    assert max(rec.cell_voltages_v) == 3.482 and min(rec.cell_voltages_v) == 3.456
    assert rec.temperatures_c == (20.2, 20.3, 20.5, 20.4, 19.9, 20.7)
    assert len(rec.tail) == 12
    assert c.encode_history(rec) == info(HISTORY)
    assert c.decode_history(b"") is None


def test_pack_count_and_requests() -> None:
    assert c.decode_pack_count(c.encode_pack_count(4)) == 4
    bank = parse_frame(c.analog_request(1, bank=True))
    assert bank.info == b"\xff" and c.parse_request(bank).bank
    assert c.analog_request(1) == b"~25014642E00201FD30\r"
    assert c.status_request(1) == b"~25014644E00201FD2E\r"
    assert c.analog_request(1, version=0x20, cid1=0x4A) == b"~20014A420000FDA2\r"
    with pytest.raises(LocalProtocolError):
        c.analog_request(1, bank=True, version=0x20, cid1=0x4A)
    assert c.parse_request(parse_frame(c.pack_count_request(1))).name == "pack_count"


def test_parse_request_rejects_responses_and_unknown_commands() -> None:
    with pytest.raises(RemoteProtocolError):
        c.parse_request(parse_frame(b"~250046000000FDAF\r"))
    odd = parse_frame(encode_frame(0x25, 1, 0x46, 0xE8, b""))
    assert not odd.is_request  # unknown CID2 values read as RTN codes


# ---- describe -------------------------------------------------------------------------------


def test_describe_response_interpretations() -> None:
    d = describe(EXAMPLES["v25_analog_response"])
    kinds = [i["as"] for i in d["interpretations"]]
    assert kinds[0] == "analog"
    pack = d["interpretations"][0]["value"]["packs"][0]
    assert pack["current_a"] == -2.25 and pack["soc_pct"] == 46.58
    s = describe(V25_STATUS)
    st_ = next(i for i in s["interpretations"] if i["as"] == "status")
    assert "Discharging" in st_["value"]["packs"][0]["flags"]["states"]
    err = describe(encode_frame(0x25, 1, 0x46, 0x04, b""))
    assert err["rtn_text"] == "CID2 invalid"
    assert describe(encode_frame(0x25, 0, 0x46, 0x09, b"\x04"))["rtn_text"] == "unknown return code 0x09"
    with pytest.raises(RemoteProtocolError, match="unknown command CID2 0xF5"):
        describe(encode_frame(0x25, 1, 0x46, 0xF5, b""))
    w = describe(b"~250046D0F010010E100E740D340AFA21\r")
    assert w["command"] == "write_cell_ov" and w["argument"]["fields"]["protect"] == 3700


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([0x20, 0x25]), st.sampled_from([0x46, 0x4A]), st.integers(0, 255), st.binary(max_size=80)
)
def test_describe_any_valid_frame_only_remote_errors(ver: int, cid1: int, cid2: int, payload: bytes) -> None:
    raw = encode_frame(ver, 1, cid1, cid2, payload)
    try:
        out = describe(raw)
    except RemoteProtocolError:
        return
    assert out["address"] == 1


# ---- property round trips -------------------------------------------------------------------

cells_st = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=24)
temps_st = st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=8)


@st.composite
def blocks(draw: st.DrawFn, variant: v.Variant = v.Variant.V25) -> v.AnalogBlock:
    vscale = 1000 if variant is v.Variant.V25 else 100
    user = (
        (draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
        if variant is v.Variant.EG4
        else tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=6)))
    )
    return v.AnalogBlock(
        tuple(x / 1000 for x in draw(cells_st)),
        tuple(v.temp_from_wire(x) for x in draw(temps_st)),
        draw(st.integers(-0x8000, 0x7FFF)) / 100,
        draw(st.integers(0, 0xFFFF)) / vscale,
        draw(st.integers(0, 0xFFFF)) / 100,
        user,
    )


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(v.Variant)), st.data())
def test_analog_round_trip(variant: v.Variant, data: st.DataObject) -> None:
    bank = variant is not v.Variant.EG4 and data.draw(st.booleans())
    n = data.draw(st.integers(1, 15)) if bank else 1
    packs = tuple(data.draw(blocks(variant)) for _ in range(n))
    resp = v.AnalogResponse(
        data.draw(st.integers(0, 255)), n if bank else data.draw(st.integers(0, 15)), packs
    )
    assert v.decode_analog(v.encode_analog(resp, variant=variant), bank=bank, variant=variant) == resp


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_status_round_trip(data: st.DataObject) -> None:
    b8 = st.integers(0, 255)
    n = data.draw(st.integers(1, 15))
    packs = tuple(
        v.StatusBlock(
            tuple(data.draw(st.lists(b8, max_size=20))),
            tuple(data.draw(st.lists(b8, max_size=8))),
            **{name: data.draw(b8) for name in v.STATUS_V25_TAIL},
            balancing=data.draw(st.integers(0, 0xFFFF)),
            warning1=data.draw(b8),
            warning2=data.draw(b8),
        )
        for _ in range(n)
    )
    resp = v.StatusResponse(0, n, packs)
    assert v.decode_status(v.encode_status(resp), bank=True) == resp


def test_frames_in_one_stream_decode_in_order() -> None:
    stream = b"".join(vec[1] for vec in GROUP_VECTORS) + V25_STATUS
    dec = PaceDecoder()
    for i in range(0, len(stream), 7):
        dec.feed(stream[i : i + 7])
    frames = [f for f in dec.frames() if isinstance(f, PaceFrame)]
    assert len(frames) == len(GROUP_VECTORS) + 1


def test_system_parameters_with_and_without_infoflag() -> None:
    sp = c.SystemParameters(3.65, 3.0, 2.7, 50.0, 0.0, 100.0, 58.4, 48.0, 43.2, 60.0, -20.0, -150.0)
    data = c.encode_system_parameters(sp)
    assert len(data) == 24 and c.decode_system_parameters(data) == sp
    flagged = replace(sp, info_flag=0x11)
    assert c.decode_system_parameters(c.encode_system_parameters(flagged)) == flagged
    with pytest.raises(RemoteProtocolError):
        c.decode_system_parameters(data + b"\x00\x00")
    d = describe(c.response(2, 0, data))
    assert any(i["as"] == "system_parameters" for i in d["interpretations"])


ALL_CAPTURES = [
    *(vec for g in GROUP_VECTORS for vec in g[:3] if vec is not None),
    V25_STATUS,
    EG4_STATUS,
    EG4_ANALOG,
    HISTORY,
    b"~25004600400C183C286A2710FB0E\r",
    b"~25004600400C180815051D1FFB10\r",
    b"~20014A00200E07E809110B3B1FFA84\r",
]


@pytest.mark.parametrize("raw", ALL_CAPTURES)
def test_every_capture_whole_bytewise_and_with_junk(raw: bytes) -> None:
    expected = parse_frame(raw)
    dec = PaceDecoder()
    got: list[PaceFrame] = []
    for i in range(len(raw)):
        dec.feed(raw[i : i + 1])
        got += [f for f in dec.frames() if isinstance(f, PaceFrame)]
    dec.feed(raw + b"\r\n\x00~junk~" + raw[: len(raw) // 2])
    got += [f for f in dec.frames() if isinstance(f, PaceFrame)]
    assert got == [expected, expected]


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2255, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.sampled_from(list(v.Variant)),
)
def test_datetime_round_trip(when: dt.datetime, variant: v.Variant) -> None:
    assert c.decode_datetime(c.encode_datetime(when, variant), variant) == when


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.sampled_from(sorted(c.CAN_PROTOCOLS)),
    st.sampled_from(sorted(c.RS485_PROTOCOLS)),
    st.sampled_from(sorted(c.PROTOCOL_MODES)),
)
def test_capacities_and_protocols_round_trip(r: int, f: int, d: int, can: int, rs: int, mode: int) -> None:
    cap = c.Capacities(r / 100, f / 100, d / 100)
    assert c.decode_capacities(c.encode_capacities(cap)) == cap
    p = c.Protocols(can, rs, mode)
    assert c.parse_request(parse_frame(c.protocols_request(1, p))).argument == p
    assert c.decode_protocols(c.encode_protocols(p)) == p


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_history_round_trip(data: st.DataObject) -> None:
    rec = c.HistoryRecordV25(
        data.draw(
            st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2255, 1, 1)).map(
                lambda d: d.replace(microsecond=0)
            )
        ),
        tuple(x / 1000 for x in data.draw(cells_st)),
        tuple(v.temp_from_wire(x) for x in data.draw(temps_st)),
        data.draw(st.integers(-0x8000, 0x7FFF)) / 100,
        data.draw(st.integers(0, 0xFFFF)) / 1000,
        data.draw(st.integers(0, 0xFFFF)) / 100,
        data.draw(st.integers(0, 0xFFFF)) / 100,
        data.draw(st.binary(max_size=12)),
    )
    assert c.decode_history(c.encode_history(rec)) == rec
