"""Bearer-token authentication of the admin and records routers (one implementation for both).

`bearer_caller(role, ...)` builds the FastAPI dependency of a route: 429 while the client address
is in its failed-authentication backoff (`gateway.ops.security.throttle`, checked before the token is
looked at), 401 without a valid token (counted as a failure of the address), 429 beyond the token's
rate limit, 403 with a role below `role` (each message says which role is
needed), else the `Caller` (token and client address) the services expect. A 403 is appended to
the audit log as a refusal of the route's action (`ROUTE_ACTIONS`, else `http <METHOD> <route>`),
with the token, client and pack of the path, so attempts beyond a token's role are visible to
admins. A 401 has no identity to record and a 429 is not recorded (a token could flood the log).

This module never talks to a bus and never raises anything but HTTPException to a client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.ops.admin.service import Caller
from gateway.ops.security.audit import AuditLog
from gateway.ops.security.auth import AuthError, Principal, RateLimiter, Role, TokenStore

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="an admin API token: bms-gateway token create --role ROLE")

# (method, route path) -> the audit action the route's service records (so a 403 reads like the
# refusals the services record themselves)
ROUTE_ACTIONS: Mapping[tuple[str, str], str] = {
    ("PUT", "/api/packs/{bus}/{address}/parameters"): "parameters.write",
    ("PUT", "/api/parameters"): "parameters.write",
    ("POST", "/api/packs/{bus}/{address}/parameters/import"): "parameters.import",
    ("POST", "/api/parameters/load-origin"): "parameters.load_origin",
    ("PUT", "/api/packs/{bus}/{address}/capacities"): "config.capacities",
    ("PUT", "/api/packs/{bus}/{address}/cell-count"): "config.cell_count",
    ("PUT", "/api/packs/{bus}/{address}/serial"): "config.serial",
    ("PUT", "/api/packs/{bus}/{address}/anti-theft"): "config.anti_theft",
    ("POST", "/api/packs/{bus}/{address}/unlock"): "config.unlock",
    ("POST", "/api/packs/{bus}/{address}/control"): "control",
    ("PUT", "/api/packs/{bus}/{address}/inverter-protocol"): "config.pack_protocols",
    ("PUT", "/api/gateway/protocols"): "gateway.protocols",
    ("POST", "/api/clock/sync"): "clock.sync",
    ("POST", "/api/history/pull"): "history.pull",
    ("POST", "/api/history/stop"): "history.stop",
    ("POST", "/api/packs/{bus}/{address}/history/delete"): "history.delete",
    ("PUT", "/api/packs/{bus}/{address}/history/interval"): "history.interval",
    ("PUT", "/api/packs/{bus}/{address}/history/record-time"): "history.record_time",
    ("PUT", "/api/recording/interval"): "recording.interval",
    ("POST", "/api/firmware/images"): "firmware.upload",
    ("POST", "/api/firmware/jobs"): "firmware.flash",
    ("POST", "/api/firmware/jobs/{job_id}/resume"): "firmware.resume",
    ("POST", "/api/firmware/jobs/{job_id}/abort"): "firmware.abort",
    ("POST", "/api/admin/tokens"): "tokens.create",
    ("DELETE", "/api/admin/tokens/{token_id}"): "tokens.revoke",
}


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


def _record_forbidden(audit: AuditLog, caller: Caller, request: Request, need: Role) -> None:
    route = _route_path(request)
    action = ROUTE_ACTIONS.get((request.method, route), f"http {request.method} {route}")
    params = request.path_params
    packs = [f"{params['bus']}/{params['address']}"] if "bus" in params and "address" in params else []
    try:
        audit.append(
            token_id=caller.principal.token_id,
            role=caller.role.label,
            client=caller.client,
            action=action,
            packs=packs,
            request={"method": request.method, "path": request.url.path},
            outcome="refused",
            detail=f"403: needs the {need.label} role",
        )
    except Exception:  # the audit must never turn a refusal into a crash
        log.exception("audit append failed for a 403 on %s %s", request.method, route)


def throttled(tokens: TokenStore, client: str) -> None:
    """429 while `client` is in its failed-authentication backoff (before any token is looked at)."""
    wait = tokens.throttle.check(client)
    if wait > 0:
        raise HTTPException(
            429,
            f"too many failed authentications from {client}; retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


def authenticate(tokens: TokenStore, client: str, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """The token's principal; AuthError (counted as a failure of `client`) when there is none."""
    try:
        if creds is None or creds.scheme.lower() != "bearer":
            raise AuthError("no token")
        return tokens.authenticate(creds.credentials)
    except AuthError:
        tokens.throttle.failed(client)
        raise


def bearer_caller(
    role: Role, tokens: TokenStore, limiter: RateLimiter, audit: Callable[[], AuditLog | None]
) -> Callable[..., Caller]:
    """The dependency of a route that needs `role` (or higher); `audit()` gives the log for 403s.

    A plain (sync) function: FastAPI runs it in a worker thread, so the token file check and the
    audit INSERT never block the event loop."""

    def dependency(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        need = f"this endpoint needs a bearer token with the {role.label} role or higher"
        hint = f"(create one with: bms-gateway token create --role {role.label})"
        client = request.client.host if request.client else "unknown"
        throttled(tokens, client)
        try:
            principal = authenticate(tokens, client, creds)
        except AuthError as err:
            raise HTTPException(
                401, f"{err}: {need} {hint}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        if not limiter.allow(principal.token_id):
            raise HTTPException(
                429,
                f"rate limit of {limiter.per_minute} requests per minute exceeded "
                f"for token {principal.token_id}",
                headers={"Retry-After": "60"},
            )
        caller = Caller(principal, client)
        if principal.role < role:
            log_ = audit()
            if log_ is not None:
                _record_forbidden(log_, caller, request, role)
            raise HTTPException(
                403, f"{need}; token {principal.token_id} has the {principal.role.label} role"
            )
        return caller

    dependency.required_role = role  # type: ignore[attr-defined]  # read by gateway.north.http.openapi
    return dependency
