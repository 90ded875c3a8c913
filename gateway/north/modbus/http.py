"""`GET /api/modbus`: the Modbus server's units and counters, for operators and the web UI.

Read-only, like the other data endpoints. Never touches the server's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

if TYPE_CHECKING:
    from gateway.north.modbus.server import ModbusServer


def modbus_router(server: ModbusServer) -> APIRouter:
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
