"""The admin operations shared by the HTTP API, the CLI (through the API) and MQTT commands.

`AdminService` composes one mixin per concern (`parameters`, `parameter_files`, `configuration`,
`controls`, `protocols`, `clock`) over `gateway.ops.admin.base.AdminBase`, which holds the state and
the one authorize -> validate -> write -> read back -> publish -> audit step they all share.
This module only assembles them; it never talks to a bus itself.
"""

from __future__ import annotations

from gateway.app.config import state_path
from gateway.app.context import AppContext
from gateway.ops.admin.base import SYSTEM, AdminBus, AdminError, Caller, PackSilent
from gateway.ops.admin.clock import ClockAutoSync, ClockMixin
from gateway.ops.admin.configuration import ConfigurationMixin, _capacity_warnings
from gateway.ops.admin.controls import ControlsMixin
from gateway.ops.admin.parameter_files import ParameterFilesMixin
from gateway.ops.admin.parameters import ParametersMixin
from gateway.ops.admin.protocols import ProtocolsMixin
from gateway.ops.admin.reports import ItemReport, Outcome, PackReport, batch_json
from gateway.ops.security.errors import Invalid

__all__ = [
    "SYSTEM",
    "AdminBus",
    "AdminError",
    "AdminService",
    "Caller",
    "ClockAutoSync",
    "Invalid",
    "ItemReport",
    "Outcome",
    "PackReport",
    "PackSilent",
    "_capacity_warnings",
    "batch_json",
]


class AdminService(
    ParameterFilesMixin, ParametersMixin, ConfigurationMixin, ControlsMixin, ProtocolsMixin, ClockMixin
):
    """Every admin operation on packs and on the gateway (see the concern modules)."""

    @classmethod
    def from_context(cls, ctx: AppContext) -> AdminService:
        """The service for `ctx` (audit log at `[admin] audit_db`), shared as `ctx.extras["admin"]`."""
        path = state_path(ctx.config, ctx.config_path, ctx.config.admin.audit_db)
        service = cls(ctx, path)
        ctx.extras["admin"] = service
        return service
