"""Resuming a Tianpower history download (issue 20, failure 1).

A Tianpower pack only streams its records in order (a count read rewinds; no seek), so resuming at
record N means re-reading N records. The job used to wrap "read record N" in one per-record timeout
(2 s by default), so every resume past a few records failed with `no record after 4 attempts` and
added nothing. Now reaching record N is the driver's plan (`history_reach`: method, exchanges,
records skipped) carried out one exchange at a time (`history_advance`), each under the
per-exchange timeout. The simulator answers each exchange 10 ms late here and the per-exchange
timeout is 1.5 s, so reaching record 400 (~4 s of exchanges) fails under one timeout and succeeds
one exchange at a time: the test shows the property, not a speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.ops.history.download import DownloadJob, Progress
from gateway.ops.history.store import HistoryDB, RecordQuery
from gateway.south.drivers.base import HistoryReach
from gateway.south.drivers.tianpower import TianpowerDriver
from simulator import FaultSpec
from tests.support import REPO
from tests.support.records_support import bus_owner, make_sim, served_bus, wait_for

RECORDS = 600
SLOW = FaultSpec(extra_delay_s=0.01)  # each answer 10 ms late: 400 take far longer than one timeout
TIMEOUT_S = 1.5  # the per-exchange timeout (the bus answers within 0.5 s, one retry)
BUS_TIMEOUT_S = 0.5


async def _stop_at(job: DownloadJob, index: int) -> Progress:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(job.run())
        await wait_for(
            lambda: job.progress.next_index >= index or job.progress.finished, 60.0, f"record {index}"
        )
        job.stop()
    return task.result()


@pytest.mark.e2e  # the simulator served on TCP (served_bus), as the other records tests
async def test_stop_and_resume_at_50_200_and_400_of_600(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=1, history_records=RECORDS, faults=SLOW)
    total = sim.pack(1).history.count
    driver = TianpowerDriver()
    db = HistoryDB(tmp_path / "h.sqlite")

    def job() -> DownloadJob:
        return DownloadJob(
            db, owner, driver, "sim", 1, "SN-R", batch_records=1, record_timeout_s=TIMEOUT_S, record_retries=1
        )

    try:
        async with served_bus(sim, driver, timeout_s=BUS_TIMEOUT_S) as (owner, _port):
            first = await _stop_at(job(), 50)
            assert first.state == "stopped" and first.next_index >= 50
            resume_points = [first.next_index]
            for stop_at in (200, 400):
                j = job()
                p = await _stop_at(j, stop_at)
                assert p.state == "stopped", p.detail
                assert p.resumed_from == resume_points[-1]  # nothing before the resume point read again
                assert j.reach is not None and j.reach.method == "stream"
                assert j.reach.skipped == resume_points[-1] and j.reach_exchanges == resume_points[-1]
                resume_points.append(p.next_index)
            last = job()
            done = await last.run()
            truth = sorted(round(r.voltage_mv / 1000, 3) for r in sim.pack(1).history.records)
        assert done.state == "done", done.detail
        assert done.resumed_from == resume_points[-1] >= 400
        assert last.reach is not None and last.reach.skipped == resume_points[-1]
        assert done.read == total - resume_points[-1]
        assert db.count() == total  # every record once
        assert sorted(round(r.voltage_v, 3) for r in db.query(RecordQuery())) == truth
    finally:
        db.close()


@pytest.mark.e2e  # the simulator served on TCP (served_bus), as the other records tests
async def test_one_timeout_for_the_whole_way_would_fail(tmp_path: Path) -> None:
    """The old way (read record 400 in one call under one timeout) on the same wire: it cannot
    succeed, which is what every resume ran into."""
    sim = make_sim("tianpower", packs=1, history_records=RECORDS, faults=SLOW)
    driver = TianpowerDriver()
    async with served_bus(sim, driver, timeout_s=BUS_TIMEOUT_S) as (owner, _port):
        await driver.history_count(owner, 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(TIMEOUT_S):
                await driver.read_history(owner, 1, 400)
        fresh = TianpowerDriver()
        assert fresh.history_reach(1, 400) == HistoryReach(400, "rewind", 401, 400)


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gateway.ops.history.download import DownloadJob
    from gateway.ops.history.store import HistoryDB
    from gateway.south.bus import BusOwner
    from gateway.south.drivers.tianpower import TianpowerDriver
    from gateway.io.transport import SerialSettings

    async def main(port: int, db_path: str) -> None:
        driver = TianpowerDriver()
        owner = BusOwner.from_url("sim", f"socket://127.0.0.1:{port}", SerialSettings(), driver.new_decoder,
                                  gap_s=0.0, response_timeout_s=0.5, retries=1, flush_after_connect_s=0.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(owner.run(lambda: None))
            while not owner.connected:
                await asyncio.sleep(0.01)
            db = HistoryDB(Path(db_path))
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-K", batch_records=8, record_timeout_s=1.5)
            await job.run()
            print("finished", flush=True)
            sys.exit(3)

    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
    """
)


@pytest.mark.e2e
async def test_a_process_killed_mid_download_resumes_past_hundreds_of_records(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=1, history_records=RECORDS, faults=SLOW)
    total = sim.pack(1).history.count
    path = tmp_path / "h.sqlite"
    db = HistoryDB(path)
    try:
        async with sim.serve_tcp("127.0.0.1", 0) as server:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                str(server.port),
                str(path),
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
            )
            try:

                def far_enough() -> bool:
                    job = db.job("sim/1")
                    return job is not None and job.next_index >= 300

                await wait_for(far_enough, 60.0, "the child's download to pass record 300")
                child.send_signal(signal.SIGKILL)
            finally:
                out, _ = await child.communicate()
            assert child.returncode == -signal.SIGKILL, out
            killed = db.job("sim/1")
            assert killed is not None and 300 <= killed.next_index < total

            db2 = HistoryDB(path)
            try:
                assert db2.mark_interrupted() == 1
                driver = TianpowerDriver()  # a new process: no stream cursor, the plan rewinds
                assert driver.history_reach(1, killed.next_index).method == "rewind"
                async with bus_owner(server.port, driver, timeout_s=BUS_TIMEOUT_S) as owner:
                    job = DownloadJob(db2, owner, driver, "sim", 1, "SN-K", record_timeout_s=TIMEOUT_S)
                    result = await job.run()
            finally:
                db2.close()
        assert result.state == "done", result.detail
        assert result.resumed_from == killed.next_index
        assert job.reach is not None and job.reach.skipped == killed.next_index
        assert result.read == total - killed.next_index
        assert db.count() == total
        assert len({r.raw for r in db.query(RecordQuery())}) == total
    finally:
        db.close()
