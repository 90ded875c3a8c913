"""Contract test over every registered BMS family (`protocol.bms.registry.families()`).

Each family's golden examples decode whole, byte by byte and followed by trailing junk; `describe`
accepts each of them; arbitrary bytes only ever yield frames, RemoteProtocolError or "need more";
after garbage the decoder resynchronises on the next valid frame; the buffer stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.bms.base import BmsFamily, Frame, FrameDecoder
from protocol.bms.registry import families, get
from protocol.errors import RemoteProtocolError

FAMILIES = sorted(families())
CASES = [(name, ex) for name in FAMILIES for ex in sorted(families()[name].examples)]
JUNK = b"\x00\xff\x13garbage\x01\x02"


def _drain(dec: FrameDecoder) -> tuple[list[Frame], list[RemoteProtocolError]]:
    frames: list[Frame] = []
    errors: list[RemoteProtocolError] = []
    for _ in range(10_000):  # bounded: each error drops at least one byte
        try:
            frame = dec.next_frame()
        except RemoteProtocolError as err:
            errors.append(err)
            continue
        if frame is None:
            return frames, errors
        frames.append(frame)
    raise AssertionError("decoder did not settle")


def test_registry_has_both_families() -> None:
    assert {"tianpower", "pace"} <= set(FAMILIES)
    for name in FAMILIES:
        assert get(name).name == name
    with pytest.raises(KeyError, match="unknown BMS protocol 'nope'"):
        get("nope")


@pytest.mark.parametrize("family", FAMILIES)
def test_family_entry_is_complete(family: str) -> None:
    fam: BmsFamily = families()[family]
    assert fam.description
    assert len(fam.examples) >= 3
    probe = fam.probe_request(1)
    dec = fam.new_decoder()
    dec.feed(probe)
    frames, errors = _drain(dec)
    assert errors == [] and [f.raw for f in frames] == [probe]
    assert frames[0].address == 1 and frames[0].is_request
    assert not fam.is_probe_answer(frames[0])  # our own echo is never the answer


@pytest.mark.parametrize(("family", "example"), CASES)
def test_example_whole(family: str, example: str) -> None:
    fam = families()[family]
    raw = fam.examples[example]
    dec = fam.new_decoder()
    dec.feed(raw)
    frames, errors = _drain(dec)
    assert errors == []
    assert [f.raw for f in frames] == [raw]
    assert dec.buffered == 0


@pytest.mark.parametrize(("family", "example"), CASES)
def test_example_byte_by_byte(family: str, example: str) -> None:
    fam = families()[family]
    raw = fam.examples[example]
    dec = fam.new_decoder()
    got: list[Frame] = []
    for i in range(len(raw)):
        dec.feed(raw[i : i + 1])
        frames, errors = _drain(dec)
        assert errors == []
        got += frames
        if i < len(raw) - 1:
            assert frames == [], f"frame completed early at byte {i}"
    assert [f.raw for f in got] == [raw]


@pytest.mark.parametrize(("family", "example"), CASES)
def test_example_with_trailing_junk(family: str, example: str) -> None:
    fam = families()[family]
    raw = fam.examples[example]
    dec = fam.new_decoder()
    dec.feed(raw + JUNK)
    frames, _errors = _drain(dec)
    assert [f.raw for f in frames] == [raw]


@pytest.mark.parametrize(("family", "example"), CASES)
def test_example_describes(family: str, example: str) -> None:
    fam = families()[family]
    out = fam.describe(fam.examples[example])
    assert isinstance(out, Mapping) and out


@pytest.mark.parametrize("family", FAMILIES)
def test_describe_rejects_a_corrupted_example(family: str) -> None:
    fam = families()[family]
    raw = bytearray(max(fam.examples.values(), key=len))
    raw[len(raw) // 2] ^= 0x01
    with pytest.raises(RemoteProtocolError):
        fam.describe(bytes(raw))


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=400), chunk=st.integers(1, 64))
def test_fuzz_only_remote_errors_then_resync(family: str, garbage: bytes, chunk: int) -> None:
    fam = families()[family]
    good = fam.probe_request(2)
    dec = fam.new_decoder()
    for i in range(0, len(garbage), chunk):
        dec.feed(garbage[i : i + chunk])
        _drain(dec)  # anything but RemoteProtocolError escapes and fails the test
    # The next valid frames are found again (the first may be absorbed by a false start that
    # happened to complete on it, which is astronomically rare; the second one never is).
    dec.feed(good + good)
    frames, _ = _drain(dec)
    assert good in [f.raw for f in frames]
    assert dec.buffered <= dec.max_buffer


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=150)
@given(data=st.binary(max_size=300))
def test_fuzz_describe_raises_only_remote_errors(family: str, data: bytes) -> None:
    fam = families()[family]
    try:
        out = fam.describe(data)
    except RemoteProtocolError:
        return
    assert isinstance(out, Mapping)


@pytest.mark.parametrize("family", FAMILIES)
def test_buffer_is_bounded(family: str) -> None:
    fam = families()[family]
    dec = fam.new_decoder()
    for _ in range(4):
        dec.feed(b"\x00" * dec.max_buffer)
        _drain(dec)
    dec.feed(b"\x7e\x01" + b"\x7e" * (dec.max_buffer * 2))
    assert dec.buffered <= dec.max_buffer
    _drain(dec)
    assert dec.discarded_bytes > 0
