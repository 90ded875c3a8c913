"""PACE framing: golden vectors from the reference, checksums, incremental decoding, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bms.pace import EXAMPLES, FAMILY, describe
from protocol.bms.pace.frame import (
    PaceDecoder,
    PaceFrame,
    chksum,
    encode_frame,
    lchksum,
    length_field,
    parse_frame,
)
from protocol.bms.registry import FAMILY_MODULES
from protocol.errors import LocalProtocolError, RemoteProtocolError

# (frame, VER, ADR, CID1, CID2/RTN, INFO hex, is_request) -- vectors from the public PACE sources
# (nkinnan/esphome-pace-bms, cpttinkering/daren-485; docs/protocols.md "Sources").
GOLDEN = [
    # YD/T1363 spec example (CHKSUM FD3B); 0x43 is no PACE command, so it reads as an RTN
    (b"~20014043E00200FD3B\r", 0x20, 0x01, 0x40, 0x43, "00", False),
    (b"~25014642E00201FD30\r", 0x25, 0x01, 0x46, 0x42, "01", True),
    (b"~25014644E00201FD2E\r", 0x25, 0x01, 0x46, 0x44, "01", True),
    (b"~20014A420000FDA2\r", 0x20, 0x01, 0x4A, 0x42, "", True),
    (b"~2000464F0000FD9A\r", 0x20, 0x00, 0x46, 0x4F, "", True),
    (b"~200046000000FDB4\r", 0x20, 0x00, 0x46, 0x00, "", False),
    (b"~260046000000FDAE\r", 0x26, 0x00, 0x46, 0x00, "", False),
    (b"~250046000000FDAF\r", 0x25, 0x00, 0x46, 0x00, "", False),
    (b"~250046EB0000FD88\r", 0x25, 0x00, 0x46, 0xEB, "", True),
    (b"~25004600A006131400FC6F\r", 0x25, 0x00, 0x46, 0x00, "131400", False),
    (b"~250046ECA006131400FC47\r", 0x25, 0x00, 0x46, 0xEC, "131400", True),
    (EXAMPLES["v25_analog_response"], 0x25, 0x01, 0x46, 0x00, None, False),
]


def test_length_checksum_spec_examples() -> None:
    assert length_field(18) == 0xD012
    assert length_field(0) == 0x0000
    assert lchksum(2) == 0xE
    assert chksum(b"20014043E00200") == 0xFD3B


@pytest.mark.parametrize(("raw", "ver", "adr", "cid1", "cid2", "info", "is_req"), GOLDEN)
def test_golden_both_directions(
    raw: bytes, ver: int, adr: int, cid1: int, cid2: int, info: str | None, is_req: bool
) -> None:
    frame = parse_frame(raw)
    assert (frame.version, frame.address, frame.cid1, frame.command, frame.is_request) == (
        ver,
        adr,
        cid1,
        cid2,
        is_req,
    )
    if info is not None:
        assert frame.info.hex().upper() == info
    # encode direction: the same fields give the same bytes
    assert encode_frame(ver, adr, cid1, cid2, frame.info) == raw


@pytest.mark.parametrize("raw", [g[0] for g in GOLDEN])
def test_decoder_whole_bytewise_and_trailing_junk(raw: bytes) -> None:
    whole = PaceDecoder()
    whole.feed(raw)
    assert whole.next_frame() == parse_frame(raw)
    assert whole.next_frame() is None

    bytewise = PaceDecoder()
    got: list[PaceFrame] = []
    for i in range(len(raw)):
        bytewise.feed(raw[i : i + 1])
        f = bytewise.next_frame()
        if f is not None:
            got.append(f)
    assert got == [parse_frame(raw)]

    junk = PaceDecoder()
    junk.feed(b"\x00\xffgarbage" + raw + b"\r\n~~zz" + raw + b"tail")
    frames = [f for f in junk.frames() if isinstance(f, PaceFrame)]
    assert frames == [parse_frame(raw), parse_frame(raw)]


def _corrupt_chksum(raw: bytes) -> bytes:
    last = raw[-2:-1]
    repl = b"0" if last != b"0" else b"1"
    return raw[:-2] + repl + raw[-1:]


def test_bad_chksum_is_remote_error_and_decoder_resyncs() -> None:
    good = b"~25014642E00201FD30\r"
    bad = _corrupt_chksum(good)
    with pytest.raises(RemoteProtocolError, match="CHKSUM"):
        parse_frame(bad)
    dec = PaceDecoder()
    dec.feed(bad + good)
    out = list(dec.frames())
    assert isinstance(out[0], RemoteProtocolError)
    assert out[1] == parse_frame(good)
    assert len(out) == 2


def test_bad_lchksum() -> None:
    bad = b"~25014642F00201FD2F\r"  # LCHKSUM F instead of E (CHKSUM recomputed)
    body = bad[1:-5]
    bad = b"~" + body + f"{chksum(body):04X}".encode() + b"\r"
    with pytest.raises(RemoteProtocolError, match="LCHKSUM"):
        parse_frame(bad)
    dec = PaceDecoder()
    dec.feed(bad)
    with pytest.raises(RemoteProtocolError, match="LCHKSUM"):
        dec.next_frame()


def test_wrong_length_and_bad_characters() -> None:
    good = b"~25014642E00201FD30\r"
    with pytest.raises(RemoteProtocolError, match="length mismatch"):
        parse_frame(good[:-1] + b"0\r")
    with pytest.raises(RemoteProtocolError, match="too short"):
        parse_frame(b"~2501\r")
    with pytest.raises(RemoteProtocolError, match="start with"):
        parse_frame(b"x" + good[1:])
    with pytest.raises(RemoteProtocolError, match="CR"):
        parse_frame(good[:-1] + b"\n")
    with pytest.raises(RemoteProtocolError):
        parse_frame(b"~25014642E002G1FD30\r")


def test_truncated_frame_followed_by_next_frame_resyncs_without_waiting() -> None:
    good = b"~25014644E00201FD2E\r"
    truncated = EXAMPLES["v25_analog_response"][:40]
    dec = PaceDecoder()
    dec.feed(truncated + good)
    out = list(dec.frames())
    assert isinstance(out[0], RemoteProtocolError)
    assert out[-1] == parse_frame(good)


def test_lowercase_hex_is_accepted_with_its_own_checksum() -> None:
    body = b"25014642e00201"
    raw = b"~" + body + f"{chksum(body):04x}".encode() + b"\r"
    f = parse_frame(raw)
    assert (f.command, f.info) == (0x42, b"\x01")


def test_encode_refuses_what_the_protocol_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(0x25, 256, 0x46, 0x42)
    with pytest.raises(LocalProtocolError):
        encode_frame(0x25, 1, 0x46, 0x42, bytes(0x800))


def test_buffer_is_bounded() -> None:
    dec = PaceDecoder()
    dec.feed(b"~" + b"0" * 20000)
    assert dec.buffered <= dec.max_buffer
    assert dec.discarded_bytes > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_remote_errors_then_resync(data: bytes) -> None:
    good = b"~25014644E00201FD2E\r"
    dec = PaceDecoder()
    dec.feed(data)
    for item in dec.frames():
        assert isinstance(item, PaceFrame | RemoteProtocolError)
    dec.feed(good)
    got = [f for f in dec.frames() if isinstance(f, PaceFrame)]
    assert got and got[-1] == parse_frame(good)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([0x20, 0x25]),
    st.integers(0, 255),
    st.sampled_from([0x46, 0x4A]),
    st.integers(0, 255),
    st.binary(max_size=120),
)
def test_encode_decode_roundtrip(ver: int, adr: int, cid1: int, cid2: int, info: bytes) -> None:
    raw = encode_frame(ver, adr, cid1, cid2, info)
    f = parse_frame(raw)
    assert (f.version, f.address, f.cid1, f.command, f.info, f.raw) == (ver, adr, cid1, cid2, info, raw)


def test_family_registered_and_examples_valid() -> None:
    assert "protocol.bms.pace" in FAMILY_MODULES
    fam = FAMILY
    assert fam.name == "pace"
    for raw in fam.examples.values():
        dec = fam.new_decoder()
        dec.feed(raw)
        assert dec.next_frame() is not None
        assert describe(raw)["protocol"] == "pace"
    probe = fam.probe_request(0)
    assert probe == b"~2000464F0000FD9A\r"
    assert fam.is_probe_answer(parse_frame(b"~200046000000FDB4\r"))
    assert not fam.is_probe_answer(parse_frame(probe))  # our own echo


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_describe_only_raises_remote_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        describe(data)
