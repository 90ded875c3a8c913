"""Subcommands of the `bms-gateway` command line, one module each.

Each module defines `register(subparsers)` that adds its parser and sets `func` (returning an exit
code). `gateway.cli` imports every module named in `COMMAND_MODULES`.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "gateway.commands.run",
    "gateway.commands.scan",
    "gateway.commands.config_cmd",
    "gateway.commands.token",
    "gateway.commands.admin",
    "gateway.commands.simulate",
    "gateway.commands.modbus_docs",
    "gateway.commands.decode",
    "gateway.commands.can_decode",
    "gateway.commands.firmware_image",
    "gateway.commands.watch",
)
