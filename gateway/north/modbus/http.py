"""`GET /api/modbus`: the Modbus server's units and counters, for operators and the web UI.

Read-only, like the other data endpoints. Never touches the server's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastapi import APIRouter

from gateway.app.config import ModbusConfig
from gateway.north.modbus.stats import ModbusStats
from gateway.north.modbus.units import UnitView


class _Version(Protocol):
    @property
    def version(self) -> int: ...


class ModbusStatusSource(Protocol):
    """What the endpoint reads of the server (`gateway.north.modbus.server.ModbusServer`); a
    structural type, so this module does not import the server that mounts it."""

    @property
    def config(self) -> ModbusConfig: ...
    @property
    def port(self) -> int | None: ...
    @property
    def units(self) -> Mapping[int, UnitView]: ...
    @property
    def view(self) -> _Version: ...
    @property
    def stats(self) -> ModbusStats: ...


def modbus_router(server: ModbusStatusSource) -> APIRouter:
    router = APIRouter(tags=["modbus"])

    @router.get("/api/modbus")
    async def modbus_status() -> dict[str, Any]:
        """Where the server listens, what each unit id serves, and the request counters."""
        units = {
            str(uid): {
                "kind": unit.kind.value,
                "online": unit.online,
                "registers": unit.image.size,
                "writable_registers": len(unit.writable) if server.config.writes else 0,
                "label": unit.label,
            }
            for uid, unit in sorted(server.units.items())
        }
        return {
            "listen": server.config.listen,
            "port": server.port,
            "writes": server.config.writes,
            "image_version": server.view.version,
            "units": units,
            "stats": server.stats.as_dict(),
        }

    return router
