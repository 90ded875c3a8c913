"""What every BMS wire-protocol family provides: frames, an incremental decoder, a registry entry.

A family module (`protocol/bms/tianpower.py`, `protocol/bms/pace.py`) defines its frame type
(a subclass of `Frame`), its `FrameDecoder` subclass, request builders, response builders (used
by the simulator) and typed results, and registers one `BmsFamily` in `protocol.bms.registry`.

Decoder contract (the fuzz and contract tests check it for every registered family):
- `feed(data)` appends any chunk; the internal buffer is bounded (`max_buffer`): on overflow the
  oldest bytes are dropped and counted in `discarded_bytes`.
- `next_frame()` returns the next complete, validated frame, or `None` when more bytes are needed.
  When the bytes at the head of the buffer cannot be a valid frame (bad checksum, bad length, bad
  characters) it drops them up to the next possible start byte and raises `RemoteProtocolError`;
  the caller counts the error and calls `next_frame()` again. No other exception may escape.
- Garbage before a start byte is skipped silently (counted in `discarded_bytes`).

Nothing here performs I/O.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.bms.bootloader import BootCarriage
from protocol.buffer import BoundedBuffer
from protocol.errors import RemoteProtocolError


class FlagKind(enum.StrEnum):
    """How a family classifies each status bit it decodes (the model keeps the four apart)."""

    PROTECTION = "protection"
    ALARM = "alarm"
    FAULT = "fault"
    STATE = "state"


@dataclass(frozen=True, slots=True)
class Frame:
    """A validated frame as it was on the wire."""

    raw: bytes
    address: int
    command: int  # Tianpower CMD; PACE CID2 of the request, or RTN in a response
    is_request: bool  # True when the frame has the shape of a master's request (e.g. an echo)


class FrameDecoder(BoundedBuffer, abc.ABC):
    """Incremental, bounded, resynchronising decoder (see the module docstring); the bounded buffer
    (`feed`, `buffered`, `clear`, `discarded_bytes`) is `protocol.buffer.BoundedBuffer`."""

    @abc.abstractmethod
    def next_frame(self) -> Frame | None:
        """The next valid frame, None for "need more", or RemoteProtocolError (bytes dropped)."""

    def frames(self) -> Iterator[Frame | RemoteProtocolError]:
        """Drain everything currently decodable, yielding frames and the errors met on the way."""
        while True:
            try:
                frame = self.next_frame()
            except RemoteProtocolError as err:
                yield err
                continue
            if frame is None:
                return
            yield frame


@dataclass(frozen=True, slots=True)
class BmsFamily:
    """A registry entry: everything generic code (contract tests, `decode`, scan) needs."""

    name: str  # "tianpower", "pace"
    description: str
    new_decoder: Callable[[], FrameDecoder]
    # Parse one complete captured frame (request or response) into JSON-able data with units and
    # flag names; raises RemoteProtocolError with a clear message for bad checksum/length/command.
    describe: Callable[[bytes], Mapping[str, Any]]
    # Golden frames for contract tests: name -> raw bytes (valid frames of this family).
    examples: Mapping[str, bytes]
    # Build the request that `scan` sends to find a pack at an address.
    probe_request: Callable[[int], bytes]
    # True when `frame` is a valid answer to the probe (used by scan/auto-detection).
    is_probe_answer: Callable[[Frame], bool]
    # How this family carries the firmware-upgrade messages (its `boot` module).
    boot: BootCarriage
