"""The sans-I/O Modbus codec: PDU parsing and building, MBAP and RTU framing, point encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.modbus.image import PointDef, PointType, RegisterImage, decode_raw, encode_value
from protocol.modbus.mbap import MbapDecoder, encode_adu
from protocol.modbus.pdu import (
    ExceptionCode,
    ModbusError,
    ReadRequest,
    ReadWriteRequest,
    RequestError,
    WriteMultipleRequest,
    WriteSingleRequest,
    build_read_request,
    build_read_write_request,
    build_write_multiple_request,
    build_write_single_request,
    handle_pdu,
    pack_registers,
    parse_request,
    parse_response,
)
from protocol.modbus.rtu import RtuDecoder, crc16, encode_frame

# ------------------------------------------------------------------ PDU golden cases


def test_parse_read_holding_golden() -> None:
    assert parse_request(bytes.fromhex("03 9C40 0003")) == ReadRequest(3, 40000, 3)
    assert parse_request(bytes.fromhex("04 0000 007D")) == ReadRequest(4, 0, 125)


def test_parse_writes_golden() -> None:
    assert parse_request(bytes.fromhex("06 9C78 0002")) == WriteSingleRequest(40056, 2)
    assert parse_request(bytes.fromhex("10 0064 0002 04 000A 0102")) == WriteMultipleRequest(100, (10, 0x102))
    req = parse_request(bytes.fromhex("17 0000 0002 0064 0001 02 00FF"))
    assert req == ReadWriteRequest(0, 2, 100, (0xFF,))


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        ("2B 0E 01 00", ExceptionCode.ILLEGAL_FUNCTION),  # device identification: not supported
        ("01 0000 0001", ExceptionCode.ILLEGAL_FUNCTION),  # coils: not supported
        ("03 0000 007E", ExceptionCode.ILLEGAL_DATA_VALUE),  # 126 registers
        ("03 0000 0000", ExceptionCode.ILLEGAL_DATA_VALUE),  # zero registers
        ("03 0000", ExceptionCode.ILLEGAL_DATA_VALUE),  # truncated
        ("10 0000 007C F8" + "0000" * 124, ExceptionCode.ILLEGAL_DATA_VALUE),  # 124 > 123
        ("10 0000 0002 03 000000", ExceptionCode.ILLEGAL_DATA_VALUE),  # byte count mismatch
        ("17 0000 0001 0000 007A F4" + "0000" * 122, ExceptionCode.ILLEGAL_DATA_VALUE),  # 122 > 121
        ("17 0000 007E 0000 0001 02 0000", ExceptionCode.ILLEGAL_DATA_VALUE),  # read 126
        ("03 FFFF 0002", ExceptionCode.ILLEGAL_DATA_ADDRESS),  # past 65535
    ],
)
def test_parse_errors(pdu: str, code: ExceptionCode) -> None:
    with pytest.raises(RequestError) as err:
        parse_request(bytes.fromhex(pdu))
    assert err.value.code is code
    assert err.value.function == bytes.fromhex(pdu)[0]


def test_limits_are_inclusive() -> None:
    assert parse_request(build_read_request(0, 125)) == ReadRequest(3, 0, 125)
    assert parse_request(build_write_multiple_request(0, [1] * 123)) == WriteMultipleRequest(0, (1,) * 123)
    assert parse_request(build_read_write_request(0, 125, 0, [7] * 121)) == ReadWriteRequest(
        0, 125, 0, (7,) * 121
    )


def test_client_builders_golden() -> None:
    assert build_read_request(40000, 3).hex() == "039c400003"
    assert build_read_request(1, 2, function=4).hex() == "0400010002"
    assert build_write_single_request(40056, 2).hex() == "069c780002"
    assert build_write_multiple_request(100, [10, 258]).hex() == "100064000204000a0102"
    with pytest.raises(LocalProtocolError):
        build_write_single_request(0, 70000)


class _Bank:
    def __init__(self) -> None:
        self.regs = {i: i * 2 for i in range(10)}
        self.writes: list[tuple[int, list[int]]] = []

    def read(self, address: int, count: int) -> bytes:
        if address + count > 10:
            raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        return pack_registers([self.regs[a] for a in range(address, address + count)])

    def write(self, address: int, values: object) -> None:
        vals = list(values)  # type: ignore[call-overload]
        if address + len(vals) > 10:
            raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        if any(v > 1000 for v in vals):
            raise ModbusError(ExceptionCode.ILLEGAL_DATA_VALUE)
        self.writes.append((address, vals))
        for i, v in enumerate(vals):
            self.regs[address + i] = v


def test_handle_pdu_read_and_write() -> None:
    bank = _Bank()
    assert handle_pdu(bytes.fromhex("03 0002 0002"), bank).response.hex() == "030400040006"
    assert handle_pdu(bytes.fromhex("04 0002 0001"), bank).response.hex() == "04020004"
    h = handle_pdu(bytes.fromhex("06 0001 0009"), bank)
    assert h.response.hex() == "0600010009" and h.exception is None
    assert handle_pdu(bytes.fromhex("10 0000 0002 04 0001 0002"), bank).response.hex() == "1000000002"
    # FC23: the write happens before the read
    h = handle_pdu(bytes.fromhex("17 0000 0002 0001 0001 02 0063"), bank)
    assert h.response.hex() == "170400010063"


@pytest.mark.parametrize(
    ("pdu", "answer"),
    [
        ("03 0009 0002", "8302"),  # out of the bank
        ("06 0000 0FFF", "8603"),  # value refused by the bank
        ("10 0009 0002 04 0001 0002", "9002"),
        ("03 0000 0080", "8303"),  # over 125: 0x83/0x03, not 0x80/0x01
        ("41", "c101"),  # undefined function: 0xC1/0x01
        ("2B 0E 01 00", "ab01"),
    ],
)
def test_handle_pdu_exceptions(pdu: str, answer: str) -> None:
    bank = _Bank()
    h = handle_pdu(bytes.fromhex(pdu), bank)
    assert h.response.hex() == answer
    assert h.exception == int(answer[2:], 16)
    assert bank.writes == []


@given(st.binary(min_size=1, max_size=260))
def test_handle_pdu_never_raises(pdu: bytes) -> None:
    h = handle_pdu(pdu, _Bank())
    assert h.response[0] & 0x7F == pdu[0] & 0x7F


def test_parse_response() -> None:
    assert parse_response(bytes.fromhex("030400010002")).registers == (1, 2)
    assert parse_response(bytes.fromhex("8302")).exception == 2
    assert parse_response(bytes.fromhex("1000640002")).value == 2
    with pytest.raises(RemoteProtocolError):
        parse_response(bytes.fromhex("03050001"))


# ------------------------------------------------------------------ MBAP


def test_mbap_golden() -> None:
    adu = encode_adu(0x1234, 1, bytes.fromhex("039c400003"))
    assert adu.hex() == "123400000006" + "01" + "039c400003"


def test_mbap_decoder_pipelined_and_split() -> None:
    frames = b"".join(encode_adu(t, 1, build_read_request(t, 1)) for t in (1, 2, 3))
    dec = MbapDecoder()
    dec.feed(frames[:5])
    assert dec.next_adu() is None
    dec.feed(frames[5:20])
    first = dec.next_adu()
    assert first is not None and first.transaction_id == 1
    dec.feed(frames[20:])
    assert [a.transaction_id for a in dec.drain()] == [2, 3]
    assert dec.buffered == 0


@pytest.mark.parametrize("header", ["0001 0001 0006 01", "0001 0000 0001 01", "0001 0000 00FF 01"])
def test_mbap_decoder_rejects_bad_headers(header: str) -> None:
    dec = MbapDecoder()
    dec.feed(bytes.fromhex(header) + b"\x03\x00\x00\x00\x01")
    with pytest.raises(RemoteProtocolError):
        dec.next_adu()
    assert dec.failed


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_mbap_decoder_only_remote_errors(chunks: list[bytes]) -> None:
    dec = MbapDecoder()
    try:
        for c in chunks:
            dec.feed(c)
            while dec.next_adu() is not None:
                pass
    except RemoteProtocolError:
        pass


# ------------------------------------------------------------------ RTU


def test_crc16_golden() -> None:
    # The classic example: unit 1, FC3, address 0, quantity 1 -> CRC bytes 84 0A
    assert encode_frame(1, bytes.fromhex("0300000001")).hex() == "010300000001840a"
    assert crc16(b"123456789") == 0x4B37


def test_rtu_decoder_requests_and_resync() -> None:
    good = encode_frame(21, build_read_request(100, 8))
    write = encode_frame(21, build_write_multiple_request(401, [0xFF]))
    dec = RtuDecoder("server")
    dec.feed(good[:4])
    assert dec.next_frame() is None
    dec.feed(good[4:] + write)
    f1, f2 = dec.next_frame(), dec.next_frame()
    assert f1 is not None and f1.unit_id == 21 and f1.pdu == build_read_request(100, 8)
    assert f2 is not None and f2.pdu == build_write_multiple_request(401, [0xFF])
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    dec.feed(bytes(bad) + good)
    errors = 0
    frames = []
    for _ in range(20):
        try:
            f = dec.next_frame()
        except RemoteProtocolError:
            errors += 1
            continue
        if f is None:
            break
        frames.append(f)
    assert errors >= 1
    assert frames and frames[-1].pdu == build_read_request(100, 8)


def test_rtu_decoder_unknown_function_by_crc_and_gap() -> None:
    frame = encode_frame(3, bytes.fromhex("2B0E0100"))
    dec = RtuDecoder("server")
    dec.feed(frame)
    f = dec.next_frame()
    assert f is not None and f.pdu == bytes.fromhex("2B0E0100")
    dec.feed(b"\x01\x03\x00")
    dec.gap()
    assert dec.buffered == 0 and dec.discarded_bytes == 3


def test_rtu_decoder_client_side() -> None:
    dec = RtuDecoder("client")
    dec.feed(encode_frame(21, bytes.fromhex("0304000A000B")) + encode_frame(21, bytes.fromhex("8302")))
    a, b = dec.next_frame(), dec.next_frame()
    assert a is not None and parse_response(a.pdu).registers == (10, 11)
    assert b is not None and parse_response(b.pdu).exception == 2


# ------------------------------------------------------------------ point encoding


def _p(t: PointType, size: int = 1) -> PointDef:
    return PointDef("X", 0, t, size)


@pytest.mark.parametrize(
    ("ptype", "size", "sentinel"),
    [
        (PointType.UINT16, 1, [0xFFFF]),
        (PointType.INT16, 1, [0x8000]),
        (PointType.UINT32, 2, [0xFFFF, 0xFFFF]),
        (PointType.INT32, 2, [0x8000, 0]),
        (PointType.ACC32, 2, [0, 0]),
        (PointType.ENUM16, 1, [0xFFFF]),
        (PointType.BITFIELD32, 2, [0xFFFF, 0xFFFF]),
        (PointType.SUNSSF, 1, [0x8000]),
        (PointType.STRING, 4, [0, 0, 0, 0]),
    ],
)
def test_not_implemented_sentinels(ptype: PointType, size: int, sentinel: list[int]) -> None:
    assert encode_value(_p(ptype, size), None) == sentinel


def test_scaled_and_signed_values() -> None:
    assert encode_value(_p(PointType.UINT16), 51.23, -2) == [5123]
    assert encode_value(_p(PointType.INT16), -12.5, -1) == [0xFF83]
    assert encode_value(_p(PointType.INT32, 2), -2, None) == [0xFFFF, 0xFFFE]
    assert encode_value(_p(PointType.UINT32, 2), 70000, None) == [1, 4464]
    assert encode_value(_p(PointType.SUNSSF), -2) == [0xFFFE]
    assert encode_value(_p(PointType.BITFIELD16), frozenset({0, 3})) == [9]
    assert encode_value(_p(PointType.STRING, 2), "SunSpec") == [0x5375, 0x6E53]
    assert decode_raw(_p(PointType.INT16), [0xFF83]) == -125
    assert decode_raw(_p(PointType.UINT16), [0xFFFF]) is None
    assert decode_raw(_p(PointType.STRING, 2), [0x4142, 0]) == "AB"


@pytest.mark.parametrize(
    ("ptype", "value", "sf"),
    [
        (PointType.UINT16, 655.35, -2),  # would be the sentinel 0xFFFF
        (PointType.UINT16, -1, None),
        (PointType.INT16, -3276.8, -1),  # would be the sentinel 0x8000
        (PointType.INT16, 40000, None),
        (PointType.UINT16, float("nan"), None),
    ],
)
def test_values_that_do_not_fit(ptype: PointType, value: float, sf: int | None) -> None:
    with pytest.raises(LocalProtocolError):
        encode_value(_p(ptype), value, sf)


def test_register_image_reads_and_merges() -> None:
    image = RegisterImage([(10, [1, 2]), (12, [3]), (100, [9])])
    assert image.registers(10, 3) == [1, 2, 3]
    assert image.read(100, 1) == b"\x00\x09"
    for address, count in ((9, 1), (12, 2), (99, 2), (101, 1)):
        with pytest.raises(ModbusError) as err:
            image.read(address, count)
        assert err.value.code is ExceptionCode.ILLEGAL_DATA_ADDRESS
    with pytest.raises(LocalProtocolError):
        RegisterImage([(0, [1, 2]), (1, [3])])
