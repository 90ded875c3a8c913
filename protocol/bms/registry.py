"""The registry of BMS wire-protocol families, by stable name.

Each family module defines a module-level `FAMILY: BmsFamily`; adding a family is adding its module
name here. Nothing is registered by import side effect.
"""

from __future__ import annotations

import importlib
from functools import cache

from protocol.bms.base import BmsFamily
from protocol.bms.bootloader import BootCarriage

FAMILY_MODULES = ("protocol.bms.tianpower", "protocol.bms.pace")


@cache
def families() -> dict[str, BmsFamily]:
    found: dict[str, BmsFamily] = {}
    for mod in FAMILY_MODULES:
        family: BmsFamily = importlib.import_module(mod).FAMILY
        if family.name in found:
            raise ValueError(f"BMS family {family.name!r} registered twice")
        found[family.name] = family
    return found


def boot(name: str) -> BootCarriage:
    """How family `name` carries the firmware-upgrade messages (KeyError for an unknown family)."""
    return get(name).boot


def get(name: str) -> BmsFamily:
    fams = families()
    try:
        return fams[name]
    except KeyError:
        raise KeyError(f"unknown BMS protocol {name!r}; known: {', '.join(sorted(fams))}") from None
