"""Pylontech LV RS485 responder: framing vectors, every command both directions, error answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.inverter.rs485.base import BankView, Limits
from protocol.inverter.rs485.pylon import (
    FrameSplitter,
    PylonOptions,
    PylonResponder,
    Rtn,
    checksum,
    encode_frame,
    length_field,
    parse_frame,
)
from protocol.inverter.rs485.pylon_peer import build_request
from tests.support.pylon_rs485_helpers import (
    Reader,
    bank,
    bank_view,
    decode_management,
    decode_module_analog,
    module,
    ref_checksum,
    ref_decode,
    ref_frame,
    ref_length,
)

NOW = 1000.0
INFERRED = PylonOptions(
    inferred_stack_replies=True,
    inferred_system_basic=True,
    inferred_set_management=True,
    inferred_system_analog=True,
)


def inferred() -> PylonResponder:
    """A responder with every *inferred* layout opted in."""
    return PylonResponder(INFERRED)


# --- framing against the reference's vectors ---------------------------------------------------

REFERENCE_FRAMES = [
    b"~20014043E00200FD3B\r",  # YD/T1363 spec example (character sum 0x02C5)
    b"~2000464F0000FD9A\r",  # protocol-version probe
    b"~200046000000FDB4\r",  # its answer (v2.0)
    b"~260046000000FDAE\r",  # its answer (v2.6)
    b"~25014642E00201FD30\r",
    b"~25014644E00201FD2E\r",
    b"~250046000000FDAF\r",
    b"~22014A42E00201FD28\r",
    b"~22014A4F0000FD8C\r",
    b"~22014A00E002C8FD14\r",
    b"~22014A83C0040101FCC2\r",
    b"~22014AB0600A010103FF00FB6C\r",
    b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC60CC7060B9B0B990B990B990B"
    b"B30BBCFF1FCCCD12D303286A008C2710E1E4\r",
]


def test_length_field_reference_example() -> None:
    assert length_field(18) == 0xD012
    assert length_field(0) == 0x0000
    assert ref_length(18) == 0xD012


def test_checksum_reference_examples() -> None:
    assert checksum(b"20014043E00200") == 0xFD3B
    # The reference quotes "~1203400456ABCEFEFC72"; its character sum is 0x038F, so the rule it states
    # (and every other vector here) gives FC71. The rule wins; the quoted example is off by one.
    assert checksum(b"1203400456ABCEFE") == 0xFC71 == ref_checksum(b"1203400456ABCEFE")


@pytest.mark.parametrize("raw", REFERENCE_FRAMES)
def test_reference_frames_parse_and_reencode(raw: bytes) -> None:
    frame = parse_frame(raw)
    assert frame.chksum_ok and frame.lchksum_ok and frame.lenid_ok
    assert encode_frame(frame.ver, frame.adr, frame.cid1, frame.cid2, frame.info) == raw


def test_encode_matches_independent_reference_encoder() -> None:
    assert build_request(0x20, 0x02, 0x42, b"\x02") == ref_frame(0x20, 0x02, 0x46, 0x42, "02")
    assert build_request(0x20, 0x02, 0x42, b"\x02") == b"~20024642E00202FD33\r"
    assert build_request(0x20, 0x00, 0x4F) == b"~2000464F0000FD9A\r"


def test_splitter_resynchronises_and_drops_truncated_frames() -> None:
    s = FrameSplitter()
    s.feed(b"xx~2002464F00~20024642E00202FD33\rjunk")
    assert s.next_candidate() == b"~20024642E00202FD33\r"
    assert s.next_candidate() is None
    assert s.discarded_bytes == 2 + len(b"~2002464F00") + len(b"junk")


def test_parse_rejects_unreadable() -> None:
    for raw in (b"~20\r", b"~2002464G0000FD98\r", b"~2002464F0000FD9\r", "~20024642E002ä2FD33\r".encode()):
        with pytest.raises(RemoteProtocolError):
            parse_frame(raw)


# --- golden request/response pairs --------------------------------------------------------------


def answer(
    view: BankView, request: bytes, responder: PylonResponder | None = None, now: float = NOW
) -> bytes:
    r = responder or PylonResponder()
    r.feed(request)
    exchanges = r.process(view, now)
    assert len(exchanges) == 1
    assert exchanges[0].response is not None, exchanges[0]
    return exchanges[0].response


def test_protocol_version_golden_pair_echoes_ver() -> None:
    view = bank()
    assert answer(view, b"~2002464F0000FD98\r") == b"~200246000000FDB2\r"
    assert answer(view, ref_frame(0x28, 0x02, 0x46, 0x4F)) == ref_frame(0x28, 0x02, 0x46, 0x00)
    assert answer(view, ref_frame(0x35, 0x03, 0x46, 0x4F)) == ref_frame(0x35, 0x03, 0x46, 0x00)


def test_analog_module_golden_and_values() -> None:
    view = bank(3)
    raw = answer(view, b"~20024642E00202FD33\r")
    d = ref_decode(raw)
    assert (d.ver, d.adr, d.cid1, d.rtn) == (0x20, 0x02, 0x46, 0x00)
    r = Reader(d.info)
    assert r.take("B") == 0x00  # INFOFLAG
    assert r.take("B") == 0x02
    values = decode_module_analog(r)
    assert r.rest == 0
    m = view.modules[0]
    assert values["cells"] == pytest.approx(list(m.cell_voltages_v))
    assert values["temps"] == pytest.approx([26.0, 21.0, 22.0, 22.5, 20.0, 31.0])
    assert values["current"] == pytest.approx(10.0)
    assert values["voltage"] == pytest.approx(m.voltage_v)
    assert values["remaining_ah"] == pytest.approx(224.0)
    assert values["full_ah"] == pytest.approx(280.0)
    assert values["cycles"] == 21


def test_analog_small_pack_uses_u16_capacities() -> None:
    view = bank_view((module(1, full_ah=50.0, soc=50.0),))
    d = ref_decode(answer(view, build_request(0x20, 2, 0x42, b"\x02")))
    r = Reader(d.info)
    r.take("B"), r.take("B")
    values = decode_module_analog(r)
    assert values["full_ah"] == pytest.approx(50.0) and values["remaining_ah"] == pytest.approx(25.0)


def test_analog_slave_and_whole_stack() -> None:
    view = bank(3)
    d = ref_decode(answer(view, build_request(0x20, 0x04, 0x42, b"\x04")))
    r = Reader(d.info)
    assert (r.take("B"), r.take("B")) == (0, 4)
    assert decode_module_analog(r)["cycles"] == 23
    d = ref_decode(answer(view, build_request(0x20, 0x02, 0x42, b"\xff"), inferred()))
    r = Reader(d.info)
    assert r.take("B") == 0 and r.take("B") == 3
    blocks = [decode_module_analog(r) for _ in range(3)]
    assert r.rest == 0
    assert [b["cycles"] for b in blocks] == [21, 22, 23]


def test_group_addressing() -> None:
    view = bank(2)
    responder = PylonResponder(PylonOptions(group=1))
    d = ref_decode(answer(view, build_request(0x20, 0x13, 0x42, b"\x13"), responder))
    assert d.adr == 0x13 and d.rtn == 0
    responder.feed(build_request(0x20, 0x02, 0x42, b"\x02"))
    (ex,) = responder.process(view, NOW)
    assert ex.response is None and ex.outcome == "ignored"


def test_unknown_module_address_is_not_answered() -> None:
    r = PylonResponder()
    r.feed(build_request(0x20, 0x05, 0x42, b"\x05") + build_request(0x20, 0x01, 0x4F))
    exchanges = r.process(bank(3), NOW)
    assert [e.response for e in exchanges] == [None, None]


def test_alarm_module_and_stack() -> None:
    m1 = module(1, protections=frozenset({"cell_undervoltage", "charge_overcurrent"}), current=-30.0)
    m2 = module(2, cell_voltages_v=(3.7,) + (3.3,) * 15)
    view = bank_view((m1, m2))
    d = ref_decode(answer(view, build_request(0x20, 0x02, 0x44, b"\x02")))
    r = Reader(d.info)
    assert r.take("B") == 0  # INFOFLAG, as real packs send it first
    assert r.take("B") == 2
    assert r.take("B") == 16
    assert [r.take("B") for _ in range(16)] == [0] * 16
    assert r.take("B") == 6
    assert [r.take("B") for _ in range(6)] == [0] * 6
    assert [r.take("B") for _ in range(3)] == [0, 0, 0]
    status1, status2, status3, s4, s5 = (r.take("B") for _ in range(5))
    assert status1 == 0b0000_0110  # b2 charge OC, b1 cell UV
    assert status2 == 0b0000_1110  # using pack power, discharge MOS, charge MOS
    assert status3 == 0b0100_0000  # effective discharge current
    assert (s4, s5) == (0, 0)
    assert r.take("B") == 0  # the byte after Status5 every real answer carries
    assert r.rest == 0
    d = ref_decode(answer(view, build_request(0x20, 0x02, 0x44, b"\xff"), inferred()))
    r = Reader(d.info)
    assert (r.take("B"), r.take("B")) == (0, 2)  # INFOFLAG, module count
    r.pos += 1 + 16 + 1 + 6 + 3 + 5 + 1
    assert r.take("B") == 16
    assert r.take("B") == 0x02  # cell 1 above the high limit
    r.pos += 15 + 1 + 6 + 3 + 3
    assert (r.take("B"), r.take("B")) == (0x01, 0x00)  # cell 1 fault bit
    assert r.take("B") == 0
    assert r.rest == 0


def test_manufacturer_and_system_parameters() -> None:
    view = bank()
    d = ref_decode(answer(view, build_request(0x20, 0x02, 0x51)))
    r = Reader(d.info)
    assert r.text(10) == "US5000\x00\x00\x00\x00"  # NUL-padded like real packs
    assert (r.take("B"), r.take("B")) == (1, 0)
    assert r.text(20) == "PYLON" + "-" * 15  # dash-padded like real packs
    d = ref_decode(answer(view, build_request(0x20, 0x02, 0x47)))
    r = Reader(d.info)
    assert r.take("B") == 0  # INFOFLAG, as real packs send it first
    assert [r.take("H") for _ in range(3)] == [3650, 3050, 2800]
    assert [r.take("H") for _ in range(2)] == [2731 + 500, 2731]
    assert r.take("h") == 1000
    assert [r.take("H") for _ in range(3)] == [58400, 48800, 44800]
    assert [r.take("H") for _ in range(2)] == [2731 + 550, 2731 - 100]
    assert r.take("h") == -1000 and r.rest == 0  # discharge limit negative, as real packs send it


def test_management_module_shares_the_bank_decision() -> None:
    view = bank(2)
    d = ref_decode(answer(view, build_request(0x20, 0x03, 0x92, b"\x03")))
    r = Reader(d.info)
    assert r.take("B") == 3
    assert decode_management(r) == {
        "charge_v": 55.2,
        "discharge_v": 48.0,
        "charge_a": 75.0,
        "discharge_a": 100.0,
        "status": 0xC0,
    }
    whole = PylonResponder(PylonOptions(share_module_limits=False))
    r = Reader(ref_decode(answer(view, build_request(0x20, 0x03, 0x92, b"\x03"), whole)).info)
    r.take("B")
    assert decode_management(r)["charge_a"] == 150.0


def test_management_flags() -> None:
    limits = Limits(56.0, 46.0, 20.0, 0.0, True, False, force_charge_1=True, full_charge_request=True)
    view = bank(1, limits=limits)
    r = Reader(ref_decode(answer(view, build_request(0x20, 0x02, 0x92, b"\x02"))).info)
    r.take("B")
    assert decode_management(r)["status"] == 0x80 | 0x20 | 0x08


def test_stale_gives_blocking_answers_never_silence() -> None:
    stale = bank(2, limits=Limits(55.2, 48.0, 150.0, 200.0, True, True, stale=True))
    for request in (build_request(0x20, 2, 0x92, b"\x02"), build_request(0x20, 2, 0x63)):
        d = ref_decode(answer(stale, request))
        r = Reader(d.info)
        module_level = len(d.info) == 10
        if module_level:
            r.take("B")
        assert decode_management(r, system=not module_level) == {
            "charge_v": 55.2,
            "discharge_v": 48.0,
            "charge_a": 0.0,
            "discharge_a": 0.0,
            "status": 0,
        }
    d = ref_decode(answer(stale, build_request(0x20, 2, 0x62)))
    assert d.info[1] & 0x10 and d.info[3] & 0x08  # internal comm failure, system fault
    # a module without fresh data: its data commands answer 0x91, its management is blocked
    view = bank_view((module(1), module(2, fresh=False)))
    assert ref_decode(answer(view, build_request(0x20, 3, 0x42, b"\x03"))).rtn == 0x91
    r = Reader(ref_decode(answer(view, build_request(0x20, 3, 0x92, b"\x03"))).info)
    r.take("B")
    assert decode_management(r)["status"] == 0
    r = Reader(ref_decode(answer(view, build_request(0x20, 2, 0x92, b"\x02"))).info)
    r.take("B")
    assert decode_management(r)["charge_a"] == 150.0  # the only fresh module carries it all
    nothing = bank_view((module(1, fresh=False),))
    assert ref_decode(answer(nothing, build_request(0x20, 2, 0x61), inferred())).rtn == 0x91
    assert ref_decode(answer(nothing, build_request(0x20, 2, 0x42, b"\xff"), inferred())).rtn == 0x91
    r = Reader(ref_decode(answer(nothing, build_request(0x20, 2, 0x63))).info)
    assert decode_management(r, system=True)["status"] == 0


def test_serial_and_software_version() -> None:
    view = bank(2)
    r = Reader(ref_decode(answer(view, build_request(0x20, 3, 0x93, b"\x03"))).info)
    assert r.take("B") == 3 and r.text(16) == "SN-PACK-0002    "
    d = ref_decode(answer(view, build_request(0x20, 3, 0x96, b"\x03")))
    assert d.info == bytes([3, 1, 2, 3, 4, 5])


def test_set_management_holds_ten_seconds() -> None:
    view = bank(1)
    responder = inferred()
    info = bytes([2]) + (54000).to_bytes(2, "big") + (49000).to_bytes(2, "big")
    info += (300).to_bytes(2, "big") + (2000).to_bytes(2, "big")
    d = ref_decode(answer(view, build_request(0x20, 2, 0x94, info), responder, now=100.0))
    assert d.rtn == 0 and d.info == b""
    for at, expected in ((105.0, (54.0, 49.0, 30.0, 200.0)), (110.5, (55.2, 48.0, 150.0, 200.0))):
        r = Reader(ref_decode(answer(view, build_request(0x20, 2, 0x92, b"\x02"), responder, now=at)).info)
        r.take("B")
        got = decode_management(r)
        assert (got["charge_v"], got["discharge_v"], got["charge_a"], got["discharge_a"]) == expected
    bad = bytes([2]) + (40000).to_bytes(2, "big") + (49000).to_bytes(2, "big") + bytes(4)
    assert ref_decode(answer(view, build_request(0x20, 2, 0x94, bad), responder)).rtn == 0x06
    assert ref_decode(answer(view, build_request(0x20, 2, 0x94, b"\x02"), responder)).rtn == 0x05


def test_set_management_tightens_system_answer() -> None:
    view = bank(2)
    responder = inferred()
    info = bytes([3]) + (54000).to_bytes(2, "big") + (47000).to_bytes(2, "big")
    info += (100).to_bytes(2, "big") + (5000).to_bytes(2, "big")
    answer(view, build_request(0x20, 3, 0x94, info), responder, now=50.0)
    got = decode_management(
        Reader(ref_decode(answer(view, build_request(0x20, 2, 0x63), responder, 51.0)).info), system=True
    )
    assert got["charge_v"] == 54.0 and got["discharge_v"] == 48.0
    assert got["charge_a"] == 85.0  # 75 (module 1's share) + 10 (module 2 as set)
    assert got["discharge_a"] == 200.0


def test_turn_off_is_acknowledged_and_counted() -> None:
    responder = PylonResponder()
    view = bank(2)
    assert ref_decode(answer(view, build_request(0x20, 3, 0x95, b"\x03"), responder)).rtn == 0
    assert ref_decode(answer(view, build_request(0x20, 2, 0x64), responder)).rtn == 0
    assert responder.turn_off_requests == 2


def test_system_basic_info() -> None:
    view = bank(2)
    r = Reader(ref_decode(answer(view, build_request(0x20, 2, 0x60), inferred())).info)
    assert r.text(10).rstrip() == "US5000"
    assert r.text(20).rstrip() == "PYLON"
    assert (r.take("B"), r.take("B"), r.take("B")) == (1, 0, 2)
    assert [r.text(16).rstrip() for _ in range(2)] == ["SN-PACK-0001", "SN-PACK-0002"]
    assert r.rest == 0


def test_system_analog_values() -> None:
    view = bank(3)
    d = ref_decode(answer(view, build_request(0x20, 2, 0x61), inferred()))
    assert len(d.info) == 49
    r = Reader(d.info)
    mods = view.modules
    assert r.take("H") == round(sum(m.voltage_v for m in mods) / 3 * 1000)
    assert r.take("h") == 3000  # 30 A in 10 mA
    assert r.take("B") == 80
    assert (r.take("H"), r.take("H")) == (22, 23)
    assert (r.take("B"), r.take("B")) == (98, 97)
    assert (r.take("H"), r.take("H")) == (3324, 0x0310)  # max cell: pack 3, cell 16
    assert (r.take("H"), r.take("H")) == (3303, 0x0101)
    cell_temps = [t for m in mods for t in m.cell_temperatures_c]
    assert r.take("H") == round(sum(cell_temps) / len(cell_temps) * 10 + 2731)
    assert (r.take("H"), r.take("H")) == (2731 + 225, 0x0103)
    assert (r.take("H"), r.take("H")) == (2731 + 180, 0x0304)
    assert r.take("H") == 2731 + 320  # MOS average
    assert (r.take("H"), r.take("H")) == (2731 + 330, 0x0301)
    assert (r.take("H"), r.take("H")) == (2731 + 310, 0x0101)
    assert r.take("H") == 2731 + 270  # board average
    r.pos += 8
    assert r.rest == 0


def test_system_alarm_bits() -> None:
    mods = (
        module(1, alarms=frozenset({"cell_overvoltage", "cell_imbalance"})),
        module(2, protections=frozenset({"discharge_overcurrent", "pack_undervoltage"})),
    )
    view = bank_view(mods)
    d = ref_decode(answer(view, build_request(0x20, 2, 0x62)))
    assert d.info == bytes([0x21, 0x00, 0x40, 0x20])


def test_system_commands_only_at_the_master() -> None:
    for cmd in (0x61, 0x62, 0x63):
        assert ref_decode(answer(bank(2), build_request(0x20, 3, cmd), inferred())).rtn == Rtn.CID2_INVALID


def test_inferred_layouts_are_off_by_default_with_the_protocols_error_answer() -> None:
    """Whole-stack 0x44, 0x60, 0x94 and 0x61 have layouts no source states: without the opt-in they
    are answered as an unserved address (RTN 90) or an unsupported command (RTN 04). The whole-stack
    0x42 answer is captured from real packs (tests/captures/) and always served."""
    view = bank(2)
    setting = bytes([2]) + (54000).to_bytes(2, "big") + (49000).to_bytes(2, "big") + bytes(4)
    cases = [  # (option that opens it, request, answer without it)
        ("inferred_stack_replies", build_request(0x20, 2, 0x44, b"\xff"), Rtn.ADR_ERROR),
        ("inferred_system_basic", build_request(0x20, 2, 0x60), Rtn.CID2_INVALID),
        ("inferred_system_analog", build_request(0x20, 2, 0x61), Rtn.CID2_INVALID),
        ("inferred_set_management", build_request(0x20, 2, 0x94, setting), Rtn.CID2_INVALID),
    ]
    default = PylonResponder()
    for _, request, rtn in cases:
        d = ref_decode(answer(view, request, default))
        assert (d.rtn, d.info) == (rtn, b""), request
    assert default.active_requests(NOW) == {}  # the refused 0x94 holds nothing
    r = Reader(ref_decode(answer(view, build_request(0x20, 2, 0x92, b"\x02"), default)).info)
    r.take("B")
    assert decode_management(r)["charge_v"] == 55.2
    # each option opens exactly its own commands
    for option in {c[0] for c in cases}:
        only = PylonResponder(PylonOptions(**{option: True}))
        for opens, request, rtn in cases:
            expected = Rtn.NORMAL if opens == option else rtn
            assert ref_decode(answer(view, request, only)).rtn == expected, (option, request)
    # the documented commands need no opt-in
    for cmd in (0x4F, 0x51, 0x47, 0x62, 0x63):
        assert ref_decode(answer(view, build_request(0x20, 2, cmd), default)).rtn == Rtn.NORMAL, hex(cmd)


# --- error answers ------------------------------------------------------------------------------


def corrupt_checksum(raw: bytes) -> bytes:
    digit = raw[-2:-1]
    return raw[:-2] + (b"0" if digit != b"0" else b"1") + raw[-1:]


def test_checksum_error_answered_with_rtn_02() -> None:
    raw = corrupt_checksum(build_request(0x20, 2, 0x42, b"\x02"))
    d = ref_decode(answer(bank(), raw))
    assert (d.ver, d.adr, d.rtn, d.info) == (0x20, 2, 0x02, b"")


def test_lchksum_error_answered_with_rtn_03() -> None:
    body = b"20024642F00202"  # LCHKSUM nibble F instead of E
    raw = b"~" + body + f"{ref_checksum(body):04X}".encode() + b"\r"
    assert ref_decode(answer(bank(), raw)).rtn == 0x03


def test_length_mismatch_answered_with_format_error() -> None:
    body = b"20024642" + f"{ref_length(4):04X}".encode() + b"02"  # LENID says 4, INFO has 2
    raw = b"~" + body + f"{ref_checksum(body):04X}".encode() + b"\r"
    assert ref_decode(answer(bank(), raw)).rtn == 0x05


def test_other_error_answers() -> None:
    view = bank(2)
    assert ref_decode(answer(view, ref_frame(0x20, 2, 0x4A, 0x42, "02"))).rtn == 0x04  # CID1
    assert ref_decode(answer(view, build_request(0x20, 2, 0x99))).rtn == 0x04  # CID2
    assert ref_decode(answer(view, build_request(0x20, 2, 0x42))).rtn == 0x05  # INFO missing
    assert ref_decode(answer(view, build_request(0x20, 2, 0x42, b"\x03"))).rtn == 0x90  # INFO != ADR
    assert ref_decode(answer(view, build_request(0x20, 2, 0x92, b"\xff"))).rtn == 0x90
    strict = PylonResponder(PylonOptions(accepted_versions=frozenset({0x20})))
    d = ref_decode(answer(view, build_request(0x28, 2, 0x42, b"\x02"), strict))
    assert (d.ver, d.rtn) == (0x28, 0x01)


def test_responses_and_garbage_are_ignored() -> None:
    r = PylonResponder()
    r.feed(ref_frame(0x20, 2, 0x46, 0x00, "00") + b"\x00\xff garbage ~zz\r" + b"~2002\r")
    exchanges = r.process(bank(), NOW)
    assert [e.response for e in exchanges] == [None, None, None]
    assert all(not e.valid_poll for e in exchanges)


def test_stream_byte_by_byte_and_pipelined() -> None:
    r = PylonResponder()
    view = bank(2)
    stream = build_request(0x20, 2, 0x4F) + b"\n" + build_request(0x20, 3, 0x42, b"\x03")
    got = []
    for b in stream:
        r.feed(bytes([b]))
        got += r.process(view, NOW)
    assert [e.outcome for e in got] == ["ok", "ok"]
    assert all(e.valid_poll for e in got)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_never_raises_and_recovers(junk: bytes) -> None:
    r = PylonResponder()
    view = bank(2)
    r.feed(junk)
    r.process(view, NOW)
    r.feed(b"\r" + build_request(0x20, 2, 0x4F))
    exchanges = r.process(view, NOW)
    assert exchanges and exchanges[-1].outcome == "ok"
    assert exchanges[-1].response == ref_frame(0x20, 2, 0x46, 0x00)


def test_answer_too_long_for_lenid_gets_internal_error_not_a_crash() -> None:
    big = tuple(module(i, cell_voltages_v=(3.3,) * 200) for i in range(1, 15))
    view = bank_view(big)
    r = inferred()
    r.feed(build_request(0x20, 2, 0x42, b"\xff"))
    (ex,) = r.process(view, NOW)
    assert ex.outcome == "internal" and ex.response == ref_frame(0x20, 2, 0x46, 0x91)
    assert ref_decode(answer(view, build_request(0x20, 2, 0x42, b"\x02"))).rtn == 0
