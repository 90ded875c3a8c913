"""A download ends by itself while the pack keeps recording (issue 17, defect 9): after its pass the
job reads the records stored meanwhile from the newest end, but only a bounded number, and says how
many newer records it left for the next download (before: a pack recording as fast as it was read
kept the job running for up to 100,000 reads)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from gateway.ops.history.download import CATCH_UP_MAX, DownloadJob
from gateway.ops.history.store import HistoryDB
from tests.support.records_support import driver_for, make_sim, served_bus

INITIAL = 60


async def test_a_pack_that_keeps_recording_does_not_keep_the_download_running(tmp_path: Path) -> None:
    sim = make_sim("pace", packs=1, history_records=INITIAL)
    history = sim.pack(1).history
    total = history.count
    template = history.records[-1]
    driver = driver_for("pace")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver) as (owner, _port):
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-G")

            async def keep_recording() -> None:
                # once the pass has read every record present at the start, the pack stores a new
                # record for every one the gateway reads (and more): the newest end never settles
                async for progress in job.updates():
                    if progress.next_index >= total:
                        break
                for n in range(1_000_000):
                    history.add(dataclasses.replace(template, at_epoch_s=template.at_epoch_s + 60 * (n + 1)))
                    await asyncio.sleep(0)

            adder = asyncio.create_task(keep_recording())
            try:
                result = await asyncio.wait_for(job.run(), 120)
            finally:
                adder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await adder
        assert result.state == "done", result.detail
        assert result.read <= total + CATCH_UP_MAX + 1
        assert "stored newer records while this download ran" in result.detail
        assert "the next download gets them" in result.detail
    finally:
        db.close()
