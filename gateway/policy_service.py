"""The charge policy as a service: evaluates `gateway.policy` on every new model view and on a timer.

`DecisionStore` holds the latest `ChargeDecision` for every consumer (CAN, RS485 inverter, Modbus,
metrics); `PolicyService` subscribes to the `ModelStore`, evaluates once per new view and every
`[policy] evaluate_interval_s` (so cap expiry and staleness take effect without new data), and
publishes. This is the only asynchronous part of the policy; the rules live in `gateway.policy`.

It must never talk to a bus or a pack, and never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, cast

from gateway.config import ConfigError
from gateway.controls import Controls
from gateway.model import ModelStore, ModelView
from gateway.policy import ChargeDecision, PolicyEngine
from gateway.service import ReadyCallback, Service

if TYPE_CHECKING:
    from gateway.context import AppContext


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


class PolicyService:
    """Keeps `decisions` up to date from `store` and `controls`."""

    name = "policy"

    def __init__(
        self,
        engine: PolicyEngine,
        store: ModelStore,
        controls: Controls,
        decisions: DecisionStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = store
        self.controls = controls
        self.decisions = decisions
        self._clock = clock
        self.evaluations = 0

    def evaluate_now(self, view: ModelView | None = None) -> ChargeDecision:
        now = self._clock()
        decision = self.engine.evaluate(view or self.store.view, self.controls.state(now), now)
        self.evaluations += 1
        self.decisions.publish(decision)
        return decision

    async def run(self, ready: ReadyCallback) -> None:
        interval = self.engine.config.evaluate_interval_s
        self.evaluate_now()
        ready()
        views = cast(AsyncGenerator[ModelView, None], self.store.subscribe())
        pending: asyncio.Future[ModelView] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(views))
                done, _ = await asyncio.wait({pending}, timeout=interval)
                if pending in done:
                    view = pending.result()
                    pending = None
                    self.evaluate_now(view)
                else:
                    self.evaluate_now()
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await views.aclose()


def build_policy_services(ctx: AppContext) -> list[Service]:
    """The charge policy service (always) and the inverter CAN service (when `[can] enabled`).

    Registers `ctx.extras["decisions"]` (the DecisionStore every inverter adapter and metrics read),
    `ctx.extras["policy"]` and, with CAN, `ctx.extras["can"]` (stats, `set_protocol()`).
    """
    decisions = ctx.extras.get("decisions")
    if not isinstance(decisions, DecisionStore):
        decisions = DecisionStore()
        ctx.extras["decisions"] = decisions
    policy = PolicyService(PolicyEngine(ctx.config.policy), ctx.store, ctx.controls, decisions)
    ctx.extras["policy"] = policy
    services: list[Service] = [policy]
    if ctx.config.can.enabled:
        from gateway.can_service import CanService  # python-can only when CAN is used

        try:
            can_service = CanService(ctx.config.can, decisions, stale_after_s=ctx.config.policy.stale_after_s)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"can: {err}") from None
        ctx.extras["can"] = can_service
        services.append(can_service)
    return services
