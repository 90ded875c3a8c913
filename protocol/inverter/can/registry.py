"""The registry of inverter CAN protocols, by stable name (the `[can] protocol` value).

Each module defines `PROTOCOL`, a subclass of `InverterProtocol` named by its `name`; adding a
protocol is adding one entry to `PROTOCOLS` (the one registry mechanism, `protocol.registry`,
imported on first use). Nothing is registered by import side effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from protocol.registry import Registry, named_class

if TYPE_CHECKING:  # importing the names costs nothing: base (and cantools) load with the first entry
    from protocol.inverter.can.base import InverterProtocol, OptionValue
    from protocol.inverter.flags import FlagOutputs


def _accept(name: str, loaded: Any) -> type[InverterProtocol]:
    from protocol.inverter.can.base import InverterProtocol

    accepted: type[InverterProtocol] = named_class(InverterProtocol)(name, loaded)
    return accepted


PROTOCOLS: Registry[type[InverterProtocol]] = Registry(
    "inverter CAN protocol",
    {
        "pylon": "protocol.inverter.can.pylon:PROTOCOL",
        "pylon-v2": "protocol.inverter.can.pylon_v2:PROTOCOL",
        "deye": "protocol.inverter.can.deye:PROTOCOL",
        "goodwe": "protocol.inverter.can.goodwe:PROTOCOL",
        "sofar": "protocol.inverter.can.sofar:PROTOCOL",
        "solark": "protocol.inverter.can.solark:PROTOCOL",
        "luxpower": "protocol.inverter.can.luxpower:PROTOCOL",
        "sma": "protocol.inverter.can.sma:PROTOCOL",
        "victron": "protocol.inverter.can.victron:PROTOCOL",
        "growatt": "protocol.inverter.can.growatt:PROTOCOL",
        "schneider": "protocol.inverter.can.schneider:PROTOCOL",
        "pylon-hv": "protocol.inverter.can.pylon_hv:PROTOCOL",
        "byd": "protocol.inverter.can.byd:PROTOCOL",
    },
    _accept,
)
DEFAULT = PROTOCOLS.names()[0]  # `[can] protocol` unless configured


def protocols() -> dict[str, type[InverterProtocol]]:
    """Every protocol class, imported."""
    return PROTOCOLS.load_all()


def names() -> list[str]:
    """Every registered name, sorted (nothing is imported)."""
    return sorted(PROTOCOLS.names())


def get(name: str) -> type[InverterProtocol]:
    """The protocol class `name` (KeyError naming the known ones when unknown)."""
    return PROTOCOLS.get(name)


def create(
    name: str, options: Mapping[str, OptionValue] | None = None, *, flag_outputs: FlagOutputs
) -> InverterProtocol:
    """A fresh protocol instance (ValueError for bad options, KeyError for an unknown name); its
    alarm signals come from `flag_outputs` (mappings/flags/outputs.toml, loaded by the caller)."""
    return get(name)(options, flag_outputs=flag_outputs)
