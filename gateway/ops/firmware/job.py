"""One firmware upgrade of one pack over the bms-gateway bootloader protocol, resumable.

Steps (docs/firmware.md): ENTER the bootloader with the image header, send every block and get it
acknowledged (retrying a block without an answer or with a bad CRC), VERIFY, REBOOT, then confirm
the new version string by reading the pack's identity through its driver. Every message goes
through the bus owner at `Priority.FIRMWARE`. The job's state is saved after every step (JSON,
atomic replace), so a silent pack, an operator abort or a process restart leaves a job that can be
resumed: ENTER with the same image makes the pack report the first block it is missing.

The checks that must pass before the pack is touched (image target, pre-flight) are the manager's
(`gateway.ops.firmware.manager`); this module only runs the transfer.

This module never writes to a transport directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from gateway.core.model import PackIdentity
from gateway.ops.firmware.records import ACTIVE, JobFiles, JobRecord, JobState
from gateway.south.drivers.base import BusClient, BusError, Driver, NoResponse, NotSent, Priority
from protocol.bms import bootloader as bl
from protocol.bms import registry as bms_registry
from protocol.bms.base import Frame
from protocol.errors import RemoteProtocolError

log = logging.getLogger(__name__)


def _matcher(family: str, address: int, request: bytes) -> Callable[[Frame], bool]:
    """Answers of the pack at `address` to a bootloader message (never our own echo)."""

    def match(frame: Frame) -> bool:
        if frame.address != address or frame.raw == request:
            return False
        carriage = bms_registry.boot(family)
        if not carriage.answer_carries_command:
            return not frame.is_request
        return carriage.codes.op(frame.command) is not None

    return match


class Aborted(Exception):
    """The operator aborted the job."""


class FirmwareJob:
    """Runs (or resumes) one job; `await run()` returns the final record."""

    def __init__(
        self,
        rec: JobRecord,
        image: bl.FirmwareImage,
        bus: BusClient,
        driver: Driver,
        files: JobFiles,
        *,
        block_retries: int = 3,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rec = rec
        self.image = image
        self.bus = bus
        self.driver = driver
        self.files = files
        self.block_retries = block_retries
        self._wall = wall
        self._abort = asyncio.Event()
        self._changed = asyncio.Event()
        self.identity: PackIdentity | None = None  # read back after the reboot

    # ---- observation and control -----------------------------------------------------------------

    def abort(self) -> None:
        self._abort.set()

    async def updates(self) -> AsyncIterator[JobRecord]:
        while True:
            self._changed.clear()
            current = self.rec
            yield current
            if current.state not in ACTIVE:
                return
            await self._changed.wait()

    def _set(self, note: str | None = None, *, save: bool = True, **changes: Any) -> None:
        history = self.rec.history
        if note:
            history = (*history, f"{time.strftime('%H:%M:%S', time.gmtime(self._wall()))} {note}")[-50:]
        self.rec = replace(self.rec, updated_at=self._wall(), history=history, **changes)
        if save:
            self.files.save(self.rec)
        self._changed.set()

    # ---- exchanges -------------------------------------------------------------------------------

    async def _exchange(self, op: bl.Op, body: bytes, *, retries: int) -> bl.BootReply:
        """One bootloader message, resent while the pack does not answer (it answers a repeat
        idempotently). NoResponse after the retries."""
        family = self.rec.family
        carriage = bms_registry.boot(family)
        raw = carriage.encode_frame(self.rec.address, op, body)
        last: Exception | None = None
        for _ in range(retries + 1):
            if self._abort.is_set():
                raise Aborted()
            try:
                frame = await self.bus.transact(
                    raw,
                    _matcher(family, self.rec.address, raw),
                    priority=Priority.FIRMWARE,
                    address=self.rec.address,
                )
            except (NoResponse, NotSent) as err:
                last = err
                continue
            if frame is None:
                last = NoResponse("no answer")
                continue
            try:
                return carriage.decode_reply_frame(frame.raw, op)
            except RemoteProtocolError as err:
                last = err
                continue
        raise NoResponse(f"{op.name}: the pack did not answer ({last})")

    async def status(self) -> bl.BootReply:
        return await self._exchange(bl.Op.STATUS, b"", retries=1)

    # ---- the job ---------------------------------------------------------------------------------

    async def run(self) -> JobRecord:
        attempts = self.rec.attempts + 1
        self._set(f"run {attempts} started", state=JobState.RUNNING, attempts=attempts, detail="")
        session = bl.UpgradeSession(self.image, max_block_retries=self.block_retries)
        try:
            if attempts > 1:
                # A resumed job: the pack may already run the new firmware (the reboot reply or the
                # version read was lost), or sit in its bootloader (ENTER below resumes the blocks).
                state = await self._exchange(bl.Op.STATUS, b"", retries=1)
                in_boot = state.mode is bl.Mode.BOOTLOADER
                where = "bootloader" if in_boot else "application"
                self._set(f"pack found in its {where} running {state.version!r}", pack_mode=where)
                if not in_boot and state.version == self.rec.new_version:
                    return await self._confirm()
            while not session.done:
                op, body = session.next_request()
                phase = op.name.lower()
                if phase != self.rec.phase:
                    self._set(f"{phase}", phase=phase)
                retries = self.block_retries if op is not bl.Op.REBOOT else 0
                try:
                    reply = await self._exchange(op, body, retries=retries)
                except NoResponse:
                    if op is bl.Op.REBOOT:
                        break  # the pack may already run the new firmware: confirm below
                    raise
                mode = "bootloader" if reply.mode is bl.Mode.BOOTLOADER else "application"
                session.on_reply(reply)
                if op is bl.Op.ENTER and session.resumed_from is not None:
                    self._set(
                        f"pack already has {session.resumed_from} blocks: resuming",
                        resumed_from_block=session.resumed_from,
                    )
                done, total = session.progress
                save = op is not bl.Op.BLOCK or done % 16 == 0 or done == total
                self._set(None, save=save, blocks_done=min(done, total), blocks_total=total, pack_mode=mode)
            return await self._confirm()
        except Aborted:
            self._set(
                "aborted by the operator",
                state=JobState.ABORTED,
                detail=self._where("aborted by the operator"),
            )
        except bl.UpgradeError as err:
            mode = await self._mode_quiet()
            self._set(
                f"refused: {err}",
                state=JobState.FAILED,
                pack_mode=mode,
                detail=f"the pack refused: {err} (status {err.status.name}); pack in its {mode}",
            )
        except BusError as err:
            self._set(
                f"interrupted: {err}",
                state=JobState.INTERRUPTED,
                detail=self._where(f"the pack stopped answering ({err})"),
            )
        except asyncio.CancelledError:
            self._set(
                "interrupted: gateway stopping",
                state=JobState.INTERRUPTED,
                detail=self._where("the gateway stopped"),
            )
            raise
        return self.rec

    def _where(self, why: str) -> str:
        if (
            self.rec.phase in ("", "enter")
            and self.rec.blocks_done == 0
            and self.rec.pack_mode != "bootloader"
        ):
            return f"{why} before the transfer started; resume or start again"
        return (
            f"{why} at block {self.rec.blocks_done} of {self.rec.blocks_total} (phase {self.rec.phase}); "
            "the pack is probably left in its bootloader, answering only upgrade messages: resume to continue"
        )

    async def _mode_quiet(self) -> str:
        try:
            reply = await self._exchange(bl.Op.STATUS, b"", retries=0)
        except (BusError, Aborted):
            return "unknown"
        return "bootloader" if reply.mode is bl.Mode.BOOTLOADER else "application"

    async def _confirm(self) -> JobRecord:
        """Read the version string back through the driver (the application answers again)."""
        self._set("confirm: reading the version back", phase="confirm")
        version: str | None = None
        last = ""
        for _ in range(self.block_retries + 2):
            try:
                ident = await self.driver.read_identity(self.bus, self.rec.address)
                self.identity = ident
                version = ident.version
                break
            except BusError as err:
                last = str(err)
                await asyncio.sleep(0.05)
        if version is None:
            self._set(
                "interrupted: version not readable after reboot",
                state=JobState.INTERRUPTED,
                pack_mode=await self._mode_quiet(),
                detail=f"no answer to the version read after the reboot ({last}); resume to check again",
            )
            return self.rec
        if version == self.rec.new_version:
            self._set(
                f"done: the pack reports {version!r}",
                state=JobState.DONE,
                pack_mode="application",
                blocks_done=self.rec.blocks_total,
                detail=f"upgraded from {self.rec.old_version!r} to {version!r}",
            )
        else:
            mode = await self._mode_quiet()
            self._set(
                f"failed: the pack reports {version!r}",
                state=JobState.FAILED,
                pack_mode=mode,
                detail=f"after the reboot the pack reports {version!r}, expected {self.rec.new_version!r}",
            )
        return self.rec
