"""The admin API: authenticated routes over `gateway.ops.admin.service.AdminService`.

Every route needs `Authorization: Bearer bmsg_<id>_<secret>`; without a valid token it answers 401,
with a role below the route's 403, both saying which role is needed (`gateway.north.http.auth`; a 403 is
audited). Each token has its own rate
limit (429 with Retry-After). Errors of the service keep their status (404, 409, 422 naming the
parameter, value and allowed range; 409 also for a single-pack read that got no answer); batch actions
answer 200 with an outcome per pack and item. The OpenAPI document is served at
`/api/openapi.json`.

This module must never talk to a bus itself: everything goes through the service.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.north.http.auth import bearer_caller
from gateway.ops.admin.service import AdminService, Caller
from gateway.ops.admin.transfer import MAX_FILE_BYTES
from gateway.ops.security.auth import RateLimiter, Role, TokenStore
from gateway.ops.security.errors import ApiError

if TYPE_CHECKING:
    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service

OPENAPI_PATH = "/api/openapi.json"


def iso(epoch: float) -> str:
    """Epoch seconds as the gateway's local ISO 8601 time with its zone (milliseconds)."""
    return datetime.fromtimestamp(epoch, UTC).astimezone().isoformat(timespec="milliseconds")


def with_iso(entry: Any, *keys: str) -> None:
    """Add `<key>_iso` next to every epoch `<key>` of a JSON object: JSON keeps both."""
    if not isinstance(entry, dict):
        return
    for key in keys:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            entry[f"{key}_iso"] = iso(value)


class _Body(BaseModel):
    """A request body: unknown keys refused, JSON types taken strictly (false is not 0, "1" not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ParameterWriteBody(_Body):
    values: dict[str, Any] = Field(
        description="parameter name (as the vendor tool shows it) -> value in the table's display unit",
        examples=[{"CELL_OV_Start": 3.65}],
    )
    dry_run: bool = False
    allow_inferred: bool = False
    force: bool = Field(
        default=False,
        description="override the parameter rules' warnings (recommended ranges); audited. Rules "
        "marked refuse (orderings, pack vs cells) are never overridden",
    )


class MultiParameterWriteBody(ParameterWriteBody):
    packs: list[str] | None = Field(default=None, description='"BUS/ADDRESS" names; omitted: every pack')


class LoadOriginBody(_Body):
    packs: list[str] | None = None
    dry_run: bool = False
    allow_inferred: bool = False
    force: bool = Field(
        default=False,
        description="override the parameter rules' warnings (recommended ranges); audited. Rules "
        "marked refuse (orderings, pack vs cells) are never overridden",
    )


class CapacitiesBody(_Body):
    full_ah: float | None = None
    remaining_ah: float | None = None
    nominal_ah: float | None = None
    allow_inferred: bool = False


class CellCountBody(_Body):
    cells: int
    confirm: bool = False


class SerialBody(_Body):
    serial: str


class AntiTheftBody(_Body):
    communication: bool | None = None
    physical: bool | None = None
    charge_activation: bool | None = None
    sleep_voltage: bool | None = None
    comm_timeout_h: float | None = None


class ControlBody(_Body):
    action: str = Field(
        description="charge_mos, discharge_mos, heater, fan, buzzer, sound_light_alarm, "
        "forced_sleep, shutdown, current_limiter"
    )
    on: bool = True
    allow_inferred: bool = False


class PackProtocolsBody(_Body):
    can: int | None = None
    rs485: int | None = None
    mode: Literal["auto", "manual"] | None = None


class GatewayProtocolsBody(_Body):
    can: str | None = None
    rs485: str | None = None


class ScanBody(_Body):
    addresses: list[int] | None = Field(default=None, description="addresses to probe (default 1..15)")
    timeout_s: float = Field(default=0.5, description="response timeout per probe (s)")


class ClockSyncBody(_Body):
    packs: list[str] | None = None


class ParameterChoice(BaseModel):
    value: int | float
    meaning: str


class ParameterRow(BaseModel):
    """One row of a pack's parameter table as the vendor tool lists it (PARAM page)."""

    no: int = Field(description="the row number (the tool's No.)")
    name: str = Field(description="the parameter's name, as written in files and write requests")
    label: str = Field(description="the label the vendor tool shows")
    section: str | None
    group: str = Field(description="protection, alarm, ... (the tool's tables)")
    value: int | float | None = Field(description="the value read, in the display unit (None: never read)")
    meaning: str | None = Field(description="the meaning of the value when the parameter has choices")
    unit: str
    min: int | float
    max: int | float
    range: str = Field(description='the Set Range as text ("1..6 V"): outside it a write is refused')
    rec_min: int | float | None = Field(description="the manual's recommended range, low end (or None)")
    rec_max: int | float | None = Field(description="the manual's recommended range, high end (or None)")
    rec_range: str | None = Field(
        description='the recommended range as text ("500..3000 ms"); a new value outside it is a '
        'rule warning, written only with "force": true (admin, audited)'
    )
    default: int | float | None
    access: str
    inferred: bool = Field(description="the write encoding is inferred, not documented (opt-in)")
    choices: list[ParameterChoice]
    note: str | None


class PackParameters(BaseModel):
    pack: str
    family: str
    read_at: float | None
    source: str = Field(description='"snapshot" (the last reading) or "pack" (read now)')
    parameters: list[ParameterRow]


class TooLarge(ApiError):
    status = 413


def _error(err: ApiError) -> JSONResponse:
    headers = {"Retry-After": "60"} if err.status == 429 else None
    return JSONResponse(
        {"detail": err.message, "errors": err.errors}, status_code=err.status, headers=headers
    )


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await fn()
    except ApiError as err:
        return _error(err)


def admin_router(admin: AdminService, tokens: TokenStore, limiter: RateLimiter) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["admin"])

    def caller(role: Role) -> Callable[..., Caller]:
        return bearer_caller(role, tokens, limiter, lambda: admin.audit_log)

    Viewer = Annotated[Caller, Depends(caller(Role.VIEWER))]
    Operator = Annotated[Caller, Depends(caller(Role.OPERATOR))]
    Admin = Annotated[Caller, Depends(caller(Role.ADMIN))]
    Factory = Annotated[Caller, Depends(caller(Role.FACTORY))]

    @router.get(OPENAPI_PATH.removeprefix("/api"), include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/admin/whoami")
    async def whoami(who: Viewer) -> dict[str, Any]:
        """The token's id, role and label (any role)."""
        return {
            "token_id": who.principal.token_id,
            "role": who.role.label,
            "label": who.principal.label,
            "client": who.client,
        }

    # ---- parameters ------------------------------------------------------------------------------

    @router.get("/packs/{bus}/{address}/parameters", response_model=PackParameters)
    async def get_parameters(who: Operator, bus: str, address: int, fresh: bool = False) -> Any:
        """Every parameter of a pack: value, unit, range, default, access level, read time (operator)."""
        return await _call(lambda: admin.parameters(who, bus, address, fresh=fresh))

    @router.put("/packs/{bus}/{address}/parameters")
    async def put_parameters(who: Admin, bus: str, address: int, body: ParameterWriteBody) -> Any:
        """Write parameters of one pack; per parameter: verified / written / mismatch / failed (admin)."""
        return await _call(
            lambda: admin.write_parameters(
                who,
                [f"{bus}/{address}"],
                body.values,
                dry_run=body.dry_run,
                allow_inferred=body.allow_inferred,
                force=body.force,
            )
        )

    @router.get("/parameters")
    async def get_all_parameters(who: Operator, packs: Annotated[list[str] | None, Query()] = None) -> Any:
        """The parameters of several packs (default: all) side by side, from their last reading (operator)."""
        return await _call(lambda: admin.parameters_side_by_side(who, packs))

    @router.put("/parameters")
    async def put_all_parameters(who: Admin, body: MultiParameterWriteBody) -> Any:
        """Write the same values to several packs, one at a time (admin)."""
        return await _call(
            lambda: admin.write_parameters(
                who,
                body.packs,
                body.values,
                dry_run=body.dry_run,
                allow_inferred=body.allow_inferred,
                force=body.force,
            )
        )

    @router.get("/families/{family}/parameters")
    async def family_parameters(who: Viewer, family: str) -> Any:
        """A family's parameter table (ranges, defaults, access, choices such as LC_Style's five modes)."""
        try:
            return admin.family_table(family)
        except ApiError as err:
            return _error(err)

    @router.get("/packs/{bus}/{address}/parameters/export")
    async def export(
        who: Operator,
        bus: str,
        address: int,
        format: Literal["json", "csv", "xml", "xlsx"] = "json",
        fresh: bool = False,
        per_pack_state: bool = False,
    ) -> Response:
        """The pack's parameters as a file with the vendor tool's columns No., Name, Data, Unit, Set Range.
        Per-pack state (the pack's own full and remaining capacity) only with `per_pack_state=true`."""
        try:
            text, media, filename = await admin.export(
                who, bus, address, format, fresh=fresh, per_pack_state=per_pack_state
            )
        except ApiError as err:
            return _error(err)
        return Response(
            text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    @router.post("/packs/{bus}/{address}/parameters/import")
    async def import_file(
        who: Admin,
        bus: str,
        address: int,
        request: Request,
        format: Literal["json", "csv", "xml", "xlsx"] | None = None,
        apply: bool = False,
        allow_inferred: bool = False,
        per_pack_state: bool = False,
        force: bool = False,
    ) -> Any:
        """Validate a parameter file (the body: JSON, CSV, XML or XLSX); preview the rows that differ;
        `apply=true` writes them. Rows of per-pack state are skipped unless `per_pack_state=true`."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                return _error(TooLarge(f"the file is larger than {MAX_FILE_BYTES} bytes"))
            chunks.append(chunk)
        raw = b"".join(chunks)
        return await _call(
            lambda: admin.import_file(
                who,
                bus,
                address,
                raw,
                fmt=format,
                apply=apply,
                allow_inferred=allow_inferred,
                per_pack_state=per_pack_state,
                force=force,
            )
        )

    @router.post("/parameters/load-origin")
    async def load_origin(who: Admin, body: LoadOriginBody) -> Any:
        """Write the documented default of every parameter that has one (the tool's "Load Origin")."""
        return await _call(
            lambda: admin.load_origin(
                who, body.packs, dry_run=body.dry_run, allow_inferred=body.allow_inferred, force=body.force
            )
        )

    # ---- configuration -----------------------------------------------------------------------------

    @router.get("/packs/{bus}/{address}/capacities")
    async def get_capacities(who: Operator, bus: str, address: int) -> Any:
        """Full, remaining and nominal capacity, with a warning when full and nominal disagree."""
        return await _call(lambda: admin.capacities(who, bus, address))

    @router.put("/packs/{bus}/{address}/capacities")
    async def put_capacities(who: Admin, bus: str, address: int, body: CapacitiesBody) -> Any:
        return await _call(
            lambda: admin.write_capacities(
                who,
                bus,
                address,
                full_ah=body.full_ah,
                remaining_ah=body.remaining_ah,
                nominal_ah=body.nominal_ah,
                allow_inferred=body.allow_inferred,
            )
        )

    @router.put("/packs/{bus}/{address}/cell-count")
    async def put_cell_count(who: Factory, bus: str, address: int, body: CellCountBody) -> Any:
        """Factory: change the cell string count (needs "confirm": true)."""
        return await _call(lambda: admin.set_cell_count(who, bus, address, body.cells, confirm=body.confirm))

    @router.put("/packs/{bus}/{address}/serial")
    async def put_serial(who: Admin, bus: str, address: int, body: SerialBody) -> Any:
        """Write the pack's SN code and read it back."""
        return await _call(lambda: admin.write_serial(who, bus, address, body.serial))

    @router.get("/packs/{bus}/{address}/anti-theft")
    async def get_anti_theft(who: Operator, bus: str, address: int) -> Any:
        return await _call(lambda: admin.anti_theft(who, bus, address))

    @router.put("/packs/{bus}/{address}/anti-theft")
    async def put_anti_theft(who: Admin, bus: str, address: int, body: AntiTheftBody) -> Any:
        """Enable/disable the anti-theft locks (communication, physical, charge activation, sleep voltage)."""
        mode = {k: v for k, v in body.model_dump(exclude={"comm_timeout_h"}).items() if v is not None}
        return await _call(lambda: admin.write_anti_theft(who, bus, address, mode, body.comm_timeout_h))

    @router.post("/packs/{bus}/{address}/unlock")
    async def unlock(who: Admin, bus: str, address: int) -> Any:
        """Unlock a pack locked by the communication anti-theft."""
        return await _call(lambda: admin.unlock(who, bus, address))

    @router.get("/packs/{bus}/{address}/controls")
    async def get_controls(who: Operator, bus: str, address: int) -> Any:
        try:
            return admin.controls_of(who, bus, address)
        except ApiError as err:
            return _error(err)

    @router.post("/packs/{bus}/{address}/control")
    async def control(who: Admin, bus: str, address: int, body: ControlBody) -> Any:
        """MOS, heater, fan, buzzer, sound/light alarm, current limiter, forced sleep, shutdown."""
        return await _call(
            lambda: admin.control(who, bus, address, body.action, body.on, allow_inferred=body.allow_inferred)
        )

    @router.get("/packs/{bus}/{address}/inverter-protocol")
    async def get_pack_protocols(who: Operator, bus: str, address: int) -> Any:
        """The pack's own inverter protocol selection (PACE: CAN and RS485 codes, auto/manual)."""
        return await _call(lambda: admin.pack_protocols(who, bus, address))

    @router.put("/packs/{bus}/{address}/inverter-protocol")
    async def put_pack_protocols(who: Admin, bus: str, address: int, body: PackProtocolsBody) -> Any:
        return await _call(
            lambda: admin.write_pack_protocols(
                who, bus, address, can=body.can, rs485=body.rs485, mode=body.mode
            )
        )

    @router.get("/gateway/protocols")
    async def get_gateway_protocols(who: Viewer) -> Any:
        """The gateway's own CAN and RS485 inverter protocols and the names available."""
        try:
            return admin.gateway_protocols(who)
        except ApiError as err:
            return _error(err)

    @router.put("/gateway/protocols")
    async def put_gateway_protocols(who: Admin, body: GatewayProtocolsBody) -> Any:
        """Switch the running inverter services and persist the choice in the configuration file."""
        return await _call(lambda: admin.set_gateway_protocols(who, can=body.can, rs485=body.rs485))

    # ---- scan --------------------------------------------------------------------------------------

    @router.post("/buses/{bus}/scan")
    async def scan(who: Operator, bus: str, body: ScanBody) -> Any:
        """Probe addresses of a bus through its bus owner (`bms-gateway scan` while the gateway polls
        it): background priority, the bus's own protocol, audited (operator)."""
        from gateway.ops.admin.scan import scan_bus

        return await _call(
            lambda: scan_bus(admin, who, bus, addresses=body.addresses, timeout_s=body.timeout_s)
        )

    # ---- clock -------------------------------------------------------------------------------------

    @router.get("/clock")
    async def get_clocks(who: Operator, packs: Annotated[list[str] | None, Query()] = None) -> Any:
        """Every pack's clock read now, and its drift from the gateway's clock (times as epoch seconds
        and as local ISO 8601 with the zone: `pack_time_iso`, `read_at_iso`)."""
        doc = await _call(lambda: admin.read_clocks(who, packs))
        if isinstance(doc, dict):
            for entry in doc.get("packs", []):
                with_iso(entry, "pack_time", "read_at")
        return doc

    @router.post("/clock/sync")
    async def sync_clocks(who: Operator, body: ClockSyncBody) -> Any:
        """Write the gateway's time to one pack, several, or all (omit packs), and read it back."""
        return await _call(lambda: admin.sync_clocks(who, body.packs))

    # ---- audit -------------------------------------------------------------------------------------

    @router.get("/audit")
    async def audit(
        who: Admin,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        token_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 200,
    ) -> Any:
        """The audit log, newest first (admin); `at` in epoch seconds and `at_iso` (local, with zone)."""
        doc = await _call(
            lambda: admin.audit(who, since=since, until=until, action=action, token_id=token_id, limit=limit)
        )
        if isinstance(doc, list):
            for entry in doc:
                with_iso(entry, "at")
        return doc

    return router


def install(ctx: "AppContext") -> "list[Service]":
    """Wire the admin API into an application context: the service (`ctx.admin`), the router over
    the shared token store, and the clock auto-sync service when `[admin] clock_auto_sync` is on."""
    from gateway.app import shared
    from gateway.ops.admin.service import ClockAutoSync

    admin = AdminService.from_context(ctx)
    auth = shared.auth(ctx)
    ctx.http_routers.append(admin_router(admin, auth.tokens, auth.limiter))
    from gateway.north.http.tokens import tokens_router  # token management (admin)

    ctx.http_routers.append(tokens_router(admin, auth.tokens, auth.limiter))
    return [ClockAutoSync(admin)] if ctx.config.admin.clock_auto_sync else []
