"""The two error kinds every codec raises.

`RemoteProtocolError`: the peer (a pack, an inverter, a Modbus client) sent bytes that do not form a
valid frame. Callers count it, drop the frame and carry on. It is the only exception a decoder may
let escape for arbitrary input; the fuzz tests assert exactly that.

`LocalProtocolError`: we were asked to build something the protocol cannot express (an address out
of range, a value that does not fit its field). That is a bug or a validation miss on our side.

This module must never import anything with I/O.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of both protocol error kinds."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid (bad checksum, wrong length, unknown command, ...)."""


class LocalProtocolError(ProtocolError):
    """We tried to encode something the protocol cannot carry."""
