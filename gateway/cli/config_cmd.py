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
from gateway.app.wiring import uses_simulator


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
    docs = sub.add_parser("docs", help="the key tables of docs/configuration.md, from the schema")
    docs.add_argument("--write", type=Path, metavar="FILE", help="replace the generated part of FILE")
    docs.set_defaults(func=run_docs)


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as err:
        print(f"{args.file}: {err}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK ({summary(config)})")
    return 0


def summary(config: Config) -> str:
    """What the configuration runs: buses and packs, the built-in simulator's bus counted in."""
    buses = len(config.bus)
    packs = sum(len(b.addresses) for b in config.bus)
    if not uses_simulator(config):
        return f"{buses} bus(es), {packs} pack(s)"
    sim = config.simulator
    note = f"built-in simulator: {sim.packs} {sim.protocol} pack(s)"
    if not config.bus:
        return f"1 bus, {sim.packs} pack(s); no bus configured: {note}"
    return f"{buses + 1} bus(es), {packs + sim.packs} pack(s), of which the {note}"


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


def run_docs(args: argparse.Namespace) -> int:
    """Print the generated key tables, or replace them in a file (`--write docs/configuration.md`)."""
    from gateway.app.config_docs import render, replace_generated

    if args.write is None:
        print(render(), end="")
        return 0
    try:
        text = args.write.read_text(encoding="utf-8")
        args.write.write_text(replace_generated(text), encoding="utf-8")
    except (OSError, ValueError) as err:
        print(f"{args.write}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.write}")
    return 0
