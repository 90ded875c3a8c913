"""Subcommands of the `bms-gateway` command line, one module each.

Each module defines `register(subparsers)` that adds its parser and sets `func` (returning an exit
code). `gateway.cli.main` imports every module named in `COMMAND_MODULES`.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "gateway.cli.run",
    "gateway.cli.scan",
    "gateway.cli.config_cmd",
    "gateway.cli.token",
    "gateway.cli.admin",
    "gateway.cli.simulate",
    "gateway.cli.modbus_docs",
    "gateway.cli.decode",
    "gateway.cli.can_decode",
)
