"""PACE ASCII frame layer: `~ VER ADR CID1 CID2 LENGTH INFO CHKSUM \\r`, strict parser, decoder.

The YD/T1363 framing itself (hex fields, LENGTH with LCHKSUM, CHKSUM, the encoder, the return codes)
is `protocol.ydt1363`, shared with the Pylontech RS485 emulation; its names are re-exported here.
In a response CID2 carries the return code RTN (see `RTN_TEXT`).

The frame length always comes from LENID, never from looking for `\\r`. The decoder is bounded and
resynchronises on the next `~` after anything invalid.

This module is sans-I/O: it must never import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.bms import bootloader as bl
from protocol.bms.base import Frame, FrameDecoder
from protocol.errors import RemoteProtocolError
from protocol.ydt1363 import EOI as EOI
from protocol.ydt1363 import SOI as SOI
from protocol.ydt1363 import Rtn as Rtn
from protocol.ydt1363 import chksum as chksum
from protocol.ydt1363 import encode_frame as encode_frame
from protocol.ydt1363 import lchksum as lchksum
from protocol.ydt1363 import length_field as length_field

HEADER_CHARS = 12  # VER ADR CID1 CID2 LENGTH(4) as ASCII characters after SOI
MIN_FRAME = 1 + HEADER_CHARS + 4 + 1  # empty INFO

VER_20 = 0x20
VER_25 = 0x25
KNOWN_VERSIONS = frozenset({0x20, 0x25, 0x26})  # 0x26 answers the version probe on some v2.6 packs

CID1_LFP = 0x46  # lithium iron phosphate (PACE)
CID1_EG4 = 0x4A  # EG4 v20 firmware
KNOWN_CID1 = frozenset({0x46, 0x4A, 0x4E, 0x4F})

_HEX = frozenset(b"0123456789ABCDEFabcdef")


RTN_TEXT: dict[int, str] = {
    0x00: "normal",
    0x01: "VER error",
    0x02: "CHKSUM error",
    0x03: "LCHKSUM error",
    0x04: "CID2 invalid",
    0x05: "command format error",
    0x06: "invalid data",
    0x90: "ADR error",
    0x91: "internal communication error",
}


def rtn_text(code: int) -> str:
    return RTN_TEXT.get(code, f"unknown return code 0x{code:02X}")


# bms-gateway's own firmware-upgrade protocol (docs/bootloader.md) on CID2 0xF0-0xF4.
BOOT_CODES = bl.CommandCodes(first=0xF0)

# CID2 values that only ever appear in requests (v25 and v20 command sets). A frame whose CID2 is one
# of these has the shape of a master's request (the bus echo, or another master); every other CID2
# is read as an RTN. 0x90 is both Pylontech's "ADR error" RTN and the pack-count command: it is
# classified as the request, because PACE packs answer errors with the RTN codes 0x01-0x06.
REQUEST_CID2 = frozenset(
    {0x42, 0x44, 0x45, 0x47, 0x4D, 0x4E, 0x4F, 0x51, 0x90, 0x92, 0x93, 0x95}
    | {0x99, 0x9A, 0x9B, 0x9C, 0xA0, 0xA1, 0xA6, 0xA8, 0xAE, 0xAF, 0xB1, 0xB2, 0xB5, 0xB6, 0xC1, 0xC2}
    | set(range(0xD0, 0xE8))
    | {0xEB, 0xEC, 0xED, 0xEE}
    # bms-gateway's own firmware-upgrade protocol (docs/bootloader.md); answers carry RTN 0x00
    | BOOT_CODES.values()
)


@dataclass(frozen=True, slots=True)
class PaceFrame(Frame):
    """A validated PACE frame. `command` is CID2 (request) or RTN (response); `info` is INFO decoded
    from hex to bytes."""

    version: int
    cid1: int
    info: bytes

    @property
    def cid2(self) -> int:
        return self.command

    @property
    def rtn(self) -> int | None:
        return None if self.is_request else self.command


def _hexval(chars: bytes | bytearray) -> int:
    return int(bytes(chars), 16)


def _check_header(head: bytes | bytearray) -> int:
    """Validate the 12 header characters; return LENID. Raises RemoteProtocolError."""
    if not all(c in _HEX for c in head):
        raise RemoteProtocolError("PACE frame header is not ASCII hex")
    length = _hexval(head[8:12])
    lenid = length & 0xFFF
    if (length >> 12) != lchksum(lenid):
        raise RemoteProtocolError(
            f"PACE LCHKSUM error: LENGTH 0x{length:04X} (LENID {lenid}, expected LCHKSUM "
            f"0x{lchksum(lenid):X})"
        )
    if lenid % 2:
        raise RemoteProtocolError(f"PACE LENID {lenid} is odd: INFO must be whole bytes")
    return lenid


def _build(raw: bytes) -> PaceFrame:
    """Validate a complete candidate frame (SOI..EOI, length already consistent with LENID)."""
    body = raw[1:-5]
    if raw[-1] != EOI:
        raise RemoteProtocolError("PACE frame does not end with CR where LENID says it ends")
    if not all(c in _HEX for c in raw[1:-1]):
        raise RemoteProtocolError("PACE frame contains characters that are not ASCII hex")
    got = _hexval(raw[-5:-1])
    want = chksum(body)
    if got != want:
        raise RemoteProtocolError(f"PACE CHKSUM error: frame says 0x{got:04X}, computed 0x{want:04X}")
    version = _hexval(body[0:2])
    address = _hexval(body[2:4])
    cid1 = _hexval(body[4:6])
    cid2 = _hexval(body[6:8])
    info = bytes.fromhex(body[12:].decode())
    return PaceFrame(
        raw=bytes(raw),
        address=address,
        command=cid2,
        is_request=cid2 in REQUEST_CID2,
        version=version,
        cid1=cid1,
        info=info,
    )


def parse_frame(data: bytes) -> PaceFrame:
    """Parse exactly one complete frame (a capture); RemoteProtocolError with a clear message."""
    raw = bytes(data)
    if len(raw) < MIN_FRAME:
        raise RemoteProtocolError(f"PACE frame too short: {len(raw)} bytes, at least {MIN_FRAME} needed")
    if raw[0] != SOI:
        raise RemoteProtocolError("PACE frame must start with '~'")
    lenid = _check_header(raw[1 : 1 + HEADER_CHARS])
    expected = MIN_FRAME + lenid
    if len(raw) != expected:
        raise RemoteProtocolError(
            f"PACE frame length mismatch: LENID {lenid} means {expected} bytes, got {len(raw)}"
        )
    return _build(raw)


class PaceDecoder(FrameDecoder):
    """Incremental decoder (contract in `protocol.bms.base`)."""

    def _drop_head(self) -> None:
        """Drop the SOI at the head and everything up to the next possible SOI."""
        nxt = self._buf.find(b"~", 1)
        self._discard(len(self._buf) if nxt < 0 else nxt)

    def next_frame(self) -> PaceFrame | None:
        if not self._skip_to(b"~"):
            return None
        buf = self._buf
        # Characters seen so far must be hex: a non-hex character (another '~', a CR) inside what
        # should be the header or INFO means this SOI was garbage; resync without waiting for more.
        avail_head = min(len(buf) - 1, HEADER_CHARS)
        if not all(c in _HEX for c in buf[1 : 1 + avail_head]):
            self._drop_head()
            raise RemoteProtocolError("PACE frame header is not ASCII hex")
        if len(buf) < 1 + HEADER_CHARS:
            return None
        try:
            lenid = _check_header(buf[1 : 1 + HEADER_CHARS])
        except RemoteProtocolError:
            self._drop_head()
            raise
        total = MIN_FRAME + lenid
        body_end = min(len(buf), total - 1)
        if not all(c in _HEX for c in buf[1 + HEADER_CHARS : body_end]):
            self._drop_head()
            raise RemoteProtocolError("PACE frame INFO/CHKSUM is not ASCII hex (truncated frame?)")
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        try:
            frame = _build(raw)
        except RemoteProtocolError:
            self._drop_head()
            raise
        del buf[:total]
        return frame
