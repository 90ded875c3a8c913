"""The bounded receive buffer every incremental decoder keeps, with a count of the bytes it drops.

A decoder appends whatever the line delivers (`feed`); the buffer never grows beyond `max_buffer`
(the oldest bytes go first) and every byte dropped, for overflow, garbage or a silence on the line,
is counted in `discarded_bytes`. The framing itself (where a frame starts, how long it is) stays
with each protocol's decoder.

This module is sans-I/O: it must never import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations


class BoundedBuffer:
    """Base of the incremental decoders: `_buf` holds the undecoded bytes."""

    max_buffer: int = 8192

    def __init__(self, max_buffer: int | None = None) -> None:
        self._buf = bytearray()
        self.discarded_bytes = 0
        if max_buffer is not None:
            self.max_buffer = max_buffer

    def feed(self, data: bytes) -> None:
        self._buf += data
        excess = len(self._buf) - self.max_buffer
        if excess > 0:
            self._discard(excess)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        """Drop whatever is buffered (counted)."""
        self._discard(len(self._buf))

    def _discard(self, count: int) -> None:
        """Drop the first `count` buffered bytes (counted)."""
        del self._buf[:count]
        self.discarded_bytes += count

    def _skip_to(self, marker: bytes) -> bool:
        """Drop everything before the first `marker`; False (buffer emptied) when there is none."""
        start = self._buf.find(marker)
        if start < 0:
            self.clear()
            return False
        self._discard(start)
        return True
