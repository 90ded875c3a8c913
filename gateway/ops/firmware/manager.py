"""Firmware upgrades as the operator sees them: upload, checks, pre-flight, jobs, resume, abort, audit.

Order of checks for a new job — nothing reaches the pack before all of them pass:

1. the caller is `admin`; the image is stored and still parses (magic, header CRC, size, CRC32);
2. the pack's bus speaks the bms-gateway bootloader protocol (the built-in simulator, or a bus
   listed in `[firmware] bootloader_buses`); the vendors' upgrade protocols are unpublished, so
   real packs are refused as "not supported" with that reason — nothing guesses;
3. the image's family and target model match the pack (its version string from the identity read);
4. pre-flight: pack online, no protection active, |current| at most `max_current_a`, SOC at least
   `min_soc_pct`, no other upgrade on that bus. Every failing condition is named in the refusal.

Jobs live in `<state_dir>/<[firmware] dir>/jobs/*.json`; at start-up a job left running by the
previous process becomes `interrupted` (resumable). Every action and every job outcome is audited.

This module reaches packs only through the bus owner and the pack's driver.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.app import shared
from gateway.app.config import state_path
from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import PackIdentity, PackKey
from gateway.ops.admin.packs import label
from gateway.ops.firmware.records import ACTIVE, RESUMABLE, JobFiles, JobRecord, JobState
from gateway.ops.history.base import RecordsService
from gateway.ops.history.errors import require
from gateway.ops.security.audit import Actor, AuditLog
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Conflict, Invalid, NotFound
from gateway.south.drivers.base import Driver
from protocol.bms.bootloader import FirmwareImage, ImageError

if TYPE_CHECKING:
    # The image store and the transfer are imported when an operator uploads, lists or flashes an
    # image (`images`, `_start`), not at every start of the gateway. (The bootloader codec is
    # loaded anyway: the families' frame codecs know its command codes.)
    from gateway.ops.firmware.images import ImageInfo, ImageStore
    from gateway.ops.firmware.job import FirmwareJob

log = logging.getLogger(__name__)


class FirmwareService(RecordsService):
    name = "firmware"

    def __init__(
        self,
        ctx: AppContext,
        directory: Path,
        audit: AuditLog | None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        cfg = ctx.config.firmware
        self.cfg = cfg
        self.directory = directory
        self.files = JobFiles(directory)
        self.audit_log = audit
        self._wall = wall
        self.running: dict[str, FirmwareJob] = {}  # job id -> job in progress
        ctx.pack_jobs.register("firmware", self.running_on)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._job_tasks: dict[str, asyncio.Task[Any]] = {}  # the last run of each job
        self._tg: asyncio.TaskGroup | None = None
        self._recovered = False

    @classmethod
    def from_context(cls, ctx: AppContext) -> FirmwareService:
        directory = state_path(ctx.config, ctx.config_path, ctx.config.firmware.dir)
        return cls(ctx, directory, shared.audit_log(ctx))

    @cached_property
    def images(self) -> ImageStore:
        from gateway.ops.firmware.images import ImageStore

        return ImageStore(self.directory, max_bytes=self.cfg.max_image_kib * 1024)

    # ---- the gateway service -------------------------------------------------------------------

    def recover(self) -> list[JobRecord]:
        """Jobs the previous process left running become `interrupted` (resumable)."""
        changed = []
        for rec in self.files.all():
            if rec.state in ACTIVE and rec.id not in self.running:
                new = JobRecord.from_dict(
                    {
                        **rec.as_dict(),
                        "state": JobState.INTERRUPTED.value,
                        "detail": (
                            f"the gateway stopped during the upgrade (phase {rec.phase or 'start'}, block "
                            f"{rec.blocks_done} of {rec.blocks_total}); the pack may be left in its "
                            "bootloader: resume to continue"
                        ),
                        "updated_at": self._wall(),
                    }
                )
                self.files.save(new)
                changed.append(new)
        self._recovered = True
        return changed

    async def run(self, ready: ReadyCallback) -> None:
        await asyncio.to_thread(self.recover)
        await self._serve(ready)

    # ---- plumbing --------------------------------------------------------------------------------

    def supports(self, key: PackKey) -> str | None:
        """None when the pack's bus speaks our bootloader protocol, else the reason it does not."""
        configured = {b.name for b in self.ctx.config.bus}
        if key[0] in self.cfg.bootloader_buses:
            return None
        if self.ctx.simulator is not None and key[0] not in configured:
            return None  # the built-in simulator's bus
        family = None
        driver = self.ctx.pollers.get(key[0])
        if driver is not None and driver.driver is not None:
            family = driver.driver.family
        return (
            f"firmware upgrade is not supported for {family or 'these'} packs on bus {key[0]}: the vendor's "
            "upgrade protocol is not published (flashing without it risks bricking the pack), so the gateway "
            "only upgrades packs that speak the bms-gateway bootloader protocol (docs/bootloader.md: the "
            "simulator, or buses listed in [firmware] bootloader_buses)"
        )

    def driver(self, key: PackKey) -> Driver:
        drv = self.ctx.driver_for(key)
        if drv is None:
            raise Conflict(f"bus {key[0]}: the BMS protocol is not detected yet; retry once a pack answers")
        return drv

    def running_on(self, key: PackKey) -> str | None:
        """The upgrade running on the pack, named for a refusal of another long job (or None)."""
        for job in self.running.values():
            if (job.rec.bus, job.rec.address) == key and job.rec.state in ACTIVE:
                return f"a firmware upgrade (job {job.rec.id}) is running on {label(key)}"
        return None

    def preflight(self, key: PackKey, *, pack_in_bootloader: bool = False) -> list[str]:
        """Every reason the pack must not be upgraded now (empty: go)."""
        reasons: list[str] = []
        other = self.ctx.pack_jobs.running(key, besides="firmware")
        if other is not None:
            reasons.append(f"{other}; long jobs on one pack are exclusive (wait for it or stop it)")
        busy = [j for j in self.running.values() if j.rec.bus == key[0] and j.rec.state in ACTIVE]
        if busy:
            reasons.append(
                f"another upgrade is running on bus {key[0]} (job {busy[0].rec.id}, pack {busy[0].rec.pack})"
            )
        if pack_in_bootloader:
            return reasons  # the application does not run: nothing to measure, the transfer continues
        snap = self.ctx.store.view.pack(*key)
        if snap is None or not snap.online or snap.telemetry is None:
            state = "unknown" if snap is None else snap.availability.value
            reasons.append(f"pack {label(key)} is not online (availability {state})")
            return reasons
        t = snap.telemetry
        if t.protections:
            reasons.append(f"protection active: {', '.join(sorted(t.protections))}")
        if not math.isfinite(t.current_a) or abs(t.current_a) > self.cfg.max_current_a:
            reasons.append(
                f"|current| is {abs(t.current_a):.2f} A, above the {self.cfg.max_current_a:.2f} A allowed "
                "during an upgrade (stop charging and discharging first)"
            )
        if t.soc_pct < self.cfg.min_soc_pct:
            reasons.append(f"SOC is {t.soc_pct:.1f} %, below the {self.cfg.min_soc_pct:.1f} % minimum")
        return reasons

    # ---- images ----------------------------------------------------------------------------------

    async def upload(self, who: Actor, data: bytes, filename: str = "") -> ImageInfo:
        request = {"filename": filename, "bytes": len(data)}
        try:
            require(who, Role.ADMIN, "uploading a firmware image")
            try:
                info = await asyncio.to_thread(self.images.add, data)
            except ImageError as err:
                raise Invalid(f"firmware image refused: {err}") from None
        except (Invalid, Conflict) as err:
            await self.audit(who, "firmware.upload", [], request, outcome="refused", detail=err.message)
            raise
        except Exception as err:  # Forbidden and friends
            await self.audit(who, "firmware.upload", [], request, outcome="refused", detail=str(err))
            raise
        await self.audit(who, "firmware.upload", [], request, outcome="ok", after=info.as_dict())
        return info

    def _image(self, image_id: str) -> tuple[FirmwareImage, ImageInfo]:
        try:
            return self.images.load(image_id)
        except KeyError:
            raise NotFound(f"no firmware image {image_id!r}; upload it first") from None
        except ImageError as err:
            raise Invalid(f"stored image {image_id} is damaged: {err}") from None

    # ---- jobs ------------------------------------------------------------------------------------

    async def flash(self, who: Actor, bus: str, address: int, image_id: str) -> JobRecord:
        """Check everything, then start the upgrade of one pack (returns the started job)."""
        key = self.pack(bus, address)
        request = {"image": image_id}
        try:
            require(who, Role.ADMIN, "a firmware upgrade")
            image, info = self._image(image_id)
            reason = self.supports(key)
            if reason is not None:
                raise Conflict(reason)
            driver = self.driver(key)
            snap = self.ctx.store.view.pack(*key)
            version = None if snap is None else snap.identity.version
            if version is None:
                raise Conflict(f"pack {label(key)}: its version string is not known yet (identity not read)")
            try:
                image.check_target(driver.family, version)
            except ImageError as err:
                raise Invalid(f"image {image_id} does not fit pack {label(key)}: {err}") from None
            if version == info.version:
                raise Conflict(f"pack {label(key)} already runs {version!r}")
            stuck = self.left_in_bootloader(key)
            in_boot = stuck is not None and (snap is None or not snap.online)
            reasons = self.preflight(key, pack_in_bootloader=in_boot)
            if reasons:
                raise Conflict(f"pre-flight refused the upgrade of {label(key)}: " + "; ".join(reasons))
        except (Invalid, Conflict, NotFound) as err:
            await self.audit(who, "firmware.flash", [key], request, outcome="refused", detail=err.message)
            raise
        except Exception as err:
            await self.audit(who, "firmware.flash", [key], request, outcome="refused", detail=str(err))
            raise
        now = self._wall()
        rec = JobRecord(
            id=uuid.uuid4().hex[:12],
            bus=key[0],
            address=key[1],
            family=driver.family,
            image_id=info.id,
            target=info.target,
            new_version=info.version,
            old_version=version,
            state=JobState.PENDING,
            phase="",
            blocks_done=0,
            blocks_total=info.blocks,
            pack_mode="application",
            created_at=now,
            updated_at=now,
            history=(f"created by {who.principal.token_id}: {version!r} -> {info.version!r}",)
            + ((f"the pack was left in its bootloader by job {stuck.id}",) if in_boot and stuck else ()),
        )
        await asyncio.to_thread(self.files.save, rec)
        # the job's "started" entry is its intent: written before the first byte, closed by its result
        started = await self.audit(
            who, "firmware.flash", [key], request, outcome="started", before=version, after=info.version
        )
        return self._start(who, rec, image, driver, [started] if started else [])

    def _start(
        self, who: Actor, rec: JobRecord, image: FirmwareImage, driver: Driver, intents: list[int]
    ) -> JobRecord:
        from gateway.ops.firmware.job import FirmwareJob

        key = (rec.bus, rec.address)
        job = FirmwareJob(
            rec,
            image,
            self.ctx.bus_for(key),
            driver,
            self.files,
            block_retries=self.cfg.block_retries,
            wall=self._wall,
        )
        self.running[rec.id] = job
        job.rec = JobRecord.from_dict({**rec.as_dict(), "state": JobState.RUNNING.value})
        self._job_tasks[rec.id] = self._spawn(self._run(who, job, intents))
        return job.rec

    async def settled(self, job_id: str) -> None:
        """Wait until the job's run is over, its result audited and the model updated."""
        task = self._job_tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task})

    async def _run(self, who: Actor, job: FirmwareJob, intents: list[int]) -> None:
        key = (job.rec.bus, job.rec.address)
        self._pause_polling(key, job.rec.id)
        try:
            rec = await job.run()
        finally:
            self.running.pop(job.rec.id, None)
            self._resume_polling(key)
        if job.identity is not None:
            self._publish_identity((rec.bus, rec.address), job.identity)
        outcome = {JobState.DONE: "ok", JobState.FAILED: "failed"}.get(rec.state, rec.state.value)
        await self.audit(
            who,
            "firmware.result",
            [(rec.bus, rec.address)],
            {"job": rec.id, "image": rec.image_id},
            outcome=outcome,
            before=rec.old_version,
            after=rec.new_version if rec.state is JobState.DONE else None,
            detail=rec.detail,
            intents=intents,
        )

    def _pause_polling(self, key: PackKey, job_id: str) -> None:
        """Keep the poller's reads away from the pack during its upgrade (`BusPoller.pause`): in its
        bootloader it answers nothing else, and every poll would hold the bus for its full timeout
        between two blocks. The pack turns stale/offline in the model meanwhile, which is what it
        is; its snapshot says why (`paused`)."""
        poller = self.ctx.pollers.get(key[0])
        if poller is not None and key[1] in poller.packs:
            poller.pause(key[1], f"firmware upgrade (job {job_id})")

    def _resume_polling(self, key: PackKey) -> None:
        """After the job: the poller reads the pack again at once (`BusPoller.resume`)."""
        poller = self.ctx.pollers.get(key[0])
        if poller is not None and key[1] in poller.packs:
            poller.resume(key[1])

    def _publish_identity(self, key: PackKey, identity: PackIdentity) -> None:
        """The version read back after the reboot goes into the model at once (the poller re-reads
        identities only every `identity_interval_s`)."""
        poller = self.ctx.pollers.get(key[0])
        if poller is not None and key[1] in poller.packs:
            poller.set_identity(key[1], identity)

    async def resume(self, who: Actor, job_id: str) -> JobRecord:
        rec = self.job(job_id)
        key = (rec.bus, rec.address)
        request = {"job": job_id}
        try:
            require(who, Role.ADMIN, "resuming a firmware upgrade")
            if rec.id in self.running:
                raise Conflict(f"job {job_id} is running")
            if rec.state not in RESUMABLE:
                raise Conflict(
                    f"job {job_id} is {rec.state.value}; only interrupted, aborted or failed jobs resume"
                )
            image, _info = self._image(rec.image_id)
            reason = self.supports(key)
            if reason is not None:
                raise Conflict(reason)
            driver = self.driver(key)
            snap = self.ctx.store.view.pack(*key)
            silent = snap is None or not snap.online
            # A pack left in its bootloader answers nothing else: it is not "online", and there is no
            # current or SOC to check. The transfer continues from the block it reports.
            reasons = self.preflight(key, pack_in_bootloader=silent and rec.pack_mode != "application")
            if reasons:
                raise Conflict(f"pre-flight refused resuming job {job_id}: " + "; ".join(reasons))
        except (Invalid, Conflict, NotFound) as err:
            await self.audit(who, "firmware.resume", [key], request, outcome="refused", detail=err.message)
            raise
        started = await self.audit(who, "firmware.resume", [key], request, outcome="started")
        return self._start(who, rec, image, driver, [started] if started else [])

    async def abort(self, who: Actor, job_id: str) -> JobRecord:
        rec = self.job(job_id)
        key = (rec.bus, rec.address)
        try:
            require(who, Role.ADMIN, "aborting a firmware upgrade")
        except Exception as err:
            await self.audit(
                who, "firmware.abort", [key], {"job": job_id}, outcome="refused", detail=str(err)
            )
            raise
        job = self.running.get(job_id)
        if job is not None:
            job.abort()
            await self.audit(who, "firmware.abort", [key], {"job": job_id}, outcome="ok")
            async for current in job.updates():
                rec = current
            return rec
        if rec.state in ACTIVE:
            rec = JobRecord.from_dict({**rec.as_dict(), "state": JobState.ABORTED.value, "detail": "aborted"})
            await asyncio.to_thread(self.files.save, rec)
        await self.audit(
            who, "firmware.abort", [key], {"job": job_id}, outcome="ok", detail=f"job was {rec.state}"
        )
        return rec

    def left_in_bootloader(self, key: PackKey) -> JobRecord | None:
        """The pack's last job when it ended with the pack in its bootloader (else None)."""
        mine = [r for r in self.jobs() if (r.bus, r.address) == key]
        if not mine:
            return None
        last = mine[-1]
        if last.state in RESUMABLE and last.pack_mode == "bootloader":
            return last
        return None

    def job(self, job_id: str) -> JobRecord:
        running = self.running.get(job_id)
        if running is not None:
            return running.rec
        rec = self.files.load(job_id)
        if rec is None:
            raise NotFound(f"no firmware job {job_id!r}")
        return rec

    def jobs(self) -> list[JobRecord]:
        out = {r.id: r for r in self.files.all()}
        for job_id, job in self.running.items():
            out[job_id] = job.rec
        return sorted(out.values(), key=lambda r: r.created_at)

    def status(self) -> dict[str, Any]:
        jobs = self.jobs()
        latest: dict[str, JobRecord] = {}
        for r in jobs:
            latest[r.pack] = r
        return {
            "jobs": [r.as_dict() for r in jobs],
            "packs_in_bootloader": sorted(p for p, r in latest.items() if r.pack_mode == "bootloader"),
        }
