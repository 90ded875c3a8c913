"""Inverter protocol selection: the pack's own (a `ProtocolSelection` driver) and the gateway's
inverter CAN / RS485 protocols, switched at run time and saved in the configuration file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.app.config import ConfigError
from gateway.ops.admin import config_file
from gateway.ops.admin.base import (
    Action,
    AdminBase,
    AdminBus,
    Caller,
    PackAction,
    WriteStep,
    apply_step,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.reports import (
    ItemReport,
    Outcome,
    PackReport,
    not_among,
    refuse_all,
)
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Conflict, Invalid, PackSilent
from gateway.south.drivers.base import (
    BusError,
    ProtocolSelection,
)
from mappings.flags import load_outputs
from protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

_PACK_PROTOCOLS = Action("config.pack_protocols", Role.ADMIN, "selecting the pack's inverter protocols")


class ProtocolsMixin(AdminBase):
    # ---- the pack's own inverter protocol selection (PACE) -----------------------------------------

    async def pack_protocols(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading the pack's inverter protocol selection")
        key = self.pack(bus, address)
        protocol_selection = self.driver(key)
        if not isinstance(protocol_selection, ProtocolSelection):
            raise self.unavailable(protocol_selection, "inverter protocol selection")
        read = protocol_selection.read_protocols
        from protocol.bms.pace import commands as c

        async with self.lock(key[0]):
            try:
                p = await read(self.bus(key), key[1])
            except BusError as err:
                raise PackSilent(f"pack {label(key)}: protocol selection could not be read ({err})") from None
        return {
            "pack": label(key),
            "can": p.can,
            "can_name": p.can_name,
            "rs485": p.rs485,
            "rs485_name": p.rs485_name,
            "mode": p.mode_name,
            "can_codes": {f"{k}": v for k, v in c.CAN_PROTOCOLS.items()},
            "rs485_codes": {f"{k}": v for k, v in c.RS485_PROTOCOLS.items()},
        }

    async def write_pack_protocols(
        self, caller: Caller, bus: str, address: int, *, can: int | None, rs485: int | None, mode: str | None
    ) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            protocol_selection = self.driver(key)
            if not isinstance(protocol_selection, ProtocolSelection):
                raise self.unavailable(protocol_selection, "inverter protocol selection")
            read = protocol_selection.read_protocols
            protocol_selection = self.driver(key)
            if not isinstance(protocol_selection, ProtocolSelection):
                raise self.unavailable(protocol_selection, "inverter protocol selection")
            write = protocol_selection.write_protocols
            from protocol.bms.pace import commands as c

            modes = {"auto": 0, "manual": 1}
            refuse_all(
                not_among(
                    (
                        "can",
                        can,
                        sorted(c.CAN_PROTOCOLS),
                        f"CAN protocol code {can} is not in the PACE CAN table",
                    ),
                    (
                        "rs485",
                        rs485,
                        sorted(c.RS485_PROTOCOLS),
                        f"RS485 protocol code {rs485} is not in the PACE RS485 table",
                    ),
                    ("mode", mode, list(modes), f"mode {mode!r} is not auto or manual"),
                )
            )
            if can is None and rs485 is None and mode is None:
                raise Invalid("name at least one of can, rs485, mode")
            abus = self.bus(key, act.intent)
            async with self.lock(key[0]):
                try:
                    cur = await read(abus, key[1])
                except BusError as err:
                    rep = PackReport(label(key), detail=f"not written: the pack did not answer ({err})")
                    rep.items.append(
                        ItemReport("protocols", act.request, None, None, Outcome.FAILED, rep.detail)
                    )
                    # reported without a bus request count, audited without before/after
                    return await self._finish_pack(act, rep, None, before=None, after=None, detail=rep.detail)
                new = c.Protocols(
                    cur.can if can is None else can,
                    cur.rs485 if rs485 is None else rs485,
                    cur.mode if mode is None else modes[mode],
                )
                item = ItemReport("protocols", _protocols_doc(new), _protocols_doc(cur))

                async def check(b: AdminBus) -> tuple[Any, bool]:
                    got = await read(b, key[1])
                    return _protocols_doc(got), got == new

                step = WriteStep(
                    lambda b: write(b, key[1], new), check, errors=(BusError, LocalProtocolError)
                )
                await apply_step(step, item, abus)
            return await self._finish_item(act, item, abus)

        return await self._on_pack(
            _PACK_PROTOCOLS, caller, bus, address, body, can=can, rs485=rs485, mode=mode
        )

    # ---- the gateway's own inverter protocols (CAN, RS485) ------------------------------------------

    def gateway_protocols(self, caller: Caller) -> dict[str, Any]:
        self.require(caller, Role.VIEWER, "reading the gateway's inverter protocols")
        from protocol.inverter.can import registry
        from protocol.inverter.rs485.registry import names as rs485_names

        can_service = self.ctx.can
        rs_service = self.ctx.rs485
        return {
            "can": {
                "protocol": self.ctx.config.can.protocol,
                "enabled": self.ctx.config.can.enabled,
                "running": can_service is not None,
                "available": registry.names(),
            },
            "rs485": {
                "protocol": self.ctx.config.inverter_rs485.protocol,
                "enabled": self.ctx.config.inverter_rs485.enabled,
                "running": rs_service is not None,
                "available": list(rs485_names()),
            },
            "config_file": None if self.ctx.config_path is None else str(self.ctx.config_path),
        }

    async def set_gateway_protocols(
        self, caller: Caller, *, can: str | None, rs485: str | None
    ) -> dict[str, Any]:
        """Switch the running CAN / RS485 inverter services and persist the choice in the config file."""
        action = "gateway.protocols"
        request = {"can": can, "rs485": rs485}

        async def body() -> dict[str, Any]:
            self.require(caller, Role.ADMIN, "changing the gateway's inverter protocols")
            from protocol.inverter.can import registry
            from protocol.inverter.rs485.registry import names as rs485_names

            refuse_all(
                not_among(
                    ("can", can, registry.names(), f"unknown CAN protocol {can!r}"),
                    ("rs485", rs485, list(rs485_names()), f"unknown RS485 inverter protocol {rs485!r}"),
                )
            )
            if can is None and rs485 is None:
                raise Invalid("name at least one of can, rs485")
            if can is not None:
                try:  # the configured [can] options must suit the new protocol (pure check, nothing runs)
                    registry.create(can, self.ctx.config.can.options, flag_outputs=load_outputs())
                except (KeyError, ValueError) as err:
                    raise Invalid(
                        f"CAN protocol {can!r} does not accept the configured [can] options: {err}",
                        [{"parameter": "can", "value": can, "message": str(err)}],
                    ) from None
            before = {"can": self.ctx.config.can.protocol, "rs485": self.ctx.config.inverter_rs485.protocol}
            changes = {k: v for k, v in (("can", can), ("rs485", rs485)) if v is not None}
            persisted = False
            if self.ctx.config_path is not None:
                try:
                    await asyncio.to_thread(config_file.set_protocols, Path(self.ctx.config_path), changes)
                    persisted = True
                except ConfigError as err:
                    raise Conflict(f"the configuration file was not changed: {err}") from None
            applied = []
            cfg = self.ctx.config
            if can is not None:
                service = self.ctx.can
                if service is not None:  # the same options the configuration gives it at the next start
                    service.set_protocol(can, dict(cfg.can.options))
                    applied.append("can")
                cfg = cfg.model_copy(update={"can": cfg.can.model_copy(update={"protocol": can})})
            if rs485 is not None:
                rs_service = self.ctx.rs485
                if rs_service is not None:
                    rs_service.set_protocol(rs485)
                    applied.append("rs485")
                cfg = cfg.model_copy(
                    update={"inverter_rs485": cfg.inverter_rs485.model_copy(update={"protocol": rs485})}
                )
            self.ctx.config = cfg
            after = {"can": cfg.can.protocol, "rs485": cfg.inverter_rs485.protocol}
            result = {
                "before": before,
                "after": after,
                "applied_to_running_services": applied,
                "persisted": persisted,
                "config_file": None if self.ctx.config_path is None else str(self.ctx.config_path),
                "outcome": "ok",
            }
            if not persisted:
                result["note"] = "no configuration file: the change lasts until the gateway restarts"
            await self.record(
                caller,
                action,
                [],
                request,
                outcome="ok",
                before=before,
                after=after,
                detail=f"persisted={persisted} applied={','.join(applied) or 'none'}",
            )
            return result

        return await self.audited(caller, action, [], request, body)


def _protocols_doc(p: Any) -> dict[str, Any]:
    """A PACE `Protocols` selection as reported: codes and the mode's name."""
    return {"can": p.can, "rs485": p.rs485, "mode": p.mode_name}
