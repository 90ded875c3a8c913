"""The `bms-gateway` console script: parses arguments and dispatches to `gateway.cli.*`.

Exit codes: 0 success, 1 operation failed, 2 usage or configuration error, 3 not reachable
(network), 4 refused (authentication, authorization, validation).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import COMMAND_MODULES, COMMANDS


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv` naming a known command, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="bms-gateway",
        description="Battery packs on RS485 -> Modbus/TCP, inverter CAN/RS485, Prometheus, MQTT, admin API.",
    )
    parser.add_argument("--version", action="version", version=f"bms-gateway {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _modules_for(argv):
        importlib.import_module(name).register(sub)
    return parser


def _modules_for(argv: Sequence[str] | None) -> Sequence[str]:
    """The command modules to import: the named command's only, or all (help, errors)."""
    if argv is None:
        return COMMAND_MODULES
    for arg in argv:
        if arg in ("-h", "--help", "--version"):
            return COMMAND_MODULES
        if not arg.startswith("-"):
            return (COMMANDS[arg],) if arg in COMMANDS else COMMAND_MODULES
    return COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _modules_for(argv) == (COMMANDS["run"],):
        # Start-up allocates ~90,000 long-lived objects (modules, schemas, maps) and no garbage
        # worth collecting: the cyclic collector only re-walks them (about 12 % of the import time).
        # `gateway.app.wiring` freezes them and switches it back on once every service is ready.
        gc.disable()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
