"""The records and firmware operations' role check; their errors are the shared ones of
`gateway.ops.security.errors` (one hierarchy for admin, records and firmware, one status each).
"""

from __future__ import annotations

from gateway.ops.security.audit import Actor
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import ApiError, Conflict, Forbidden, Invalid, NotFound, PackSilent

__all__ = ["ApiError", "Conflict", "Forbidden", "Invalid", "NotFound", "PackSilent", "require"]


def require(who: Actor, role: Role, what: str) -> None:
    if who.principal.role < role:
        raise Forbidden(
            f"{what} needs the {role.label} role or higher; token {who.principal.token_id} has "
            f"{who.principal.role.label}"
        )
