"""History downloads against the simulator through the gateway's bus owner: complete, resumable
after a kill, stored once, exported identically to CSV and XLSX, and polite to polling."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import openpyxl
import pytest

from gateway.ops.history.download import DownloadJob, Progress
from gateway.ops.history.store import HistoryDB, RecordQuery, record_rows
from gateway.south.drivers.base import Priority
from tests.support import REPO
from tests.support.records_support import bus_owner, driver_for, make_sim, served_bus, wait_for

RECORDS = 3000
REPO = REPO


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["tianpower", "pace"])
async def test_thousands_of_records_download_completely_and_once(protocol: str, tmp_path: Path) -> None:
    sim = make_sim(protocol, packs=1, history_records=RECORDS)
    total = sim.pack(1).history.count
    assert total > RECORDS - 1
    driver = driver_for(protocol)
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver) as (owner, _port):
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-A")
            seen: list[Progress] = []

            async def watch() -> None:
                async for p in job.updates():
                    seen.append(p)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(watch())
                result = await job.run()
            assert result.state == "done", result.detail
            assert result.stored == total and result.duplicates == 0
            assert result.next_index == total
            # the family reports its count (Tianpower) or not (PACE: read until end-of-data)
            assert result.count == (total if protocol == "tianpower" else None)
            running = [p for p in seen if p.state == "running" and p.read]
            assert running and running[-1].rate_per_s is not None and running[-1].rate_per_s > 0
            if protocol == "tianpower":
                assert any(p.eta_s is not None for p in running)
            assert [p.next_index for p in seen] == sorted(p.next_index for p in seen)  # progress only grows

            # the same records downloaded again are stored once
            again = await DownloadJob(db, owner, driver, "sim", 1, "SN-A", resume=False).run()
            assert again.state == "done" and again.stored == 0 and again.duplicates == total, again
            truth = list(sim.pack(1).history.records)  # before the simulator records its exit
        assert db.count() == total == len(truth)
        rows = db.query(RecordQuery(pack_serial="SN-A"))
        assert len({r.raw for r in rows}) == total
        if protocol == "tianpower":
            from simulator.tianpower import event_of_code

            assert sorted(event_of_code(r.event_code) for r in rows) == sorted(r.event for r in truth)
        voltages = sorted(round(r.voltage_v, 3) for r in rows)
        assert voltages == sorted(round(r.voltage_mv / 1000, 3) for r in truth)
    finally:
        db.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gateway.south.bus import BusOwner
    from gateway.south.drivers.tianpower import TianpowerDriver
    from gateway.ops.history.download import DownloadJob
    from gateway.ops.history.store import HistoryDB
    from gateway.south.transport import SerialSettings

    async def main(port: int, db_path: str) -> None:
        driver = TianpowerDriver()
        owner = BusOwner.from_url("sim", f"socket://127.0.0.1:{port}", SerialSettings(), driver.new_decoder,
                                  gap_s=0.003, response_timeout_s=0.5, retries=1, flush_after_connect_s=0.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(owner.run(lambda: None))
            while not owner.connected:
                await asyncio.sleep(0.01)
            db = HistoryDB(Path(db_path))
            await DownloadJob(db, owner, driver, "sim", 1, "SN-K", batch_records=16).run()
            print("finished", flush=True)
            sys.exit(3)

    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
    """
)


@pytest.mark.e2e
async def test_killed_halfway_resumes_and_stores_each_record_once(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=1, history_records=RECORDS)
    total = sim.pack(1).history.count
    path = tmp_path / "h.sqlite"
    db = HistoryDB(path)
    try:
        async with sim.serve_tcp("127.0.0.1", 0) as server:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                str(server.port),
                str(path),
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            try:

                def far_enough() -> bool:
                    job = db.job("sim/1")
                    return job is not None and job.next_index >= 600

                await wait_for(far_enough, 20.0, "the child's download to pass record 600")
                child.send_signal(signal.SIGKILL)  # no clean-up: the process just ends
            finally:
                out, _ = await child.communicate()
            assert child.returncode == -signal.SIGKILL, out
            killed = db.job("sim/1")
            assert killed is not None and killed.state == "running"  # it never got to say otherwise
            assert 600 <= killed.next_index < total
            assert db.count() == killed.next_index  # every committed position has its records

            # the restarted gateway: interrupted jobs are marked stopped, then resumed
            db2 = HistoryDB(path)
            try:
                assert db2.mark_interrupted() == 1
                assert db2.job("sim/1").state == "stopped"  # type: ignore[union-attr]
                fresh_driver = driver_for("tianpower")
                async with bus_owner(server.port, fresh_driver) as owner:
                    result = await DownloadJob(db2, owner, fresh_driver, "sim", 1, "SN-K").run()
            finally:
                db2.close()
        assert result.state == "done", result.detail
        assert result.resumed_from == killed.next_index
        assert result.read == total - killed.next_index  # only the rest was read into the job
        assert db.count() == total
        assert len({r.raw for r in db.query(RecordQuery())}) == total
    finally:
        db.close()


@pytest.mark.e2e
async def test_stop_then_resume_in_process(tmp_path: Path) -> None:
    sim = make_sim("pace", packs=1, history_records=1000)
    total = sim.pack(1).history.count
    driver = driver_for("pace")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver) as (owner, _port):
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-P", batch_records=10)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(job.run())
                await wait_for(lambda: job.progress.read >= 200, 10.0, "200 records")
                job.stop()
            stopped = task.result()
            assert stopped.state == "stopped" and stopped.detail == "stopped by request"
            assert db.job("sim/1").state == "stopped"  # type: ignore[union-attr]
            assert db.count() == stopped.next_index < total
            resumed = await DownloadJob(db, owner, driver, "sim", 1, "SN-P").run()
        assert resumed.resumed_from == stopped.next_index  # PACE seeks by index: nothing re-read
        assert resumed.read == total - stopped.next_index and resumed.duplicates == 0
        assert db.count() == total
    finally:
        db.close()


@pytest.mark.e2e
async def test_a_silent_pack_fails_the_job_resumably(tmp_path: Path) -> None:
    sim = make_sim("pace", packs=1, history_records=500)
    driver = driver_for("pace")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver, timeout_s=0.05, retries=0) as (owner, _port):
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-S", batch_records=10, record_retries=1)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(job.run())
                await wait_for(lambda: job.progress.read >= 100, 10.0, "100 records")
                sim.set_online(1, False)
            failed = task.result()
            assert failed.state == "failed"
            assert f"resume continues at record {failed.next_index}" in failed.detail
            assert db.count() == failed.next_index
            sim.set_online(1, True)
            done = await DownloadJob(db, owner, driver, "sim", 1, "SN-S").run()
            truth = sim.pack(1).history.count
        # also the records the pack stored meanwhile (they shift the newest-first indexes)
        assert done.state == "done" and db.count() == truth
    finally:
        db.close()


@pytest.mark.e2e
async def test_polling_of_other_packs_continues_during_a_download(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=2, history_records=2000)
    driver = driver_for("tianpower")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver) as (owner, _port):
            job = DownloadJob(db, owner, driver, "sim", 1, "SN-1")
            polls: list[int] = []
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(job.run())
                await wait_for(lambda: job.progress.read >= 50, 10.0, "download started")
                for _ in range(20):
                    await driver.read_realtime(owner, 2, time.time())  # Priority.POLL
                    polls.append(job.progress.read)
            assert task.result().state == "done"
        # every poll of pack 2 was answered while the download of pack 1 was still running
        assert len(polls) == 20 and polls[-1] < task.result().read
        assert Priority.BACKGROUND > Priority.POLL
    finally:
        db.close()


@pytest.mark.e2e
async def test_csv_and_xlsx_exports_hold_the_same_rows(tmp_path: Path) -> None:
    from gateway.ops.history.export import render

    sim = make_sim("tianpower", packs=1, history_records=300)
    driver = driver_for("tianpower")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver) as (owner, _port):
            await DownloadJob(db, owner, driver, "sim", 1, "SN-X").run()
        records = db.query(RecordQuery(pack_serial="SN-X"))
        header, rows = record_rows(records)
        csv_rows = list(csv.reader(io.StringIO(render("csv", header, rows).decode("utf-8"))))
        (tmp_path / "x.xlsx").write_bytes(render("xlsx", header, rows))
        wb = openpyxl.load_workbook(tmp_path / "x.xlsx", read_only=True)
        xlsx_rows = [list(r) for r in wb.active.iter_rows(values_only=True)]  # type: ignore[union-attr]
        wb.close()
        assert len(csv_rows) == len(xlsx_rows) == len(records) + 1
        assert csv_rows[0] == xlsx_rows[0] == header
        assert "CELL16_V" in header and "event" in header
        for c, x in zip(csv_rows[1:], xlsx_rows[1:], strict=True):
            assert [_cell(v) for v in c] == [_cell(v) for v in x]
        assert {r[header.index("event")] for r in csv_rows[1:]} >= {"Timing record"}
    finally:
        db.close()


def _cell(v: object) -> object:
    """A cell as a comparable value: numbers as floats (XLSX keeps 3.0 as 3), empty as None."""
    if v is None or v == "":
        return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v


def test_queries_by_pack_time_and_event(tmp_path: Path) -> None:
    from gateway.south.drivers.base import HistoryRecord

    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        db.start_job(pack="b/1", pack_serial="S1", family="tianpower", next_index=0, count=3, now=0.0)

        def rec(i: int, at: float, event: str) -> HistoryRecord:
            return HistoryRecord(
                i, at, event, 16, (3.3,), (25.0,), 1.0, 52.0, 50.0, bytes([i, int(at) % 256])
            )

        new, dup = db.store_batch(
            pack="b/1",
            pack_serial="S1",
            family="tianpower",
            records=[
                rec(0, 300.0, "Timing record"),
                rec(1, 200.0, "Start system"),
                rec(2, 100.0, "Timing record"),
            ],
            next_index=3,
            count=3,
        )
        assert (new, dup) == (3, 0)
        assert db.store_batch(
            pack="b/1",
            pack_serial="S1",
            family="tianpower",
            records=[rec(1, 200.0, "Start system")],
            next_index=3,
            count=3,
        ) == (0, 1)
        assert db.count(RecordQuery(event="timing record")) == 2
        assert [r.recorded_at for r in db.query(RecordQuery(since=150.0, until=300.0))] == [200.0]
        assert db.count(RecordQuery(pack_serial="other")) == 0
        assert db.events() == [("Start system", 1), ("Timing record", 2)]
        job = db.job("b/1")
        assert job is not None and job.stored == 3 and job.duplicates == 1 and job.next_index == 3
    finally:
        db.close()


@pytest.mark.e2e
async def test_replies_lost_on_the_wire_do_not_lose_records(tmp_path: Path) -> None:
    from simulator import FaultSpec

    # A dropped answer makes the bus owner resend READ_RECORDS: the Tianpower pack has already moved
    # its cursor, so that record is skipped in this pass and the stream ends before the count.
    sim = make_sim("tianpower", packs=1, history_records=1000, faults=FaultSpec(drop_prob=0.01))
    driver = driver_for("tianpower")
    db = HistoryDB(tmp_path / "h.sqlite")
    try:
        async with served_bus(sim, driver, timeout_s=0.05, retries=3) as (owner, _port):
            result = await DownloadJob(db, owner, driver, "sim", 1, "SN-L").run()
            truth = list(sim.pack(1).history.records)
        assert sim.fault_counters["dropped"] > 0
        assert result.state == "done", result.detail
        assert result.read > len(truth)  # the stream was read again
        assert db.count() == len(truth)
        stored = sorted(round(r.voltage_v, 3) for r in db.query(RecordQuery()))
        assert stored == sorted(round(r.voltage_mv / 1000, 3) for r in truth)
    finally:
        db.close()
