"""`bms-gateway scan` through a running gateway: probe addresses of a bus via its bus owner.

A second program opening a bus the gateway polls interleaves its frames with the polls (the scan
missed packs one run in three). Through the API the probes go into the bus owner's queue with
background priority, so they only use the bus time the polls leave and never collide with them.
On a live bus only the bus's own family is probed: the owner's frame decoder is the poller's and is
never swapped under it (a bus whose protocol is not detected yet answers 409).

Role-checked (operator) and audited as `bus.scan`. This module never opens a transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Conflict, Invalid, NotFound
from gateway.south.drivers.base import BusError, Priority
from protocol.bms.base import Frame
from protocol.errors import RemoteProtocolError

if TYPE_CHECKING:
    from gateway.ops.admin.service import AdminService, Caller

ACTION = "bus.scan"
MAX_TIMEOUT_S = 5.0


class _Background:
    """The bus owner seen by a scan: background priority, one attempt, the scan's timeout."""

    def __init__(self, owner: Any, timeout_s: float) -> None:
        self.owner = owner
        self.timeout_s = timeout_s
        self.requests = 0

    async def transact(self, request: bytes, match: Callable[[Frame], bool], **kw: Any) -> Frame | None:
        self.requests += 1
        kw.update(priority=Priority.BACKGROUND, timeout_s=self.timeout_s, retries=0)
        frame: Frame | None = await self.owner.transact(request, match, **kw)
        return frame


async def scan_bus(
    admin: AdminService,
    caller: Caller,
    bus: str,
    *,
    addresses: Sequence[int] | None = None,
    timeout_s: float = 0.5,
) -> dict[str, Any]:
    """Which addresses of `bus` answer its family's probe (default: 1..15)."""
    addrs = sorted(set(addresses if addresses else range(1, 16)))
    request = {"bus": bus, "addresses": addrs, "timeout_s": timeout_s}

    async def body() -> dict[str, Any]:
        admin.require(caller, Role.OPERATOR, "scanning a bus")
        if any(not 0 <= a <= 15 for a in addrs):
            raise Invalid("addresses must be within 0..15")
        if not 0.0 < timeout_s <= MAX_TIMEOUT_S:
            raise Invalid(f"timeout_s must be within 0..{MAX_TIMEOUT_S:g} s")
        owner = admin.ctx.buses.get(bus)
        poller = admin.ctx.pollers.get(bus)
        if owner is None or poller is None:
            raise NotFound(f"no bus {bus!r}; configured: {', '.join(sorted(admin.ctx.buses)) or 'none'}")
        driver = poller.driver
        if driver is None:
            raise Conflict(f"bus {bus}: its protocol is not detected yet; scan again once a pack answered")
        via = _Background(owner, timeout_s)
        found: list[int] = []
        for addr in addrs:
            try:
                if await driver.probe(via, addr):
                    found.append(addr)
            except (BusError, RemoteProtocolError):
                continue
        result = {
            "bus": bus,
            "protocol": driver.family,
            "addresses": addrs,
            "found": {driver.family: found} if found else {},
            "bus_requests": via.requests,
            "note": "probed through the running gateway's bus owner (background priority); "
            "only the bus's own protocol is probed",
        }
        await admin.record(
            caller, ACTION, [], request, outcome="ok", after={"found": found}, detail=f"{len(found)} found"
        )
        return result

    return await admin.audited(caller, ACTION, [], request, body)
