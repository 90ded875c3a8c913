"""Errors of the records and firmware operations, each with the HTTP status the API answers with.

Shaped like the admin channel's errors (`status`, `message`) so one exception handler serves both.
"""

from __future__ import annotations

from typing import Protocol

from gateway.admin.auth import Principal, Role


class RecordsError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(RecordsError):
    status = 403


class NotFound(RecordsError):
    status = 404


class Conflict(RecordsError):
    """Refused before anything reached a bus (the family cannot, a job is running, pre-flight)."""

    status = 409


class Invalid(RecordsError):
    status = 422


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
