"""Tianpower carriage of bms-gateway's firmware-upgrade messages (docs/bootloader.md): CMD 0xA0-0xA4,
DATA = the message. The generic messages and session live in `protocol.bms.bootloader`; this module
only frames them. Sans-I/O: it must never perform I/O nor import the runtime.
"""

from __future__ import annotations

from protocol.bms import bootloader as bl
from protocol.bms.tianpower.frame import build_frame, parse_frame
from protocol.bms.tianpower.shapes import BOOT_CODES

__all__ = ["BOOT_CODES", "CARRIAGE", "decode_reply_frame", "encode_frame"]


def encode_frame(address: int, op: bl.Op, body: bytes) -> bytes:
    """A complete request frame carrying a bootloader message to the pack at `address`."""
    return build_frame(address, BOOT_CODES.code(op), body)


def decode_reply_frame(raw: bytes, op: bl.Op | None = None) -> bl.BootReply:
    """The bootloader reply in a complete response frame (RemoteProtocolError when it is not one)."""
    frame = parse_frame(raw)
    return bl.reply_body(BOOT_CODES.op(frame.command), op, frame.data)


CARRIAGE = bl.BootCarriage(
    "tianpower", BOOT_CODES, encode_frame, decode_reply_frame, answer_carries_command=True
)
