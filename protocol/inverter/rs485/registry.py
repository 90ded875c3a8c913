"""The registry of inverter RS485 protocols, by stable name (the `[inverter_rs485] protocol` values,
the admin API's and the RS485 service's names). Sans-I/O.

Each entry is an `Rs485Responder` subclass named by its `name` and built by its `from_settings`;
adding a protocol is adding its responder module in this package and one entry to `PROTOCOLS` (the
one registry mechanism, `protocol.registry`, imported on first use).
"""

from __future__ import annotations

from protocol.inverter.rs485.base import ResponderSettings, Rs485Responder
from protocol.registry import Registry, named_class

PROTOCOLS: Registry[type[Rs485Responder]] = Registry(
    "RS485 inverter protocol",
    {
        "pylon-rs485": "protocol.inverter.rs485.pylon:PylonResponder",
        "byd-modbus": "protocol.inverter.rs485.byd_modbus:BydModbusResponder",
    },
    named_class(Rs485Responder),
)
DEFAULT = PROTOCOLS.names()[0]  # `[inverter_rs485] protocol` unless configured


def names() -> tuple[str, ...]:
    """Every registered RS485 inverter protocol name, in registration order (nothing is imported)."""
    return PROTOCOLS.names()


def create(name: str, settings: ResponderSettings) -> Rs485Responder:
    """A responder for protocol `name` (KeyError naming the known ones when unknown)."""
    return PROTOCOLS.get(name).from_settings(settings)
