"""The latest charge decision, shared by the policy service (the only writer) and every consumer
(inverter CAN, inverter RS485, Modbus, metrics). Nothing here decides anything or performs I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from gateway.core.policy.engine import ChargeDecision


class DecisionStore:
    """The latest charge decision; `subscribe()` yields it and every newer one (never reordered)."""

    def __init__(self) -> None:
        self._latest: ChargeDecision | None = None
        self.version = 0
        self._waiters: set[asyncio.Event] = set()

    @property
    def latest(self) -> ChargeDecision | None:
        return self._latest

    def publish(self, decision: ChargeDecision) -> None:
        self._latest = decision
        self.version += 1
        for waiter in self._waiters:
            waiter.set()

    async def subscribe(self) -> AsyncIterator[ChargeDecision]:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            last = 0
            while True:
                if self._latest is not None and self.version != last:
                    last = self.version
                    yield self._latest
                    continue
                await waiter.wait()
                waiter.clear()
        finally:
            self._waiters.discard(waiter)

    async def wait_for(self, predicate: Callable[[ChargeDecision], bool]) -> ChargeDecision:
        """The first decision (current or future) for which `predicate` is true."""
        async for decision in self.subscribe():
            if predicate(decision):
                return decision
        raise AssertionError("unreachable: subscribe() never ends")  # pragma: no cover
