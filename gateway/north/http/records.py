"""The records and upgrades API: history downloads, stored records, recordings, firmware jobs.

Same bearer tokens, roles, rate limits and error shape as the admin API (`gateway.north.http.auth`):
401 without a valid token, 403 with a too-weak role (both saying which role is needed; a 403 is
audited), 404/409/422
from the services with `{"detail": ...}`. Progress of downloads and firmware jobs is streamed as
server-sent events (`text/event-stream`, one JSON document per `data:` line) until the job ends.
Exports answer CSV or XLSX files. Firmware images are uploaded as the raw request body
(`application/octet-stream`).

This module must never talk to a bus itself: everything goes through the services.
"""

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.north.http.auth import bearer_caller
from gateway.ops.admin.service import Caller
from gateway.ops.firmware.manager import FirmwareService
from gateway.ops.history.export import MEDIA_TYPES, render
from gateway.ops.history.recording import VALUE_FIELDS, Recorder, compare, samples_table
from gateway.ops.history.service import HistoryService
from gateway.ops.security.auth import RateLimiter, Role, TokenStore
from gateway.ops.security.errors import ApiError, Conflict, Invalid

if TYPE_CHECKING:
    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service

MAX_PACKS_QUERY = 64


class _Body(BaseModel):
    """A request body: unknown keys refused, JSON types taken strictly (false is not 0, "1" not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PullBody(_Body):
    bus: str = Field(min_length=1, description="bus name")
    address: int | None = Field(
        default=None, ge=0, le=15, description="one pack; omitted: every pack of the bus"
    )
    resume: bool = Field(default=True, description="continue where the last download of the pack stopped")


class StopBody(_Body):
    bus: str = Field(min_length=1, description="bus name")
    address: int | None = Field(default=None, ge=0, le=15)


class DeleteBody(_Body):
    confirm: str | None = Field(default=None, description='must be "DELETE"')


class IntervalBody(_Body):
    interval_min: int = Field(ge=1, le=65535)


class RecordingIntervalBody(_Body):
    interval_s: float = Field(ge=0.1, le=3600.0, description="seconds between two samples of every pack")


class RecordTimeBody(_Body):
    which: Literal["start", "end"]
    when: str = Field(description="ISO 8601 pack time, e.g. 2024-05-09T14:20:51")


class FlashBody(_Body):
    bus: str = Field(min_length=1, description="bus name")
    address: int = Field(ge=0, le=15)
    image: str = Field(description="image id from the upload")


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse({"detail": err.message}, status_code=err.status)


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await fn()
    except ApiError as err:
        return _error(err)


def _sse(updates: AsyncIterator[Any]) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        async for item in updates:
            doc = item.as_dict() if hasattr(item, "as_dict") else item
            yield f"data: {json.dumps(doc)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _file(data: bytes, fmt: str, stem: str) -> Response:
    return Response(
        data,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'},
    )


def _time_range(since: float | None, until: float | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and not math.isfinite(value):
            raise Invalid(f"{name} must be a finite number of epoch seconds, got {value}")
    if since is not None and until is not None and until <= since:
        raise Invalid("the time range is empty: until must be after since")


def _pack_list(packs: list[str] | None) -> list[tuple[str, int]] | None:
    if not packs:
        return None
    if len(packs) > MAX_PACKS_QUERY:
        raise Invalid(f"at most {MAX_PACKS_QUERY} packs per query")
    out = []
    for p in packs:
        bus, sep, addr = p.rpartition("/")
        if not sep or not bus or not addr.isdigit():
            raise Invalid(f"pack {p!r}: expected BUS/ADDRESS, e.g. sim/1")
        if not 0 <= int(addr) <= 15:
            raise Invalid(f"pack {p!r}: the address must be 0..15")
        out.append((bus, int(addr)))
    return out


def records_router(
    history: HistoryService,
    firmware: FirmwareService,
    recorder: Recorder | None,
    tokens: TokenStore,
    limiter: RateLimiter,
) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["records"])

    def caller(role: Role) -> Callable[..., Caller]:
        return bearer_caller(role, tokens, limiter, lambda: history.audit_log)

    Viewer = Annotated[Caller, Depends(caller(Role.VIEWER))]
    Operator = Annotated[Caller, Depends(caller(Role.OPERATOR))]
    Admin = Annotated[Caller, Depends(caller(Role.ADMIN))]

    # ---- history downloads -----------------------------------------------------------------------

    @router.post("/history/pull")
    async def pull(who: Operator, body: PullBody) -> Any:
        """Start downloading the records stored in one pack, or in every pack of a bus one after
        another; resumes where the last download stopped unless `resume` is false (operator)."""
        return await _call(lambda: history.pull(who, bus=body.bus, address=body.address, resume=body.resume))

    @router.post("/history/stop")
    async def stop(who: Operator, body: StopBody) -> Any:
        """Stop running downloads of a bus or of one pack; they can be resumed (operator)."""
        try:  # an unknown bus or pack is a 404, not "nothing stopped"
            history.pack(body.bus, body.address) if body.address is not None else history.bus_packs(body.bus)
        except ApiError as err:
            return _error(err)
        stopped = history.stop(body.bus, body.address)
        await history.audit(
            who,
            "history.stop",
            [],
            {"bus": body.bus, "address": body.address},
            outcome="ok",
            detail=f"{len(stopped)} download(s) stopped",
        )
        return {"stopped": stopped}

    @router.get("/history/jobs")
    async def jobs(who: Operator) -> Any:
        """Running downloads with progress (read/count, rate, ETA) and every pack's last job (operator)."""
        return await history.status()

    @router.get("/history/jobs/events")
    async def job_events(who: Operator, bus: str, address: int | None = None) -> Any:
        """Server-sent events: the progress of the pack's download until it ends; without `address`,
        of every download the last pull of the whole bus started, one after another, until the last
        one ends (operator). One request follows a whole pull: no polling, no rate limit to hit."""
        if address is None:
            sequence = history.sequences.get(bus)
            if sequence is None:
                return _error(Conflict(f"no download of bus {bus} in this run of the gateway"))
            return _sse(sequence.updates())
        job = history.jobs.get(f"{bus}/{address}")
        if job is None:
            return _error(Conflict(f"no download of {bus}/{address} in this run of the gateway"))
        return _sse(job.updates())

    # ---- stored records --------------------------------------------------------------------------

    def query(
        bus: str | None,
        address: int | None,
        serial: str | None,
        since: float | None,
        until: float | None,
        event: str | None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Any:
        return history.query_of(
            bus=bus,
            address=address,
            serial=serial,
            since=since,
            until=until,
            event=event,
            limit=limit,
            offset=offset,
        )

    @router.get("/history/records")
    async def records(
        who: Viewer,
        bus: str | None = None,
        address: Annotated[int | None, Query(ge=0, le=15)] = None,
        serial: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> Any:
        """Downloaded records by pack, time range (epoch seconds) and event name (viewer)."""
        return await _call(
            lambda: history.list(who, query(bus, address, serial, since, until, event, limit, offset))
        )

    @router.get("/history/export")
    async def export(
        who: Viewer,
        format: Literal["csv", "xlsx"] = "csv",
        bus: str | None = None,
        address: Annotated[int | None, Query(ge=0, le=15)] = None,
        serial: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event: str | None = None,
    ) -> Any:
        """The selected records as a CSV or XLSX file (viewer)."""

        async def body() -> Response:
            data = await history.export(who, query(bus, address, serial, since, until, event), format)
            return _file(data, format, "history")

        return await _call(body)

    @router.get("/history/events")
    async def events(who: Viewer) -> Any:
        """Every event name stored, with its number of records (viewer)."""
        rows = await asyncio.to_thread(history.db.events)
        return [{"event": e, "records": n} for e, n in rows]

    # ---- settings in the pack --------------------------------------------------------------------

    @router.post("/packs/{bus}/{address}/history/delete")
    async def delete(who: Admin, bus: str, address: int, body: DeleteBody) -> Any:
        """Delete the records stored in the pack (admin, `confirm: "DELETE"`, audited)."""
        return await _call(lambda: history.delete_in_pack(who, bus, address, body.confirm))

    @router.get("/packs/{bus}/{address}/history/interval")
    async def get_interval(who: Operator, bus: str, address: int) -> Any:
        """The pack's storage interval in minutes (operator)."""
        return await _call(lambda: history.read_interval(who, bus, address))

    @router.put("/packs/{bus}/{address}/history/interval")
    async def put_interval(who: Admin, bus: str, address: int, body: IntervalBody) -> Any:
        """Write the storage interval and read it back (admin)."""
        return await _call(lambda: history.write_interval(who, bus, address, body.interval_min))

    @router.get("/packs/{bus}/{address}/history/record-time")
    async def get_record_time(who: Operator, bus: str, address: int) -> Any:
        """The record start and end time (Tianpower) (operator)."""
        return await _call(lambda: history.read_record_times(who, bus, address))

    @router.put("/packs/{bus}/{address}/history/record-time")
    async def put_record_time(who: Admin, bus: str, address: int, body: RecordTimeBody) -> Any:
        """Write the record start or end time and read it back (admin)."""
        return await _call(lambda: history.write_record_time(who, bus, address, body.which, body.when))

    # ---- real-time recording ---------------------------------------------------------------------

    def need_recorder() -> Recorder:
        if recorder is None:
            raise Conflict("real-time recording is disabled ([recording] enabled = false)")
        return recorder

    @router.get("/recording")
    async def recording(who: Viewer) -> Any:
        """Recording settings, size and the measured cost per snapshot (viewer)."""

        async def body() -> Any:
            rec = need_recorder()
            rows = await asyncio.to_thread(rec.db.count)
            used = await asyncio.to_thread(rec.db.used_bytes)
            return {
                "interval_s": rec.interval_s,
                "max_age_s": rec.max_age_s,
                "max_bytes": rec.max_bytes,
                "rows": rows,
                "used_bytes": used,
                "stats": rec.stats.as_dict(),
            }

        return await _call(body)

    @router.put("/recording/interval")
    async def put_recording_interval(who: Admin, body: RecordingIntervalBody) -> Any:
        """Change the recording interval now, until the next restart (admin, audited as
        `recording.interval`); `[recording] interval_s` in the configuration file keeps it."""

        async def change() -> Any:
            rec = need_recorder()
            before = rec.set_interval(body.interval_s)
            await history.audit(
                who,
                "recording.interval",
                [],
                {"interval_s": body.interval_s},
                outcome="ok",
                before=before,
                after=rec.interval_s,
            )
            return {"before_s": before, "interval_s": rec.interval_s, "persisted": False}

        return await _call(change)

    @router.get("/recording/samples")
    async def samples(
        who: Viewer,
        since: float | None = None,
        until: float | None = None,
        packs: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
    ) -> Any:
        """Recorded samples (no values while a pack was not online) (viewer)."""

        async def body() -> Any:
            rec = need_recorder()
            _time_range(since, until)
            keys = _pack_list(packs)
            rows = await asyncio.to_thread(rec.db.query, since=since, until=until, packs=keys, limit=limit)
            return [s.as_dict() for s in rows]

        return await _call(body)

    @router.get("/recording/compare")
    async def compare_packs(
        who: Viewer,
        value: str = "soc_pct",
        since: float | None = None,
        until: float | None = None,
        packs: Annotated[list[str] | None, Query()] = None,
    ) -> Any:
        """The Multi Packs view: one value of every pack side by side per sample time (viewer)."""

        async def body() -> Any:
            rec = need_recorder()
            if value not in VALUE_FIELDS:
                raise Invalid(f"value must be one of {', '.join(VALUE_FIELDS)}, got {value!r}")
            _time_range(since, until)
            start = since if since is not None else time.time() - 3600.0
            rows = await asyncio.to_thread(rec.db.query, since=start, until=until, packs=_pack_list(packs))
            return compare(rows, value)

        return await _call(body)

    @router.get("/recording/export")
    async def export_recording(
        who: Viewer,
        format: Literal["csv", "xlsx"] = "csv",
        since: float | None = None,
        until: float | None = None,
        packs: Annotated[list[str] | None, Query()] = None,
    ) -> Any:
        """A time range of the recording as a CSV or XLSX file (viewer)."""

        async def body() -> Response:
            rec = need_recorder()
            _time_range(since, until)
            rows = await asyncio.to_thread(rec.db.query, since=since, until=until, packs=_pack_list(packs))
            header, table = samples_table(rows)
            data = await asyncio.to_thread(render, format, header, table, sheet="recording")
            return _file(data, format, "recording")

        return await _call(body)

    # ---- firmware --------------------------------------------------------------------------------

    @router.post(
        "/firmware/images",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(who: Admin, request: Request, filename: str = "") -> Any:
        """Upload an image (raw body); size, format, checksums are checked before it is kept (admin)."""
        limit = firmware.images.max_bytes + 1024
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                return JSONResponse(
                    {"detail": f"image larger than the limit of {firmware.images.max_bytes} bytes"},
                    status_code=413,
                )

        async def body() -> Any:
            info = await firmware.upload(who, bytes(data), filename)
            return info.as_dict()

        return await _call(body)

    @router.get("/firmware/images")
    async def images(who: Admin) -> Any:
        """Uploaded images (admin)."""
        return [i.as_dict() for i in await asyncio.to_thread(firmware.images.list)]

    @router.post("/firmware/jobs")
    async def flash(who: Admin, body: FlashBody) -> Any:
        """Check the image against the pack, run the pre-flight, start the upgrade (admin)."""

        async def run() -> Any:
            return (await firmware.flash(who, body.bus, body.address, body.image)).as_dict()

        return await _call(run)

    @router.get("/firmware/jobs")
    async def firmware_jobs(who: Operator) -> Any:
        """Every job, and the packs last seen in their bootloader (operator)."""
        return firmware.status()

    @router.get("/firmware/jobs/{job_id}")
    async def firmware_job(who: Operator, job_id: str) -> Any:
        """One job: state, phase, blocks, where the pack is (operator)."""
        try:
            return firmware.job(job_id).as_dict()
        except ApiError as err:
            return _error(err)

    @router.get("/firmware/jobs/{job_id}/events")
    async def firmware_events(who: Operator, job_id: str) -> Any:
        """Server-sent events: the job's progress until it ends (operator)."""
        job = firmware.running.get(job_id)
        if job is None:
            try:
                rec = firmware.job(job_id)
            except ApiError as err:
                return _error(err)

            async def once() -> AsyncIterator[Any]:
                yield rec

            return _sse(once())

        async def until_settled() -> AsyncIterator[Any]:
            async for rec in job.updates():
                yield rec
            await firmware.settled(job_id)  # the stream ends once the result is audited

        return _sse(until_settled())

    @router.post("/firmware/jobs/{job_id}/resume")
    async def resume(who: Admin, job_id: str) -> Any:
        """Resume an interrupted, aborted or failed job (the pack continues from its last block) (admin)."""
        return await _call(lambda: _as_dict(firmware.resume(who, job_id)))

    @router.post("/firmware/jobs/{job_id}/abort")
    async def abort(who: Admin, job_id: str) -> Any:
        """Abort a job between two messages; it stays resumable (admin)."""
        return await _call(lambda: _as_dict(firmware.abort(who, job_id)))

    return router


async def _as_dict(aw: Awaitable[Any]) -> Any:
    return (await aw).as_dict()


def install(ctx: "AppContext") -> "list[Service]":
    """Wire history, recording and firmware into an application context; returns their services."""
    from gateway.app import shared

    auth = shared.auth(ctx)
    history = HistoryService.from_context(ctx)
    firmware = FirmwareService.from_context(ctx)
    ctx.history, ctx.firmware = history, firmware
    recorder = Recorder.from_context(ctx) if ctx.config.recording.enabled else None
    ctx.http_routers.append(records_router(history, firmware, recorder, auth.tokens, auth.limiter))
    services: list[Service] = [history, firmware]
    if recorder is not None:
        services.append(recorder)
    return services
