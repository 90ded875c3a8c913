"""The charge policy as a service: evaluates `gateway.core.policy.engine` on every new model view
and on a timer.

`PolicyService` subscribes to the `ModelStore`, evaluates once per new view and every
`[policy] evaluate_interval_s` (so cap expiry and staleness take effect without new data), and
publishes to the `DecisionStore` (`gateway.core.policy.decisions`). This is the only asynchronous
part of the policy; the rules live in `gateway.core.policy.engine`.

It must never talk to a bus or a pack, and never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from gateway.app.supervisor import ReadyCallback, Service
from gateway.core.controls import Controls
from gateway.core.model import ModelStore, ModelView
from gateway.core.policy.decisions import DecisionStore
from gateway.core.policy.engine import ChargeDecision, PolicyEngine

if TYPE_CHECKING:
    from gateway.app.context import AppContext

log = logging.getLogger(__name__)
PERSIST_EVERY_S = 3600.0  # the time of the last full charge is saved at most hourly


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
        state_file: Path | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.controls = controls
        self.decisions = decisions
        self._clock = clock
        self.state_file = state_file  # keeps the time of the last full charge across restarts
        self._saved_full_at: float | None = None
        self.evaluations = 0

    def evaluate_now(self, view: ModelView | None = None) -> ChargeDecision:
        now = self._clock()
        decision = self.engine.evaluate(view or self.store.view, self.controls.state(now), now)
        self.evaluations += 1
        self.decisions.publish(decision)
        return decision

    def load_state(self) -> None:
        """Restore the time of the last full charge (a missing or unreadable file is not an error)."""
        if self.state_file is None or self.engine.last_full_charge_at is not None:
            return
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            value = float(data["last_full_charge_at"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning(
                "policy state %s unreadable (%s); counting full-charge days from now", self.state_file, err
            )
            return
        if 0 < value <= self._clock():
            self.engine.last_full_charge_at = value
            self._saved_full_at = value

    def save_due(self) -> bool:
        """Whether `save_state` would write (checked on the loop: most evaluations save nothing)."""
        value = self.engine.last_full_charge_at
        if self.state_file is None or value is None:
            return False
        return self._saved_full_at is None or value - self._saved_full_at >= PERSIST_EVERY_S

    def save_state(self) -> None:
        value = self.engine.last_full_charge_at
        if not self.save_due() or value is None or self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"last_full_charge_at": value}), encoding="utf-8")
            os.replace(tmp, self.state_file)
        except OSError as err:
            log.warning("policy state %s not saved: %s", self.state_file, err)
            return
        self._saved_full_at = value

    async def run(self, ready: ReadyCallback) -> None:
        interval = self.engine.config.evaluate_interval_s
        await asyncio.to_thread(self.load_state)
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
                if self.save_due():
                    await asyncio.to_thread(self.save_state)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await views.aclose()


def build_policy_services(ctx: AppContext) -> list[Service]:
    """The charge policy service. Registers `ctx.extras["decisions"]` (the DecisionStore every
    inverter adapter and metrics read) and `ctx.extras["policy"]`; the inverter CAN service is built
    by `gateway.north.can.service.install` from that store."""
    decisions = ctx.extras.get("decisions")
    if not isinstance(decisions, DecisionStore):
        decisions = DecisionStore()
        ctx.extras["decisions"] = decisions
    state_file = None
    if ctx.config_path is not None and ctx.config.policy.state_file:
        from gateway.app.config import state_path

        state_file = state_path(ctx.config, ctx.config_path, ctx.config.policy.state_file)
    policy = PolicyService(
        PolicyEngine(ctx.config.policy), ctx.store, ctx.controls, decisions, state_file=state_file
    )
    ctx.extras["policy"] = policy
    return [policy]
