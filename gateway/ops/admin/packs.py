"""Finding a configured pack and its driver for an operation (admin channel, history downloads,
firmware upgrades): "BUS/ADDRESS" names, lookup, and the refusals when either is missing.

Reads only the model store and the bus owners' driver map; never touches a bus.
"""

from __future__ import annotations

from gateway.app.context import AppContext
from gateway.core.model import PackKey
from gateway.ops.security.errors import Conflict, NotFound
from gateway.south.drivers.base import Driver


def label(key: PackKey) -> str:
    return f"{key[0]}/{key[1]}"


class PackLookup:
    """Mixin of the services; their `__init__` sets `ctx`."""

    ctx: AppContext

    def pack(self, bus: str, address: int) -> PackKey:
        key = (bus, address)
        if key not in self.ctx.store.view.packs:
            known = ", ".join(label(k) for k in self.ctx.pack_keys) or "none"
            raise NotFound(f"no pack {bus}/{address}; configured: {known}")
        return key

    def driver(self, key: PackKey) -> Driver:
        try:
            driver = self.ctx.driver_for(key)
        except KeyError as err:
            raise NotFound(str(err.args[0])) from None
        if driver is None:
            raise Conflict(f"bus {key[0]}: the BMS protocol is not detected yet; retry once a pack answers")
        return driver
