"""Pack clocks: read, sync (written and read back per pack), and the automatic sync of drifting
clocks (`ClockAutoSync`)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from gateway.core.model import PackKey
from gateway.ops.admin.base import (
    SYSTEM,
    AdminBase,
    AdminBus,
    ApiError,
    Caller,
    WriteStep,
    apply_step,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.reports import (
    ItemReport,
    PackReport,
    batch_json,
)
from gateway.ops.security.auth import Role
from gateway.south.drivers.base import (
    BusError,
    Driver,
)

log = logging.getLogger(__name__)

CLOCK_VERIFY_TOLERANCE_S = 3.0  # a written clock read back within this counts as verified
AUTO_SYNC_RETRY_S = 600.0


class ClockMixin(AdminBase):
    # ---- clock -----------------------------------------------------------------------------------

    async def read_clocks(self, caller: Caller, packs: Sequence[str] | None) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading clocks")
        keys = self.resolve(packs)
        out = []
        for key in keys:
            entry: dict[str, Any] = {
                "pack": label(key),
                "pack_time": None,
                "read_at": None,
                "drift_s": None,
                "source": None,
                "error": None,
            }
            try:
                driver = self.driver(key)
                async with self.lock(key[0]):
                    reading = await driver.read_clock(self.bus(key), key[1], self._wall())
                self._publish(key, clock=reading)
                entry.update(
                    pack_time=reading.pack_time,
                    read_at=reading.read_at,
                    drift_s=reading.drift_s,
                    source="pack",
                )
            except (BusError, ApiError) as err:
                entry["error"] = getattr(err, "message", None) or str(err)
                snap = self.ctx.store.view.pack(*key)
                if snap is not None and snap.clock is not None:
                    c = snap.clock
                    entry.update(
                        pack_time=c.pack_time, read_at=c.read_at, drift_s=c.drift_s, source="snapshot"
                    )
            out.append(entry)
        return {
            "gateway_time": self._wall(),
            "max_drift_s": self.ctx.config.admin.clock_max_drift_s,
            "packs": out,
        }

    async def sync_clocks(
        self, caller: Caller, packs: Sequence[str] | None, *, action: str = "clock.sync"
    ) -> dict[str, Any]:
        """Write the gateway's time to one or several packs, one at a time, and read it back."""
        request = {"packs": list(packs or [])}

        async def body() -> dict[str, Any]:
            self.require(caller, Role.OPERATOR, "setting pack clocks")
            keys = self.resolve(packs)
            intent = self.audit_log.intent(caller, action, request)
            reports = []
            for key in keys:
                rep = PackReport(label(key))
                snap = self.ctx.store.view.pack(*key)
                before = None if snap is None or snap.clock is None else round(snap.clock.drift_s, 1)
                item = ItemReport("drift_s", 0.0, before)
                try:
                    step = self._clock_step(self.driver(key), key)
                    abus = self.bus(key, intent)
                    async with self.lock(key[0]):
                        await apply_step(step, item, abus)
                    rep.bus_requests = abus.requests
                except (BusError, ApiError) as err:
                    item.detail = getattr(err, "message", None) or str(err)
                rep.items.append(item)
                rep.summarize()
                rep.detail = item.detail
                reports.append(rep)
            result = batch_json(action, reports)
            await self.record(
                caller,
                action,
                keys,
                request,
                outcome=result["outcome"],
                before={r.pack: r.items[0].before for r in reports},
                after={r.pack: r.items[0].after for r in reports},
                detail="; ".join(f"{r.pack}: {r.outcome}" for r in reports),
                intents=intent.ids,
            )
            return result

        return await self.audited(caller, action, [], request, body)

    def _clock_step(self, driver: Driver, key: PackKey) -> WriteStep:
        """The gateway's time written to a pack, verified by the drift read back. A failed write is
        not caught here (`errors=()`): `sync_clocks` reports it for the pack."""

        async def check(b: AdminBus) -> tuple[Any, bool]:
            reading = await driver.read_clock(b, key[1], self._wall())
            self._publish(key, clock=reading)
            return round(reading.drift_s, 1), abs(reading.drift_s) <= CLOCK_VERIFY_TOLERANCE_S

        return WriteStep(lambda b: driver.write_clock(b, key[1], self._wall()), check, errors=())

    async def auto_sync_once(self) -> list[str]:
        """Sync the packs whose last clock reading drifts beyond `[admin] clock_max_drift_s` (at most once
        per pack every AUTO_SYNC_RETRY_S). Returns the packs synced."""
        limit = self.ctx.config.admin.clock_max_drift_s
        now = self._wall()
        due = []
        for snap in self.ctx.store.view.ordered():
            if snap.clock is None or abs(snap.clock.drift_s) <= limit:
                continue
            if now - self._auto_sync_at.get(snap.key, -math.inf) < AUTO_SYNC_RETRY_S:
                continue
            self._auto_sync_at[snap.key] = now
            due.append(label(snap.key))
        if due:
            await self.sync_clocks(SYSTEM, due, action="clock.auto_sync")
        return due


class ClockAutoSync:
    """A Service: when `[admin] clock_auto_sync` is on, writes the gateway's time to packs whose clock
    drifts beyond `[admin] clock_max_drift_s` (audited as `clock.auto_sync`)."""

    name = "admin:clock_sync"

    def __init__(self, admin: ClockMixin, period_s: float = 10.0) -> None:
        self.admin = admin
        self.period_s = period_s

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.admin.auto_sync_once()
            except ApiError as err:
                log.warning("automatic clock sync: %s", err.message)
