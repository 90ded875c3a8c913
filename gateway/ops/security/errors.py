"""The errors of the admin, records and firmware operations, each with the HTTP status the API
answers with (`status`), a message naming the reason and, for refused values, the problems
(`errors`). Each router turns them into its own JSON answer; nothing here knows HTTP or a bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = list(errors)


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """Refused before anything reached a bus: the family cannot, a job is running, or the pack's
    state forbids it (pre-flight)."""

    status = 409


class Invalid(ApiError):
    """A value or request is not acceptable (names the parameter, value and allowed range)."""

    status = 422
