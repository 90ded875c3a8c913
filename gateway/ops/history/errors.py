"""Errors of the records and firmware operations, each with the HTTP status the API answers with.

The base and the statuses shared with the admin channel live in `gateway.ops.security.errors`; only a
silent pack differs (504 here: the read timed out; the admin channel answers 409).
"""

from __future__ import annotations

from gateway.ops.security.audit import Actor
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import ApiError, Conflict, Forbidden, Invalid, NotFound

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "PackSilent", "RecordsError", "Who", "require"]


RecordsError = ApiError  # the records operations' name for the shared base
Who = Actor  # the caller of an operation (the admin channel's `Caller` has this shape)


class PackSilent(RecordsError):
    status = 504


def require(who: Who, role: Role, what: str) -> None:
    if who.principal.role < role:
        raise Forbidden(
            f"{what} needs the {role.label} role or higher; token {who.principal.token_id} has "
            f"{who.principal.role.label}"
        )
