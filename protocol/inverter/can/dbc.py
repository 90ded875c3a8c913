"""Loading the shipped DBC files and encoding/decoding messages through cantools.

Every signal of a message needs a value (values for signals the message lacks are ignored, so
protocol variants can share one value function). Values are clamped to each signal's declared
range and rounded to its resolution before encoding, so a policy value outside what the wire
can carry never raises in the send path. `INVALID` asks for the protocol's "not available" raw
value (all ones for unsigned, the minimum for signed; SMA). Nothing is read at import time:
`load()` reads a file on first use and caches it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from importlib import resources

import cantools.database

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.inverter.can.frame import CanFrame

INVALID = math.nan  # "not available": encoded as 0xFF..FF (unsigned) or 0x80..00 (signed)
DBC_PACKAGE = "mappings.can"


def dbc_text(file: str) -> str:
    return resources.files(DBC_PACKAGE).joinpath(file).read_text(encoding="utf-8")


@cache
def load(file: str) -> cantools.database.can.Database:
    """The DBC file `file` of `mappings/can`, parsed strictly (overlapping signals are an error)."""
    db = cantools.database.load_string(dbc_text(file), database_format="dbc", strict=True)
    if not isinstance(db, cantools.database.can.Database):  # pragma: no cover - dbc always is
        raise LocalProtocolError(f"{file} is not a CAN database")
    return db


def _raw_for(signal: cantools.database.can.Signal, value: float) -> int:
    bits = signal.length
    lo_raw, hi_raw = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signal.is_signed else (0, (1 << bits) - 1)
    if math.isnan(value):
        return lo_raw if signal.is_signed else hi_raw
    scale = float(signal.scale)
    offset = float(signal.offset)
    lo = signal.minimum if signal.minimum is not None else -math.inf
    hi = signal.maximum if signal.maximum is not None else math.inf
    value = min(max(value, float(lo)), float(hi))
    raw = round((value - offset) / scale)
    return min(max(raw, lo_raw), hi_raw)


def encode(db: cantools.database.can.Database, message: str, values: Mapping[str, float]) -> CanFrame:

    try:
        msg = db.get_message_by_name(message)
    except KeyError:
        raise LocalProtocolError(f"message {message!r} is not in the DBC") from None
    missing = [s.name for s in msg.signals if s.name not in values]
    if missing:
        raise LocalProtocolError(f"{message}: no value for signals {missing}")
    raw = {s.name: _raw_for(s, float(values[s.name])) for s in msg.signals}
    data = msg.encode(raw, scaling=False, strict=False)
    return CanFrame(msg.frame_id, bytes(data), msg.is_extended_frame)


def decode(db: cantools.database.can.Database, frame: CanFrame) -> tuple[str, dict[str, float]]:
    """(message name, physical values) of a frame; RemoteProtocolError if our DBC lacks it."""
    msg = next(
        (
            m
            for m in db.messages
            if m.frame_id == frame.arbitration_id and m.is_extended_frame == frame.is_extended
        ),
        None,
    )
    if msg is None:
        kind = "29-bit" if frame.is_extended else "11-bit"
        raise RemoteProtocolError(f"{kind} id {frame.arbitration_id:#x} is not in this protocol's DBC")
    try:
        decoded = msg.decode(frame.data, decode_choices=False, allow_truncated=True)
    except Exception as err:  # cantools raises its own DecodeError family
        raise RemoteProtocolError(f"id {frame.arbitration_id:#x}: {err}") from None
    if not isinstance(decoded, dict):  # pragma: no cover - only container messages decode to lists
        raise RemoteProtocolError(f"id {frame.arbitration_id:#x}: container messages are not supported")
    return msg.name, {k: float(v) for k, v in decoded.items() if isinstance(v, int | float)}
