"""Counters of the Modbus/TCP server, read by the metrics collector and the HTTP status.

The attribute names match what `gateway.north.metrics.collector.ModbusHealth` carries (`requests_by_function`,
`exceptions_by_code`, `connections`). Mutated only by the server on the event loop; never does I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing_to_settle() -> None:
    return None


@dataclass(slots=True)
class ModbusStats:
    # Requests answered by the general path are counted here at once; those answered from a
    # memoised answer are counted on the answer (`server._Memo.hits`) and moved here by `settle`,
    # which every read of the two request counters runs first (and the server, before it drops
    # its memo): the hot path pays one integer increment instead of two counter updates.
    by_function: Counter[int] = field(default_factory=Counter)
    exceptions_by_code: Counter[int] = field(default_factory=Counter)
    by_unit: Counter[int] = field(default_factory=Counter)
    connections: int = 0  # open now
    connections_total: int = 0
    connections_rejected: int = 0  # over the connection limit
    connections_idle_closed: int = 0
    connections_yielded: int = 0  # idle or incomplete connections closed to admit a new client
    frames_timed_out: int = 0  # connections closed: a request did not complete within frame_timeout_s
    malformed_frames: int = 0  # invalid MBAP headers (connection closed)
    throttled: int = 0  # times a client exhausted its request budget and was slowed down
    writes_accepted: int = 0
    image_builds: int = 0
    encode_errors: int = 0  # values that did not fit their register (served as "not implemented")
    settle: Callable[[], None] = field(default=_nothing_to_settle, repr=False, compare=False)

    @property
    def requests_by_function(self) -> Counter[int]:
        """Requests by function code, every request counted (memoised answers included)."""
        self.settle()
        return self.by_function

    @property
    def requests_by_unit(self) -> Counter[int]:
        """Requests by unit id, every request counted (memoised answers included)."""
        self.settle()
        return self.by_unit

    def as_dict(self) -> dict[str, object]:
        return {
            "requests_by_function": dict(self.requests_by_function),
            "exceptions_by_code": dict(self.exceptions_by_code),
            "requests_by_unit": dict(self.requests_by_unit),
            "connections": self.connections,
            "connections_total": self.connections_total,
            "connections_rejected": self.connections_rejected,
            "connections_idle_closed": self.connections_idle_closed,
            "connections_yielded": self.connections_yielded,
            "frames_timed_out": self.frames_timed_out,
            "malformed_frames": self.malformed_frames,
            "throttled": self.throttled,
            "writes_accepted": self.writes_accepted,
            "image_builds": self.image_builds,
            "encode_errors": self.encode_errors,
        }
