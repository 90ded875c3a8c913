"""Caps and requests that outside controllers put on the charge policy.

The Modbus server (SunSpec 802/124 and native control registers), the admin API and the
configuration write *requests* here; the charge policy (`gateway.core.policy.engine`) reads them when it
computes its decision. Nothing here talks to a pack: a request never becomes a raw command.

Every cap set by a remote controller carries an expiry; an expired cap reads as absent, so a
controller that stops refreshing its cap falls back to the policy's own limits.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass


class Source(enum.StrEnum):
    CONFIG = "config"  # user caps from the configuration file (never expire)
    EMS = "ems"  # Modbus writes (SunSpec 124/802, native control registers)
    ADMIN = "admin"  # the admin API


class OperationRequest(enum.StrEnum):
    """SunSpec 802 `SetOp`: connect (normal operation) or disconnect (both directions blocked)."""

    CONNECT = "connect"
    DISCONNECT = "disconnect"


@dataclass(frozen=True, slots=True)
class Cap:
    value: float
    source: Source
    set_at: float
    expires_at: float | None  # wall clock; None = until changed

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


CAP_NAMES = (
    "max_charge_current_a",
    "max_discharge_current_a",
    "max_charge_voltage_v",
    "min_discharge_voltage_v",
    "soc_reserve_min_pct",  # SunSpec 802 SoCRsvMin: stop discharging below this SOC
    "soc_reserve_max_pct",  # SunSpec 802 SoCRsvMax: stop charging above this SOC
)


@dataclass(frozen=True, slots=True)
class ControlState:
    """A consistent read of every active cap at one instant (the policy's input)."""

    caps: dict[str, Cap]
    operation: OperationRequest
    alarm_reset_requested_at: float | None

    def value(self, name: str) -> float | None:
        cap = self.caps.get(name)
        return None if cap is None else cap.value


class Controls:
    """The mutable store of caps, one per (name, source); the policy combines them (minimum wins)."""

    def __init__(self) -> None:
        self._caps: dict[tuple[str, Source], Cap] = {}
        self._operation = OperationRequest.CONNECT
        self._alarm_reset_at: float | None = None
        self.version = 0

    def set_cap(
        self,
        name: str,
        value: float | None,
        source: Source,
        timeout_s: float | None = None,
        now: float | None = None,
    ) -> None:
        """Set (or clear with None) a cap. `timeout_s` makes it revert when not refreshed."""
        if name not in CAP_NAMES:
            raise KeyError(f"unknown cap {name!r}; known: {', '.join(CAP_NAMES)}")
        now = time.time() if now is None else now
        if value is None:
            self._caps.pop((name, source), None)
        else:
            expires = None if timeout_s is None or timeout_s <= 0 else now + timeout_s
            self._caps[(name, source)] = Cap(float(value), source, now, expires)
        self.version += 1

    def set_operation(self, op: OperationRequest) -> None:
        self._operation = op
        self.version += 1

    def request_alarm_reset(self, now: float | None = None) -> None:
        self._alarm_reset_at = time.time() if now is None else now
        self.version += 1

    def state(self, now: float | None = None) -> ControlState:
        """Active caps; for each name the most restrictive active source wins.

        For the SOC reserve minimum and the discharge voltage minimum "most restrictive" is the
        highest value; for every other cap it is the lowest.
        """
        now = time.time() if now is None else now
        best: dict[str, Cap] = {}
        for (name, _src), cap in self._caps.items():
            if not cap.active(now):
                continue
            prev = best.get(name)
            higher_is_stricter = name in ("soc_reserve_min_pct", "min_discharge_voltage_v")
            if prev is None or (cap.value > prev.value if higher_is_stricter else cap.value < prev.value):
                best[name] = cap
        return ControlState(best, self._operation, self._alarm_reset_at)

    def raw(self) -> dict[tuple[str, Source], Cap]:
        return dict(self._caps)
