"""Modbus RTU framing: unit id + PDU + CRC-16 (polynomial 0xA001 reflected, init 0xFFFF, low byte first).

RTU frames carry no length field; the length follows from the function code (see
`protocol.modbus.pdu.request_length` / `response_length`). For a function whose length cannot be
known (an unsupported one) the decoder looks for the shortest prefix whose CRC matches. The caller
reports inter-frame silences (3.5 character times) with `gap()`, which drops an incomplete frame.
A CRC mismatch drops one byte (resynchronisation) and raises `RemoteProtocolError`; the caller
counts it and calls `next_frame()` again.

This module must never perform I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.buffer import BoundedBuffer
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.modbus.pdu import MAX_PDU_BYTES, request_length, response_length


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus CRC-16 of `data` (the value whose low byte is sent first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def encode_frame(unit_id: int, pdu: bytes) -> bytes:
    if not 0 <= unit_id <= 0xFF:
        raise LocalProtocolError(f"unit id {unit_id} out of range")
    if not 1 <= len(pdu) <= MAX_PDU_BYTES:
        raise LocalProtocolError(f"PDU length {len(pdu)} outside 1..{MAX_PDU_BYTES}")
    body = bytes((unit_id,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class RtuFrame:
    unit_id: int
    pdu: bytes


MAX_FRAME = 1 + MAX_PDU_BYTES + 2  # 256


class RtuDecoder(BoundedBuffer):
    """Incremental RTU decoder for requests (`role="server"`) or responses (`role="client"`)."""

    def __init__(self, role: str = "server", max_buffer: int = 4 * MAX_FRAME) -> None:
        if role not in ("server", "client"):
            raise LocalProtocolError(f"role must be 'server' or 'client', not {role!r}")
        self._length: Callable[[bytes | bytearray | memoryview], int | None] = (
            request_length if role == "server" else response_length
        )
        super().__init__(max_buffer)

    def gap(self) -> None:
        """An inter-frame silence was observed: whatever is buffered is an incomplete frame."""
        self.clear()

    def _drop_one(self, reason: str) -> RemoteProtocolError:
        self._discard(1)
        return RemoteProtocolError(reason)

    def next_frame(self) -> RtuFrame | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        pdu_len = self._length(memoryview(buf)[1:])
        if pdu_len is None:
            return None
        if pdu_len == 0:
            # Unknown length: the shortest prefix with a matching CRC is the frame.
            for end in range(4, min(len(buf), MAX_FRAME) + 1):
                if crc16(buf[: end - 2]) == int.from_bytes(buf[end - 2 : end], "little"):
                    return self._take(end)
            skip = self._later_frame()
            if skip:
                self._discard(skip)
                raise RemoteProtocolError(f"dropped {skip} bytes before the next valid RTU frame")
            if len(buf) >= MAX_FRAME:
                raise self._drop_one("no valid RTU frame at the head of the buffer")
            return None
        end = 1 + pdu_len + 2
        if end > MAX_FRAME:
            raise self._drop_one("RTU frame longer than 256 bytes")
        if len(buf) < end:
            return None
        if crc16(buf[: end - 2]) != int.from_bytes(buf[end - 2 : end], "little"):
            raise self._drop_one("RTU CRC mismatch")
        return self._take(end)

    def _later_frame(self) -> int:
        """Offset of the first complete, CRC-valid frame of known length after the head (0: none)."""
        buf = self._buf
        for start in range(1, len(buf) - 3):
            pdu_len = self._length(memoryview(buf)[start + 1 :])
            if not pdu_len:
                continue
            end = start + 1 + pdu_len + 2
            if end <= len(buf) and crc16(buf[start : end - 2]) == int.from_bytes(
                buf[end - 2 : end], "little"
            ):
                return start
        return 0

    def _take(self, end: int) -> RtuFrame:
        frame = RtuFrame(self._buf[0], bytes(self._buf[1 : end - 2]))
        del self._buf[:end]
        return frame
