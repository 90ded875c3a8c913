"""Our firmware-upgrade protocol (protocol.bms.bootloader), sans-I/O: image container, both sides."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bms import bootloader as bl
from protocol.bms.registry import boot
from protocol.errors import LocalProtocolError, RemoteProtocolError

MODEL = "HY-PT003-B200LT55-V1.0.3"


def _image(
    payload: bytes = bytes(range(256)) * 5 + b"tail", version: str = "HY-PT003-B200LT55-V1.0.4"
) -> bytes:
    return bl.build_image("tianpower", "HY-PT003-B200LT55", version, payload)


def _run(session: bl.UpgradeSession, target: bl.BootloaderTarget, max_messages: int | None = None) -> int:
    sent = 0
    while not session.done and (max_messages is None or sent < max_messages):
        op, body = session.next_request()
        session.on_reply(target.handle(op, body))
        sent += 1
    return sent


def test_image_round_trip_and_checks() -> None:
    raw = _image()
    img = bl.parse_image(raw)
    assert img.header.version == "HY-PT003-B200LT55-V1.0.4"
    assert img.header.target == "HY-PT003-B200LT55"
    assert img.header.size == len(raw) - bl.HEADER_SIZE
    assert img.header.blocks == -(-img.header.size // bl.BLOCK_SIZE)
    img.check_target("tianpower", MODEL)
    with pytest.raises(bl.ImageError, match="targets model"):
        img.check_target("tianpower", "TP-OTHER-V1")
    with pytest.raises(bl.ImageError, match="pace"):
        img.check_target("pace", MODEL)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], "header CRC"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "payload CRC32"),
        (lambda b: b[:-3], "header says"),
        (lambda b: b[:20], "header needs"),
    ],
)
def test_damaged_images_are_refused_with_a_reason(mutate, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(bl.ImageError, match=message):
        bl.parse_image(mutate(_image()))


def test_build_refuses_bad_fields() -> None:
    with pytest.raises(LocalProtocolError):
        bl.build_image("tianpower", "", "v", b"x")
    with pytest.raises(LocalProtocolError):
        bl.build_image("nope", "T", "v", b"x")
    with pytest.raises(LocalProtocolError):
        bl.build_image("pace", "T", "v" * 30, b"x")


def test_full_upgrade_changes_the_version() -> None:
    img = bl.parse_image(_image())
    target = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    session = bl.UpgradeSession(img)
    messages = _run(session, target)
    assert session.done
    assert target.version == "HY-PT003-B200LT55-V1.0.4"
    assert target.mode is bl.Mode.APPLICATION
    assert messages == 1 + img.header.blocks + 2  # enter, blocks, verify, reboot
    assert session.resumed_from is None


def test_interrupted_upgrade_resumes_where_it_stopped() -> None:
    img = bl.parse_image(_image())
    target = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    first = bl.UpgradeSession(img)
    _run(first, target, max_messages=4)  # enter + 3 blocks, then the gateway goes away
    assert target.mode is bl.Mode.BOOTLOADER
    assert target.next_block == 3
    assert target.version == MODEL  # still the old firmware
    # Persisted and restored (a process restart of the simulator keeps the partial image).
    restored = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    restored.restore(target.to_json())
    second = bl.UpgradeSession(img)
    _run(second, restored)
    assert second.done and second.resumed_from == 3
    assert restored.version == "HY-PT003-B200LT55-V1.0.4"


def test_corrupt_image_is_refused_and_old_firmware_keeps_running() -> None:
    good = bl.parse_image(_image())
    # A header that promises one payload, blocks that carry another (bit rot on the gateway's disk
    # after the check, or a deliberately forged image): the pack's final check refuses it.
    bad_payload = bytearray(good.payload)
    bad_payload[100] ^= 0x55
    forged = bl.FirmwareImage(good.header, bytes(bad_payload))
    target = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    session = bl.UpgradeSession(forged)
    with pytest.raises(bl.UpgradeError) as err:
        _run(session, target)
    assert err.value.status is bl.Status.IMAGE_CRC_MISMATCH
    assert target.version == MODEL
    assert target.mode is bl.Mode.APPLICATION
    # Reboot without a verified image is refused.
    reply = bl.BootReply.decode(target.handle(bl.Op.REBOOT, b""))
    assert reply.status is bl.Status.BAD_STATE


def test_wrong_target_and_block_crc() -> None:
    target = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    other = bl.parse_image(bl.build_image("tianpower", "TP-LT52", "TP-LT52-V2", b"abc"))
    reply = bl.BootReply.decode(target.handle(bl.Op.ENTER, other.header.encode()))
    assert reply.status is bl.Status.WRONG_TARGET
    img = bl.parse_image(_image())
    assert bl.BootReply.decode(target.handle(bl.Op.ENTER, img.header.encode())).status is bl.Status.OK
    body = bytearray(bl.encode_request(bl.Op.BLOCK, block_number=0, data=img.block(0)))
    body[5] ^= 0x01  # damage one data byte in transit
    reply = bl.BootReply.decode(target.handle(bl.Op.BLOCK, bytes(body)))
    assert reply.status is bl.Status.BAD_BLOCK_CRC and reply.next_block == 0
    reply = bl.BootReply.decode(
        target.handle(bl.Op.BLOCK, bl.encode_request(bl.Op.BLOCK, block_number=2, data=img.block(2)))
    )
    assert reply.status is bl.Status.OUT_OF_ORDER and reply.next_block == 0


def test_block_before_enter_is_bad_state() -> None:
    target = bl.BootloaderTarget("pace", "PACE-X", "PACE-X")
    reply = bl.BootReply.decode(
        target.handle(bl.Op.BLOCK, bl.encode_request(bl.Op.BLOCK, block_number=0, data=b"x"))
    )
    assert reply.status is bl.Status.BAD_STATE


def test_command_codes_per_family() -> None:
    assert boot("tianpower").codes.code(bl.Op.ENTER) == 0xA0
    assert boot("pace").codes.code(bl.Op.STATUS) == 0xF4
    assert boot("pace").codes.op(0xF1) is bl.Op.BLOCK
    assert boot("tianpower").codes.op(0x01) is None


@given(st.binary(max_size=300))
def test_target_never_crashes_on_arbitrary_bodies(body: bytes) -> None:
    target = bl.BootloaderTarget("tianpower", MODEL, MODEL)
    for op in bl.Op:
        reply = bl.BootReply.decode(target.handle(op, body))
        assert isinstance(reply.status, bl.Status)


@given(st.binary(max_size=100))
def test_reply_decoder_raises_only_remote_errors(body: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        bl.BootReply.decode(body)
