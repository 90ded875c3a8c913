"""The stores several services share, each built in exactly one place.

`gateway.app.wiring.build_services` calls these before any installer runs; an installer used on its
own (tests, tools) gets the same store through the same call, so there is one construction per
store: the token store with its rate limiter (`[admin] tokens_file`, `rate_limit_per_minute`) and the
audit log (`[admin] audit_db`) every operation appends to. The decision store needs no file and is
built with the context (`AppContext.decisions`).

It must never start a task or talk to a pack.
"""

from __future__ import annotations

from gateway.app.config import state_path
from gateway.app.context import AdminAuth, AppContext
from gateway.ops.security.audit import AuditLog
from gateway.ops.security.auth import RateLimiter, TokenStore
from gateway.ops.security.throttle import AuthThrottle


def auth(ctx: AppContext) -> AdminAuth:
    """The token store and rate limiter of `ctx` (built on the first call)."""
    if ctx.auth is None:
        admin = ctx.config.admin
        # failed authentications are throttled per client address (docs/admin.md)
        throttle = AuthThrottle(free_failures=admin.auth_failures_free, max_s=admin.auth_backoff_max_s)
        tokens = TokenStore(state_path(ctx.config, ctx.config_path, admin.tokens_file), throttle=throttle)
        ctx.auth = AdminAuth(tokens, RateLimiter(admin.rate_limit_per_minute))
    return ctx.auth


def audit_log(ctx: AppContext) -> AuditLog:
    """The audit log of `ctx` (opened on the first call)."""
    if ctx.audit_log is None:
        ctx.audit_log = AuditLog(state_path(ctx.config, ctx.config_path, ctx.config.admin.audit_db))
    return ctx.audit_log


def build(ctx: AppContext) -> None:
    """Build every shared store of `ctx` (the wiring calls it before the installers)."""
    auth(ctx)
    audit_log(ctx)
