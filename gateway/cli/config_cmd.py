"""`bms-gateway config check FILE` and `bms-gateway config show [--config FILE] [--json]`.

`check` validates a file exactly as `run` does (exit 0 when valid, 2 with every offending key and
the allowed values otherwise). `show` prints the effective configuration (defaults filled in,
environment overrides applied, secrets masked) as TOML, or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import tomlkit

from gateway.app.config import Config, ConfigError, load_config, masked


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("config", help="check or show the configuration")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=run_check)
    show = sub.add_parser("show", help="print the effective configuration (secrets masked)")
    show.add_argument("--config", "-c", type=Path, default=None, metavar="FILE")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.set_defaults(func=run_show)


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as err:
        print(f"{args.file}: {err}", file=sys.stderr)
        return 2
    packs = sum(len(b.addresses) for b in config.bus)
    where = f"{len(config.bus)} bus(es), {packs} pack(s)" if config.bus else "no bus: built-in simulator"
    print(f"{args.file}: OK ({where})")
    return 0


def _without_none(obj: Any) -> Any:
    """TOML has no null: unset optional keys are left out (they keep their documented default)."""
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_none(v) for v in obj if v is not None]
    return obj


def run_show(args: argparse.Namespace) -> int:
    try:
        config = Config() if args.config is None else load_config(args.config)
    except ConfigError as err:
        print(f"{args.config}: {err}", file=sys.stderr)
        return 2
    data = masked(config)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(tomlkit.dumps(_without_none(data)), end="")
    return 0
