"""`bms-gateway run [--config FILE]`: start the gateway (on the built-in simulator without a config).

Validates the configuration first (exit 2 with the offending key on error), then runs every
service until SIGTERM/SIGINT and prints one `name: address` line per endpoint once all services
are ready. Without `--config` it starts on the simulator and binds only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.app import loop, systemd
from gateway.app.config import Config, ConfigError, load_config
from gateway.app.context import AppContext
from gateway.app.wiring import run_app, uses_simulator

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the gateway (built-in simulator when no --config is given)",
        description="Run the gateway. Without --config it starts on the built-in simulator "
        "(3 packs, demo profile), bound to 127.0.0.1 only. See docs/runtime.md.",
    )
    p.add_argument("--config", "-c", type=Path, default=None, metavar="FILE", help="TOML configuration file")
    p.set_defaults(func=run)


def token_command(config_path: Path | None) -> str:
    """`bms-gateway token create` as typed for this gateway: with the role, and with the gateway's
    configuration (its tokens file), or from the working directory whose ./var it reads without one."""
    if config_path is not None:
        path = shlex.quote(str(Path(config_path).resolve()))
        return f"bms-gateway token create --role admin --config {path}"
    return f"cd {shlex.quote(str(Path.cwd()))} && bms-gateway token create --role admin"


def describe(ctx: AppContext) -> list[str]:
    """The lines printed once the gateway is ready: what runs and where."""
    cfg = ctx.config
    lines = [f"bms-gateway {__version__} ready"]
    if ctx.simulator is not None:
        sc = cfg.simulator
        lines.append(f"simulator: {sc.packs} {sc.protocol} packs, profile {sc.profile}")
    for name, poller in ctx.pollers.items():
        addrs = ",".join(str(a) for a in poller.cfg.addresses)
        lines.append(
            f"bus {name}: {poller.cfg.url if name in {b.name for b in cfg.bus} else 'simulator'}"
            f" ({poller.cfg.protocol}, addresses {addrs})"
        )
    for name, where in sorted(ctx.endpoints.items()):
        lines.append(f"{name}: {where}")
    http = ctx.endpoints.get("http")
    if http:
        if cfg.http.ui:
            lines.append(
                f"web UI: {http}/  (open it in a browser; to change things sign in with a token "
                f"from: {token_command(ctx.config_path)})"
            )
        lines.append(f"packs: {http}/api/packs")
        lines.append(f"system: {http}/api/system")
        paths = {getattr(route, "path", "") for router in ctx.http_routers for route in router.routes}
        if "/metrics" in paths:
            lines.append(f"metrics: {http}/metrics")
        lines.append(f"api docs: {http}/docs")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        if args.config is None:
            config = Config.model_validate({"simulator": {"enabled": True}})
        else:
            config = load_config(args.config)
    except ConfigError as err:
        print(f"bms-gateway: {err}", file=sys.stderr)
        return 2
    root = logging.getLogger()
    root.setLevel(min(root.level, LEVELS[config.log_level]))
    if uses_simulator(config) and args.config is None:
        print("no --config given: starting on the built-in simulator (127.0.0.1 only)", flush=True)

    def on_ready(ctx: AppContext) -> None:
        print("\n".join(describe(ctx)), flush=True)
        systemd.ready(f"{len(ctx.store.view.packs)} packs configured")  # Type=notify units (no-op otherwise)

    try:
        code = loop.run(
            run_app(config, args.config, on_all_ready=on_ready, hard_deadline=True), config.event_loop
        )
    except ConfigError as err:
        print(f"bms-gateway: {err}", file=sys.stderr)
        return 2
    print("bms-gateway stopped", flush=True)
    return code
