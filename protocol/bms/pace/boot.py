"""PACE (v25 framing) carriage of bms-gateway's firmware-upgrade messages (docs/bootloader.md): CID2
0xF0-0xF4, INFO = the message in ASCII hex; answers carry RTN 0x00. The generic messages and session
live in `protocol.bms.bootloader`; this module only frames them. Sans-I/O: it must never perform I/O
nor import the runtime.
"""

from __future__ import annotations

from protocol.bms import bootloader as bl
from protocol.bms.pace.commands import request
from protocol.bms.pace.frame import BOOT_CODES, parse_frame
from protocol.errors import RemoteProtocolError

__all__ = ["BOOT_CODES", "CARRIAGE", "decode_reply_frame", "encode_frame"]


def encode_frame(address: int, op: bl.Op, body: bytes) -> bytes:
    """A complete request frame carrying a bootloader message to the pack at `address`."""
    return request(address, BOOT_CODES.code(op), body)


def decode_reply_frame(raw: bytes, op: bl.Op | None = None) -> bl.BootReply:
    """The bootloader reply in a complete response frame; RemoteProtocolError when the frame is
    invalid or carries an error RTN. PACE answers carry the RTN in CID2, not the command: the
    caller's pairing (`op`) is trusted."""
    frame = parse_frame(raw)
    if frame.command != 0:
        raise RemoteProtocolError(f"pack answered the bootloader request with RTN 0x{frame.command:02X}")
    return bl.reply_body(op, op, frame.info)


CARRIAGE = bl.BootCarriage("pace", BOOT_CODES, encode_frame, decode_reply_frame, answer_carries_command=False)
