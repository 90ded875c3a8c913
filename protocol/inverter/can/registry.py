"""The registry of inverter CAN protocols, by stable name (the `[can] protocol` value).

Each module defines `PROTOCOL`, a subclass of `InverterProtocol`; adding a protocol is adding its
module here. Nothing is registered by import side effect.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache

from protocol.inverter.can.base import InverterProtocol, OptionValue
from protocol.inverter.flags import FlagOutputs

PROTOCOL_MODULES = (
    "protocol.inverter.can.pylon",
    "protocol.inverter.can.pylon_v2",
    "protocol.inverter.can.deye",
    "protocol.inverter.can.goodwe",
    "protocol.inverter.can.sofar",
    "protocol.inverter.can.solark",
    "protocol.inverter.can.luxpower",
    "protocol.inverter.can.sma",
    "protocol.inverter.can.victron",
    "protocol.inverter.can.growatt",
    "protocol.inverter.can.schneider",
    "protocol.inverter.can.pylon_hv",
    "protocol.inverter.can.byd",
)


@cache
def protocols() -> dict[str, type[InverterProtocol]]:
    found: dict[str, type[InverterProtocol]] = {}
    for mod in PROTOCOL_MODULES:
        cls: type[InverterProtocol] = importlib.import_module(mod).PROTOCOL
        if cls.name in found:
            raise ValueError(f"inverter CAN protocol {cls.name!r} registered twice")
        found[cls.name] = cls
    return found


def names() -> list[str]:
    return sorted(protocols())


def get(name: str) -> type[InverterProtocol]:
    known = protocols()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown inverter CAN protocol {name!r}; known: {', '.join(sorted(known))}") from None


def create(
    name: str, options: Mapping[str, OptionValue] | None = None, *, flag_outputs: FlagOutputs
) -> InverterProtocol:
    """A fresh protocol instance (ValueError for bad options, KeyError for an unknown name); its
    alarm signals come from `flag_outputs` (mappings/flags/outputs.toml, loaded by the caller)."""
    return get(name)(options, flag_outputs=flag_outputs)
