"""The registry of BMS wire-protocol families, by stable name (the `[[bus]] protocol` values).

Each family package defines a module-level `FAMILY: BmsFamily`; adding a family is adding one entry
to `FAMILIES` (the one registry mechanism, `protocol.registry`). Every other place that names a
family (configuration, drivers, CLI, simulator, firmware) takes the names from here.
"""

from __future__ import annotations

from protocol.bms.base import BmsFamily
from protocol.bms.bootloader import BootCarriage
from protocol.registry import Registry, named_instance

FAMILIES: Registry[BmsFamily] = Registry(
    "BMS protocol",
    {
        "tianpower": "protocol.bms.tianpower:FAMILY",
        "pace": "protocol.bms.pace:FAMILY",
    },
    named_instance(BmsFamily),
)
DEFAULT = FAMILIES.names()[0]  # the family a bus or the simulator speaks unless configured


def names() -> tuple[str, ...]:
    """Every registered family name (nothing is imported)."""
    return FAMILIES.names()


def families() -> dict[str, BmsFamily]:
    """Every family, imported."""
    return FAMILIES.load_all()


def get(name: str) -> BmsFamily:
    """Family `name` (KeyError naming the known ones when unknown)."""
    return FAMILIES.get(name)


def boot(name: str) -> BootCarriage:
    """How family `name` carries the firmware-upgrade messages (KeyError for an unknown family)."""
    return get(name).boot
