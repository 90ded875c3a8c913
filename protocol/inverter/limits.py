"""The charge decision's limit fields as every inverter-facing encoder and exporter reads them.

A structural type (`typing.Protocol`): `gateway.core.policy.engine.ChargeDecision` satisfies it without this
package knowing the gateway, and so does `protocol.inverter.rs485.base.Limits`. The CAN encoders'
`BatteryState` and the metrics exporter's view of the decision extend it with what else they read.

This module must never import anything with I/O, asyncio or the gateway.
"""

from __future__ import annotations

from typing import Protocol


class ChargeLimits(Protocol):
    """Limits (V, A as magnitudes), enable and request flags, and whether the decision is stale."""

    @property
    def stale(self) -> bool: ...
    @property
    def charge_voltage_v(self) -> float: ...
    @property
    def discharge_voltage_v(self) -> float: ...
    @property
    def charge_current_a(self) -> float: ...
    @property
    def discharge_current_a(self) -> float: ...
    @property
    def charge_enabled(self) -> bool: ...
    @property
    def discharge_enabled(self) -> bool: ...
    @property
    def force_charge_1(self) -> bool: ...
    @property
    def force_charge_2(self) -> bool: ...
    @property
    def full_charge_request(self) -> bool: ...
