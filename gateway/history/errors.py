"""Errors of the records and firmware operations, each with the HTTP status the API answers with.

The base and the statuses shared with the admin channel live in `gateway.admin.errors`; only a
silent pack differs (504 here: the read timed out; the admin channel answers 409).
"""

from __future__ import annotations

from typing import Protocol

from gateway.admin.auth import Principal, Role
from gateway.admin.errors import ApiError, Conflict, Forbidden, Invalid, NotFound

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "PackSilent", "RecordsError", "Who", "require"]


RecordsError = ApiError  # the records operations' name for the shared base


class PackSilent(RecordsError):
    status = 504


class Who(Protocol):
    """The caller of an operation (the admin channel's `Caller` has this shape)."""

    @property
    def principal(self) -> Principal: ...

    @property
    def client(self) -> str: ...


def require(who: Who, role: Role, what: str) -> None:
    if who.principal.role < role:
        raise Forbidden(
            f"{what} needs the {role.label} role or higher; token {who.principal.token_id} has "
            f"{who.principal.role.label}"
        )
