"""Firmware upgrade jobs against the simulator's bootloader, through the gateway's bus owner:
full upgrade, interruptions (silent pack, abort, process restart) that resume, images refused
before the pack is touched, pre-flight refusals that say why, roles and the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from gateway.app.context import AppContext
from gateway.ops.firmware.manager import FirmwareService
from gateway.ops.firmware.records import JobRecord, JobState
from gateway.ops.history.errors import Conflict, Forbidden, Invalid
from gateway.ops.security.auth import Role
from protocol.bms import bootloader as bl
from protocol.bms.registry import boot
from simulator import Simulator
from tests.support.records_support import Who, make_sim, sim_context, wait_for

pytestmark = pytest.mark.e2e

ADMIN = Who(Role.ADMIN, "t-admin")
TARGET = {"tianpower": "HY-PT003-B200LT55", "pace": "P16S100A-SIM"}
NEW_VERSION = {"tianpower": "HY-PT003-B200LT55-V1.1.0", "pace": "P16S100A-SIM-V2.6"}
PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(6000))  # 47 blocks


BIG_PAYLOAD = PAYLOAD * 5  # 235 blocks: a transfer long enough to be interrupted on purpose


def image(
    protocol: str, *, target: str | None = None, version: str | None = None, payload: bytes = PAYLOAD
) -> bytes:
    return bl.build_image(protocol, target or TARGET[protocol], version or NEW_VERSION[protocol], payload)


class BusSpy:
    """Records every request the bus owner is asked to send (to prove nothing reached a pack)."""

    def __init__(self, ctx: AppContext) -> None:
        self.sent: list[bytes] = []
        owner = ctx.buses["sim"]
        self._inner: Callable[..., Any] = owner.transact
        owner.transact = self.transact  # type: ignore[method-assign]

    async def transact(self, request: bytes, *args: Any, **kw: Any) -> Any:
        self.sent.append(request)
        return await self._inner(request, *args, **kw)

    @staticmethod
    def is_bootloader(family: str, raw: bytes) -> bool:
        if family == "tianpower":
            return raw[2] in boot("tianpower").codes.by_name().values()
        return int(raw[7:9], 16) in boot("pace").codes.by_name().values()

    @staticmethod
    def address(family: str, raw: bytes) -> int:
        return raw[1] if family == "tianpower" else int(raw[3:5], 16)

    def bootloader_messages(self, family: str) -> int:
        return sum(1 for r in self.sent if self.is_bootloader(family, r))

    def polls_during_upgrade(self, family: str, address: int) -> int:
        """Other requests to `address` between its first and its last bootloader message."""
        marks = [i for i, r in enumerate(self.sent) if self.is_bootloader(family, r)]
        window = self.sent[marks[0] : marks[-1]]
        return sum(
            1 for r in window if not self.is_bootloader(family, r) and self.address(family, r) == address
        )


def context(sim: Simulator, tmp_path: Path, **firmware: Any) -> AbstractAsyncContextManager[AppContext]:
    """The simulator's bus declared as speaking our bootloader protocol."""
    cfg = {"firmware": {"bootloader_buses": ["sim"], "min_soc_pct": 10.0, **firmware}}
    return sim_context(sim, tmp_path, config=cfg, timeout_s=0.1)  # a silent pack costs little


async def finished(service: FirmwareService, job_id: str, timeout_s: float = 20.0) -> JobRecord:
    await wait_for(
        lambda: service.job(job_id).state not in (JobState.PENDING, JobState.RUNNING), timeout_s, "job end"
    )
    await service.settled(job_id)  # its result audited, the model updated
    return service.job(job_id)


def audit_actions(service: FirmwareService) -> list[tuple[str, str]]:
    assert service.audit_log is not None
    return [(e.action, e.outcome) for e in reversed(service.audit_log.query())]


@pytest.mark.parametrize("protocol", ["tianpower", "pace"])
async def test_full_upgrade_changes_the_version_string(protocol: str, tmp_path: Path) -> None:
    sim = make_sim(protocol, pacing=True, baud=115200, turnaround_s=0.005)  # lasts several poll intervals
    async with context(sim, tmp_path) as ctx:
        spy = BusSpy(ctx)
        fw = FirmwareService.from_context(ctx)
        old = ctx.store.view.pack("sim", 1).identity.version  # type: ignore[union-attr]
        info = await fw.upload(ADMIN, image(protocol), "new.bgfw")
        assert info.family == protocol and info.blocks == 47
        progress: list[int] = []
        rec = await fw.flash(ADMIN, "sim", 1, info.id)
        job = fw.running[rec.id]

        paused: set[str | None] = set()

        async def watch() -> None:
            async for r in job.updates():
                progress.append(r.blocks_done)
                paused.add(ctx.store.view.pack("sim", 1).paused)  # type: ignore[union-attr]

        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch())
            done = await finished(fw, rec.id)
        assert done.state is JobState.DONE, done.detail
        assert done.old_version == old and old != NEW_VERSION[protocol]
        assert done.detail == f"upgraded from {old!r} to {NEW_VERSION[protocol]!r}"
        assert sim.pack(1).bootloader.version == NEW_VERSION[protocol]
        assert sim.pack(2).bootloader.version == old  # the other pack is untouched
        assert progress == sorted(progress) and progress[-1] == 47
        assert spy.bootloader_messages(protocol) >= 47 + 3
        assert spy.polls_during_upgrade(protocol, 1) <= 1  # at most a poll already under way
        assert f"firmware upgrade (job {rec.id})" in paused  # operators see why the pack is silent
        assert ctx.pollers["sim"].paused() == {}  # polled again after the job
        assert ctx.store.view.pack("sim", 1).paused is None  # type: ignore[union-attr]
        ident = await ctx.driver_for(("sim", 1)).read_identity(ctx.buses["sim"], 1)  # type: ignore[union-attr]
        assert ident.version == NEW_VERSION[protocol]
        assert ctx.store.view.pack("sim", 1).identity.version == NEW_VERSION[protocol]  # type: ignore[union-attr]
        assert ("firmware.upload", "ok") in audit_actions(fw)
        assert ("firmware.flash", "started") in audit_actions(fw)
        assert ("firmware.result", "ok") in audit_actions(fw)
        saved = json.loads((tmp_path / "firmware" / "jobs" / f"{rec.id}.json").read_text())
        assert saved["state"] == "done" and saved["in_bootloader"] is False


async def test_a_pack_that_goes_silent_leaves_a_resumable_job(tmp_path: Path) -> None:
    sim = make_sim("tianpower")
    async with context(sim, tmp_path, block_retries=1) as ctx:
        fw = FirmwareService.from_context(ctx)
        info = await fw.upload(ADMIN, image("tianpower", payload=BIG_PAYLOAD))
        rec = await fw.flash(ADMIN, "sim", 1, info.id)
        await wait_for(lambda: fw.job(rec.id).blocks_done >= 10, 10.0, "10 blocks")
        sim.set_online(1, False)
        stopped = await finished(fw, rec.id)
        assert stopped.state is JobState.INTERRUPTED
        assert "stopped answering" in stopped.detail and "left in its bootloader" in stopped.detail
        assert sim.pack(1).bootloader.mode is bl.Mode.BOOTLOADER
        assert fw.status()["packs_in_bootloader"] == ["sim/1"]
        have = len(sim.pack(1).bootloader.received) // bl.BLOCK_SIZE
        assert have >= 10

        sim.set_online(1, True)
        # the pack sits in its bootloader: not "online" for the poller, yet the job may resume
        resumed = await fw.resume(ADMIN, rec.id)
        assert resumed.state is JobState.RUNNING
        done = await finished(fw, rec.id)
        assert done.state is JobState.DONE, done.detail
        assert done.resumed_from_block == have and done.attempts == 2
        assert sim.pack(1).bootloader.version == NEW_VERSION["tianpower"]
        assert fw.status()["packs_in_bootloader"] == []
        assert ("firmware.result", "interrupted") in audit_actions(fw)
        assert ("firmware.resume", "started") in audit_actions(fw)


async def test_a_pack_left_in_its_bootloader_can_start_over_with_another_image(tmp_path: Path) -> None:
    sim = make_sim("tianpower")
    async with context(sim, tmp_path, block_retries=1) as ctx:
        fw = FirmwareService.from_context(ctx)
        first = await fw.upload(ADMIN, image("tianpower", payload=BIG_PAYLOAD))
        rec = await fw.flash(ADMIN, "sim", 1, first.id)
        await wait_for(lambda: fw.job(rec.id).blocks_done >= 10, 10.0, "10 blocks")
        sim.set_online(1, False)
        assert (await finished(fw, rec.id)).state is JobState.INTERRUPTED
        sim.set_online(1, True)
        # the application does not run in the bootloader: the poller loses the pack
        await wait_for(lambda: not ctx.store.view.pack("sim", 1).online, 10.0, "pack 1 not online")  # type: ignore[union-attr]
        assert fw.left_in_bootloader(("sim", 1)) is not None
        other = await fw.upload(
            ADMIN, image("tianpower", version="HY-PT003-B200LT55-V1.2.0", payload=BIG_PAYLOAD)
        )
        again = await fw.flash(ADMIN, "sim", 1, other.id)
        assert f"left in its bootloader by job {rec.id}" in again.history[-1]
        done = await finished(fw, again.id)
        assert done.state is JobState.DONE, done.detail
        assert done.resumed_from_block is None  # another image: the pack started over
        assert sim.pack(1).bootloader.version == "HY-PT003-B200LT55-V1.2.0"
        assert fw.status()["packs_in_bootloader"] == []


async def test_abort_then_resume(tmp_path: Path) -> None:
    sim = make_sim("pace")
    async with context(sim, tmp_path) as ctx:
        fw = FirmwareService.from_context(ctx)
        info = await fw.upload(ADMIN, image("pace", payload=BIG_PAYLOAD))
        rec = await fw.flash(ADMIN, "sim", 2, info.id)
        await wait_for(lambda: fw.job(rec.id).blocks_done >= 5, 10.0, "5 blocks")
        aborted = await fw.abort(ADMIN, rec.id)
        assert aborted.state is JobState.ABORTED and "aborted by the operator" in aborted.detail
        assert sim.pack(2).bootloader.mode is bl.Mode.BOOTLOADER
        finished_job = JobRecord.from_dict({**aborted.as_dict(), "id": "feedbeef0000", "state": "done"})
        fw.files.save(finished_job)
        with pytest.raises(Conflict, match="only interrupted, aborted or failed"):
            await fw.resume(ADMIN, "feedbeef0000")
        await fw.resume(ADMIN, rec.id)
        done = await finished(fw, rec.id)
        assert done.state is JobState.DONE and sim.pack(2).bootloader.version == NEW_VERSION["pace"]
        assert ("firmware.abort", "ok") in audit_actions(fw)


async def test_a_process_restart_mid_upgrade_resumes(tmp_path: Path) -> None:
    sim = make_sim("tianpower")
    async with context(sim, tmp_path) as ctx:
        fw = FirmwareService.from_context(ctx)
        info = await fw.upload(ADMIN, image("tianpower", payload=BIG_PAYLOAD))
        rec = await fw.flash(ADMIN, "sim", 1, info.id)
        await wait_for(lambda: fw.job(rec.id).blocks_done >= 16, 10.0, "16 blocks")
        for task in list(fw._tasks):  # the process goes away: its tasks end where they are
            task.cancel()
        await wait_for(lambda: not fw._tasks, 5.0, "tasks cancelled")
        # as a killed process would leave it: the job file still says "running"
        left = JobRecord.from_dict({**fw.files.load(rec.id).as_dict(), "state": "running"})  # type: ignore[union-attr]
        fw.files.save(left)

        fresh = FirmwareService.from_context(ctx)  # the restarted gateway
        recovered = fresh.recover()
        assert [r.id for r in recovered] == [rec.id]
        assert recovered[0].state is JobState.INTERRUPTED and "gateway stopped" in recovered[0].detail
        assert fresh.status()["packs_in_bootloader"] == ["sim/1"]
        await fresh.resume(ADMIN, rec.id)
        done = await finished(fresh, rec.id)
        assert done.state is JobState.DONE, done.detail
        assert done.resumed_from_block is not None and done.resumed_from_block >= 16
        assert sim.pack(1).bootloader.version == NEW_VERSION["tianpower"]


async def test_corrupt_and_wrong_images_are_refused_before_the_pack_is_touched(tmp_path: Path) -> None:
    sim = make_sim("tianpower")
    async with context(sim, tmp_path) as ctx:
        spy = BusSpy(ctx)
        fw = FirmwareService.from_context(ctx)
        good = image("tianpower")
        corrupt = bytearray(good)
        corrupt[200] ^= 0xFF
        with pytest.raises(Invalid, match="CRC32 mismatch"):
            await fw.upload(ADMIN, bytes(corrupt))
        with pytest.raises(Invalid, match="header CRC"):
            await fw.upload(ADMIN, good[:10] + b"X" + good[11:])
        with pytest.raises(Invalid, match="payload is"):
            await fw.upload(ADMIN, good[:-1])
        with pytest.raises(Invalid, match="not a bms-gateway firmware image"):
            await fw.upload(ADMIN, b"MZ" + bytes(100))
        assert fw.images.list() == []

        wrong_model = await fw.upload(ADMIN, image("tianpower", target="HY-PT009-OTHER"))
        with pytest.raises(Invalid, match="targets model 'HY-PT009-OTHER'"):
            await fw.flash(ADMIN, "sim", 1, wrong_model.id)
        wrong_family = await fw.upload(ADMIN, image("pace", target="P16S100A", version="P16S100A-V9"))
        with pytest.raises(Invalid, match="image is for pace packs"):
            await fw.flash(ADMIN, "sim", 1, wrong_family.id)
        # a stored image damaged on disk is refused too
        ok = await fw.upload(ADMIN, good)
        path = fw.images.dir / f"{ok.id}.bgfw"
        path.write_bytes(path.read_bytes()[:-5] + b"\0\0\0\0\0")
        with pytest.raises(Invalid, match="damaged"):
            await fw.flash(ADMIN, "sim", 1, ok.id)
        assert spy.bootloader_messages("tianpower") == 0
        assert sim.pack(1).bootloader.mode is bl.Mode.APPLICATION and sim.pack(1).bootloader.header is None
        refusals = [a for a in audit_actions(fw) if a[1] == "refused"]
        assert len(refusals) == 7


async def test_preflight_refusals_say_why(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=3)
    async with context(sim, tmp_path, min_soc_pct=60.0, max_current_a=2.0) as ctx:
        spy = BusSpy(ctx)
        fw = FirmwareService.from_context(ctx)
        info = await fw.upload(ADMIN, image("tianpower"))
        # pack 2 (SOC 50.7 %) is below the 60 % minimum
        with pytest.raises(Conflict, match=r"SOC is 50\.7 %, below the 60\.0 % minimum"):
            await fw.flash(ADMIN, "sim", 2, info.id)
        sim.set_current(1, 20.0)
        await wait_for(lambda: ctx.store.view.pack("sim", 1).telemetry.current_a == 20.0, 5.0, "current")  # type: ignore[union-attr]
        with pytest.raises(Conflict, match=r"\|current\| is 20\.00 A, above the 2\.00 A"):
            await fw.flash(ADMIN, "sim", 1, info.id)
        sim.set_current(1, 0.0)
        sim.short_circuit(1)
        await wait_for(lambda: bool(ctx.store.view.pack("sim", 1).telemetry.protections), 5.0, "protection")  # type: ignore[union-attr]
        with pytest.raises(Conflict, match="protection active: Short_Circuit_Prot"):
            await fw.flash(ADMIN, "sim", 1, info.id)
        sim.set_online(3, False)
        await wait_for(lambda: not ctx.store.view.pack("sim", 3).online, 10.0, "pack 3 offline")  # type: ignore[union-attr]
        with pytest.raises(Conflict, match="pack sim/3 is not online"):
            await fw.flash(ADMIN, "sim", 3, info.id)
        assert spy.bootloader_messages("tianpower") == 0

    # another upgrade on the same bus
    sim2 = make_sim("tianpower", packs=2)
    async with context(sim2, tmp_path / "b") as ctx2:
        fw2 = FirmwareService.from_context(ctx2)
        info2 = await fw2.upload(ADMIN, image("tianpower"))
        first = await fw2.flash(ADMIN, "sim", 1, info2.id)
        with pytest.raises(Conflict, match=f"another upgrade is running on bus sim \\(job {first.id}"):
            await fw2.flash(ADMIN, "sim", 2, info2.id)
        assert (await finished(fw2, first.id)).state is JobState.DONE


async def test_real_packs_are_not_supported_and_roles_apply(tmp_path: Path) -> None:
    sim = make_sim("pace")
    async with sim_context(sim, tmp_path) as ctx:  # bus "sim" is a configured bus, not listed
        spy = BusSpy(ctx)
        fw = FirmwareService.from_context(ctx)
        info = await fw.upload(ADMIN, image("pace"))
        with pytest.raises(
            Conflict, match="not supported for pace packs on bus sim: the vendor's upgrade protocol"
        ):
            await fw.flash(ADMIN, "sim", 1, info.id)
        with pytest.raises(Forbidden, match="needs the admin role"):
            await fw.flash(Who(Role.OPERATOR), "sim", 1, info.id)
        with pytest.raises(Forbidden):
            await fw.upload(Who(Role.VIEWER), image("pace"))
        assert spy.bootloader_messages("pace") == 0
        assert audit_actions(fw).count(("firmware.flash", "refused")) == 2
