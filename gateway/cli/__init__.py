"""Subcommands of the `bms-gateway` command line, one module each.

Each module defines `register(subparsers)` that adds its parser and sets `func` (returning an exit
code). `gateway.cli.main` imports the module of the command being run only (start-up time: `run`
must not pay for the admin client's httpx or the simulator), and every module named in `COMMANDS`
when no known command is given (`--help`, usage errors).
"""

COMMANDS: dict[str, str] = {  # command name -> module
    "run": "gateway.cli.run",
    "scan": "gateway.cli.scan",
    "config": "gateway.cli.config_cmd",
    "token": "gateway.cli.token",
    "admin": "gateway.cli.admin",
    "simulate": "gateway.cli.simulate",
    "modbus-docs": "gateway.cli.modbus_docs",
    "decode": "gateway.cli.decode",
    "can-decode": "gateway.cli.can_decode",
    "firmware-image": "gateway.cli.firmware_image",
    "watch": "gateway.cli.watch",
}
COMMAND_MODULES: tuple[str, ...] = tuple(COMMANDS.values())
