"""`bms-gateway token create|list|revoke`: manage the admin API's bearer tokens.

`create` prints the new token once, alone on the last line; only its hash is stored, in the file
named by `[admin] tokens_file` of the given configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.app.config import Config, ConfigError, load_config, state_path
from gateway.ops.security.auth import Role, TokenStore


def _store(args: argparse.Namespace) -> TokenStore:
    config = load_config(args.config) if args.config else Config()
    return TokenStore(state_path(config, args.config, config.admin.tokens_file))


def _create(args: argparse.Namespace) -> int:
    try:
        role = Role.parse(args.role)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    store = _store(args)
    rec, token = store.create(role, args.label or "")
    print(f"created token {rec.id} with role {role.label} (stored hashed in {store.path})", file=sys.stderr)
    print("store it now: it cannot be shown again", file=sys.stderr)
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    for rec in _store(args).records():
        state = "revoked" if rec.revoked else "active"
        print(f"{rec.id}\t{rec.role}\t{state}\t{rec.label}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if _store(args).revoke(args.id):
        print(f"revoked {args.id}")
        return 0
    print(f"error: no token with id {args.id}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.token_func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return code


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="create, list and revoke admin API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    roles = ", ".join(r.label for r in Role)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="configuration file (its [admin] tokens_file is used)")
        sp.set_defaults(func=_run)

    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--role", required=True, help=f"one of: {roles}")
    c.add_argument("--label", help="a note to recognise the token by (who or what uses it)")
    common(c)
    c.set_defaults(token_func=_create)
    ls = tsub.add_parser("list", help="list tokens (ids, roles, state; never secrets)")
    common(ls)
    ls.set_defaults(token_func=_list)
    r = tsub.add_parser("revoke", help="revoke a token by id")
    r.add_argument("id")
    common(r)
    r.set_defaults(token_func=_revoke)
