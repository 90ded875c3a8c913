"""The neutral CAN data frame every inverter protocol, the DBC codec and the CAN service exchange.
Independent of any CAN library; sans-I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class CanFrame:
    """One classic CAN data frame, independent of any CAN library."""

    arbitration_id: int
    data: bytes
    is_extended: bool = False

    def __post_init__(self) -> None:
        limit = 0x1FFFFFFF if self.is_extended else 0x7FF
        if not 0 <= self.arbitration_id <= limit:
            raise LocalProtocolError(f"CAN id {self.arbitration_id:#x} out of range")
        if len(self.data) > 8:
            raise LocalProtocolError(f"CAN frame {self.arbitration_id:#x} longer than 8 bytes")
