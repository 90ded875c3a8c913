"""Long jobs on one pack are exclusive (issue 17, defect 11): a firmware upgrade may not start while
a history download of the same pack runs (the download failed at record 257), nor the other way
round; the 409 names the running job, and pre-flight reports it. Other packs are not blocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ops.firmware.manager import FirmwareService
from gateway.ops.firmware.records import JobState
from gateway.ops.history.errors import Conflict
from gateway.ops.history.service import HistoryService
from gateway.ops.history.store import HistoryDB
from gateway.ops.security.auth import Role
from protocol.bms import bootloader as bl
from tests.support.records_support import Who, make_sim, sim_context, wait_for

ADMIN = Who(Role.ADMIN, "t-admin")
PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(6000)) * 5  # 235 blocks


@pytest.mark.e2e  # the simulator served on TCP (served_bus), as the other records tests
async def test_a_flash_waits_for_a_download_of_the_same_pack_and_the_other_way_round(tmp_path: Path) -> None:
    sim = make_sim("tianpower", history_records=4000, pacing=True, baud=115200, turnaround_s=0.002)
    cfg = {"firmware": {"bootloader_buses": ["sim"], "min_soc_pct": 10.0}}
    async with sim_context(sim, tmp_path, config=cfg, timeout_s=0.2) as ctx:
        history = HistoryService(ctx, HistoryDB(tmp_path / "h.sqlite"), None)
        fw = FirmwareService.from_context(ctx)
        try:
            await history.pull(ADMIN, bus="sim", address=1)
            await wait_for(lambda: history.jobs["sim/1"].progress.read > 0, 10, "download under way")
            image = bl.build_image("tianpower", "HY-PT003-B200LT55", "HY-PT003-B200LT55-V1.1.0", PAYLOAD)
            info = await fw.upload(ADMIN, image, "new.bgfw")
            assert any("history download of sim/1 is running" in r for r in fw.preflight(("sim", 1)))
            with pytest.raises(Conflict, match=r"history download of sim/1 is running"):
                await fw.flash(ADMIN, "sim", 1, info.id)
            assert not history.jobs["sim/1"].progress.finished  # the download goes on
            # another pack is not blocked: its upgrade starts, and then a download of it is refused
            rec = await fw.flash(ADMIN, "sim", 2, info.id)
            with pytest.raises(Conflict, match=rf"firmware upgrade \(job {rec.id}\) is running on sim/2"):
                await history.pull(ADMIN, bus="sim", address=2)
            await wait_for(lambda: fw.job(rec.id).state is not JobState.RUNNING, 60, "upgrade end")
            await fw.settled(rec.id)
            assert fw.job(rec.id).state is JobState.DONE, fw.job(rec.id).detail
        finally:
            history.stop("sim")
            await wait_for(lambda: history.jobs["sim/1"].progress.finished, 10, "download stopped")
            history.db.close()
