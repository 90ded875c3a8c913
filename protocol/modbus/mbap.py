"""Modbus/TCP framing: the 7-byte MBAP header around a PDU, and an incremental ADU decoder.

MBAP layout (big-endian): transaction id (2), protocol id (2, always 0), length (2, counts the
unit id and the PDU: 2..254), unit id (1). The decoder accepts any chunking, returns every complete
ADU in order (pipelined requests) and keeps a partial one for the next chunk. A header that cannot
be valid raises `RemoteProtocolError`; on a byte stream there is no way to resynchronise, so the
caller closes that connection.

This module must never perform I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol.errors import LocalProtocolError, RemoteProtocolError

HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
HEADER_SIZE = HEADER.size  # 7
MIN_LENGTH = 2  # unit id + function code
MAX_LENGTH = 254  # unit id + 253-byte PDU
MAX_ADU = 6 + MAX_LENGTH  # 260


@dataclass(frozen=True, slots=True)
class Adu:
    transaction_id: int
    unit_id: int
    pdu: bytes


def encode_adu(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    if not 1 <= len(pdu) <= MAX_LENGTH - 1:
        raise LocalProtocolError(f"PDU length {len(pdu)} outside 1..{MAX_LENGTH - 1}")
    if not 0 <= transaction_id <= 0xFFFF or not 0 <= unit_id <= 0xFF:
        raise LocalProtocolError("transaction id or unit id out of range")
    return HEADER.pack(transaction_id, 0, len(pdu) + 1, unit_id) + pdu


class MbapDecoder:
    """Feed bytes, drain ADUs. Raises `RemoteProtocolError` on an invalid header (then unusable)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self.failed:
            raise RemoteProtocolError("decoder already failed on an invalid MBAP header")
        self._buf += data

    def next_adu(self) -> Adu | None:
        """The next complete ADU, or None when more bytes are needed."""
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        tid, proto, length, unit = HEADER.unpack_from(buf)
        if proto != 0:
            self.failed = True
            raise RemoteProtocolError(f"MBAP protocol id {proto} is not 0")
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            self.failed = True
            raise RemoteProtocolError(f"MBAP length {length} outside {MIN_LENGTH}..{MAX_LENGTH}")
        end = 6 + length
        if len(buf) < end:
            return None
        pdu = bytes(buf[HEADER_SIZE:end])
        del buf[:end]
        return Adu(tid, unit, pdu)

    def drain(self) -> list[Adu]:
        """Every complete ADU in the buffer, in order (raises like `next_adu`)."""
        out: list[Adu] = []
        while (adu := self.next_adu()) is not None:
            out.append(adu)
        return out
