"""Tianpower / Basengreen binary framing: `SOI ADR CMD LEN DATA CHK EOI`, checksum, incremental decoder.

SOI is 0x7E (0x7C on some Revov/TianPower firmwares; both are accepted). The frame length comes from
LEN (total = LEN + 6), never from looking for 0x0D, which occurs inside data and as a checksum. One
exception, documented in the reference: a CMD 0x43 *request* carries the table selector (0xE0 or 0x00)
in the LEN position and no data.

CHK = (XOR of SOI..last data byte) XOR (SUM of the same bytes), masked to 8 bits.

Sans-I/O: nothing here waits, reads or writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.bms.base import Frame, FrameDecoder
from protocol.bms.tianpower.shapes import looks_like_request
from protocol.errors import LocalProtocolError, RemoteProtocolError

SOI = 0x7E
SOI_ALT = 0x7C  # Revov / some TianPower firmwares
START_BYTES = (SOI, SOI_ALT)
EOI = 0x0D
HEADER_LEN = 4  # SOI ADR CMD LEN
OVERHEAD = 6  # header + CHK + EOI
CMD_READ_PARAMS = 0x43
PARAM_TABLE_SELECTORS = (0xE0, 0x00)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """XOR^SUM checksum over SOI..last data byte."""
    x = 0
    s = 0
    for b in data:
        x ^= b
        s += b
    return (x ^ s) & 0xFF


@dataclass(frozen=True, slots=True)
class TpFrame(Frame):
    """A validated Tianpower frame. `length_byte` is the raw LEN position (the table selector in a
    CMD 0x43 request); `data` is the payload between LEN and CHK."""

    soi: int
    length_byte: int
    data: bytes


def _check_byte(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{name} must be a byte (0..255), got {value!r}")


def build_frame(address: int, command: int, data: bytes = b"", *, soi: int = SOI) -> bytes:
    """Frame `data` for `command` to/from `address` (LEN = len(data))."""
    _check_byte("address", address)
    _check_byte("command", command)
    if soi not in START_BYTES:
        raise LocalProtocolError(f"start byte must be 0x7E or 0x7C, got {soi!r}")
    if len(data) > 0xFF:
        raise LocalProtocolError(f"payload of {len(data)} bytes does not fit LEN (max 255)")
    body = bytes((soi, address, command, len(data))) + bytes(data)
    return body + bytes((checksum(body), EOI))


def build_table_read(address: int, selector: int, *, soi: int = SOI) -> bytes:
    """The CMD 0x43 request shape: selector in the LEN position, no data."""
    _check_byte("address", address)
    if selector not in PARAM_TABLE_SELECTORS:
        raise LocalProtocolError(f"parameter table selector must be 0xE0 or 0x00, got {selector!r}")
    body = bytes((soi, address, CMD_READ_PARAMS, selector))
    return body + bytes((checksum(body), EOI))


def _is_table_read(raw: bytes | bytearray) -> bool:
    return (
        len(raw) >= OVERHEAD
        and raw[2] == CMD_READ_PARAMS
        and raw[3] in PARAM_TABLE_SELECTORS
        and raw[5] == EOI
        and raw[4] == checksum(raw[:4])
    )


def frame_length(head: bytes | bytearray) -> int:
    """Total length announced by a header (at least 4 bytes)."""
    return head[3] + OVERHEAD


def _make(raw: bytes, classify: bool = True) -> TpFrame:
    if _is_table_read(raw) and len(raw) == OVERHEAD:
        return TpFrame(raw, raw[1], raw[2], True, raw[0], raw[3], b"")
    data = raw[HEADER_LEN:-2]
    frame = TpFrame(raw, raw[1], raw[2], False, raw[0], raw[3], data)
    if classify and looks_like_request(frame.command, data):
        return TpFrame(raw, raw[1], raw[2], True, raw[0], raw[3], data)
    return frame


def parse_frame(raw: bytes) -> TpFrame:
    """Validate one complete frame (exactly the given bytes) with a clear error for each defect."""
    raw = bytes(raw)
    if len(raw) < OVERHEAD:
        raise RemoteProtocolError(f"frame too short: {len(raw)} bytes, a frame has at least {OVERHEAD}")
    if raw[0] not in START_BYTES:
        raise RemoteProtocolError(f"bad start byte 0x{raw[0]:02X} (expected 0x7E or 0x7C)")
    if _is_table_read(raw) and len(raw) == OVERHEAD:
        return _make(raw)
    expected = frame_length(raw)
    if len(raw) != expected:
        raise RemoteProtocolError(
            f"wrong length: LEN 0x{raw[3]:02X} announces {raw[3]} data bytes ({expected}-byte frame), "
            f"got {len(raw)} bytes"
        )
    if raw[-1] != EOI:
        raise RemoteProtocolError(f"bad end byte 0x{raw[-1]:02X} (expected 0x0D)")
    computed = checksum(raw[:-2])
    if raw[-2] != computed:
        raise RemoteProtocolError(f"checksum mismatch: frame has 0x{raw[-2]:02X}, computed 0x{computed:02X}")
    return _make(raw)


class TianpowerDecoder(FrameDecoder):
    """Incremental decoder (contract in `protocol.bms.base`)."""

    def _drop(self, n: int) -> None:
        del self._buf[:n]

    def _valid_at(self, pos: int) -> int:
        """Length of a complete valid frame starting at `pos`, or 0."""
        buf = self._buf
        if len(buf) - pos < OVERHEAD or buf[pos] not in START_BYTES:
            return 0
        if _is_table_read(buf[pos : pos + OVERHEAD]):
            return OVERHEAD
        total = buf[pos + 3] + OVERHEAD
        end = pos + total
        if end > len(buf) or buf[end - 1] != EOI or buf[end - 2] != checksum(buf[pos : end - 2]):
            return 0
        return total

    def next_frame(self) -> TpFrame | None:
        buf = self._buf
        start = next((i for i, b in enumerate(buf) if b in START_BYTES), None)
        if start is None:
            self.discarded_bytes += len(buf)
            buf.clear()
            return None
        if start:
            self.discarded_bytes += start
            self._drop(start)
        if len(buf) < HEADER_LEN:
            return None
        if len(buf) >= OVERHEAD and _is_table_read(buf[:OVERHEAD]):
            raw = bytes(buf[:OVERHEAD])
            self._drop(OVERHEAD)
            return _make(raw)
        total = frame_length(buf)
        if len(buf) < total:
            # Still incomplete. If a complete valid frame already sits further on, the bytes at the
            # head were a false start (garbage containing a start byte): resynchronise on it.
            for pos in range(1, len(buf) - OVERHEAD + 1):
                if buf[pos] in START_BYTES and self._valid_at(pos):
                    self.discarded_bytes += pos
                    self._drop(pos)
                    raise RemoteProtocolError(
                        f"incomplete frame abandoned ({pos} bytes): a valid frame follows"
                    )
            return None
        raw = bytes(buf[:total])
        if raw[-1] != EOI:
            self.discarded_bytes += 1
            self._drop(1)
            raise RemoteProtocolError(
                f"bad end byte 0x{raw[-1]:02X} at offset {total - 1} (LEN announced {raw[3]} data bytes)"
            )
        computed = checksum(raw[:-2])
        if raw[-2] != computed:
            self.discarded_bytes += 1
            self._drop(1)
            raise RemoteProtocolError(
                f"checksum mismatch: frame has 0x{raw[-2]:02X}, computed 0x{computed:02X}"
            )
        self._drop(total)
        return _make(raw)
