"""The registry of BMS drivers, by family name: one entry per family of `protocol.bms.registry`.

The one registry mechanism (`protocol.registry`): `family -> "module:DriverClass"`, imported on
first use; adding a family's driver is adding one entry here. A fresh driver instance per call
(a driver keeps per-bus state such as its parameter table).

It must never open a transport.
"""

from __future__ import annotations

from gateway.south.drivers.base import Driver
from protocol.registry import Registry, named_class

DRIVERS: Registry[type[Driver]] = Registry(
    "BMS driver",
    {
        "tianpower": "gateway.south.drivers.tianpower:TianpowerDriver",
        "pace": "gateway.south.drivers.pace:PaceDriver",
    },
    named_class(Driver),
)


def names() -> tuple[str, ...]:
    """Every family with a driver (nothing is imported)."""
    return DRIVERS.names()


def load_driver(family: str) -> Driver:
    """A new driver for `family` (LookupError naming the known ones when there is none)."""
    try:
        cls = DRIVERS.get(family)
    except KeyError:
        known = ", ".join(DRIVERS.names())
        raise LookupError(f"no driver for BMS protocol {family!r}; known: {known}") from None
    return cls()
