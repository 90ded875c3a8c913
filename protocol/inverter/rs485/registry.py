"""The inverter RS485 protocols the gateway can speak, by stable name (the names the configuration,
the admin API and the RS485 service use). Sans-I/O; it imports nothing.

Adding a protocol: its responder module in this package, its name here, and its construction in
`gateway.north.rs485.service.make_responder`.
"""

from __future__ import annotations

PROTOCOLS: tuple[str, ...] = ("pylon-rs485", "byd-modbus")


def names() -> tuple[str, ...]:
    """Every registered RS485 inverter protocol name, in registration order."""
    return PROTOCOLS
