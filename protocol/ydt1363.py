"""YD/T1363-style ASCII-hex framing shared by the PACE BMS protocol and the Pylontech RS485 emulation.

A frame is `~ VER ADR CID1 CID2 LENGTH INFO CHKSUM \\r`; every field between SOI and EOI travels as
upper-case ASCII hex (one byte = two characters). LENGTH is 16 bits: the low 12 bits (LENID) count
the ASCII characters of INFO, the top 4 bits (LCHKSUM) are the two's complement mod 16 of the sum of
LENID's three nibbles. CHKSUM is the two's complement mod 65536 of the sum of the ASCII codes of
every character from VER to the end of INFO. In a response CID2 carries the return code (`Rtn`).

Only the parts both protocols share live here (checksums, LENGTH, the encoder, the return codes);
each protocol keeps its own decoder because they treat bad frames differently (the PACE master
drops them, the Pylon responder answers them with an RTN).

This module is sans-I/O: it must never import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations

import enum

from protocol.errors import LocalProtocolError

SOI = 0x7E  # '~'
EOI = 0x0D  # '\r'
MAX_LENID = 0xFFF


class Rtn(enum.IntEnum):
    """Return codes carried in CID2 of a response."""

    NORMAL = 0x00
    VER_ERROR = 0x01
    CHKSUM_ERROR = 0x02
    LCHKSUM_ERROR = 0x03
    CID2_INVALID = 0x04
    FORMAT_ERROR = 0x05
    INVALID_DATA = 0x06
    ADR_ERROR = 0x90
    INTERNAL_COMM_ERROR = 0x91


def lchksum(lenid: int) -> int:
    """The 4-bit length checksum of a 12-bit LENID."""
    total = (lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF)
    return (-total) & 0xF


def length_field(lenid: int) -> int:
    """LENGTH = LCHKSUM (4 bits) + LENID (12 bits, number of ASCII characters of INFO)."""
    if not 0 <= lenid <= MAX_LENID:
        raise LocalProtocolError(f"INFO of {lenid} characters does not fit LENID (max {MAX_LENID})")
    return (lchksum(lenid) << 12) | lenid


def chksum(body: bytes | bytearray) -> int:
    """CHKSUM: two's complement (mod 65536) of the sum of the ASCII codes VER…INFO."""
    return (-sum(body)) & 0xFFFF


def _byte(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} {value!r} does not fit one byte")
    return value


def encode_frame(version: int, address: int, cid1: int, cid2: int, info: bytes = b"") -> bytes:
    """Build one frame (for a response pass the RTN as `cid2`); `info` is binary, sent as hex."""
    info_hex = bytes(info).hex().upper().encode()
    head = (
        f"{_byte(version, 'VER'):02X}{_byte(address, 'ADR'):02X}{_byte(cid1, 'CID1'):02X}"
        f"{_byte(cid2, 'CID2'):02X}{length_field(len(info_hex)):04X}"
    ).encode()
    body = head + info_hex
    return b"~" + body + f"{chksum(body):04X}".encode() + b"\r"
