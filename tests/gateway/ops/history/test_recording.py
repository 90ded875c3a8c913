"""Real-time recording: honest gaps when a pack goes offline, retention by age and size, the
multi-pack comparison, exports, measured cost, and polling that does not wait for the database."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from pathlib import Path

import openpyxl
import pytest

from gateway.core.model import Availability
from gateway.ops.history.export import render
from gateway.ops.history.recording import VALUE_FIELDS, Recorder, RecordingDB, Sample, compare, samples_table
from tests.support.records_support import make_sim, sim_context, wait_for


@pytest.mark.e2e
async def test_a_pack_going_offline_is_recorded_as_a_gap(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=2)
    async with sim_context(sim, tmp_path, timeout_s=0.1) as ctx:
        rec = Recorder.from_context(ctx)
        store = ctx.store
        for _ in range(3):
            await rec.tick()
            await asyncio.sleep(0.01)
        sim.set_online(2, False)
        await wait_for(
            lambda: store.view.pack("sim", 2).availability is not Availability.ONLINE, 10.0, "pack 2 stale"
        )  # type: ignore[union-attr]
        for _ in range(2):
            await rec.tick()
        await wait_for(
            lambda: store.view.pack("sim", 2).availability is Availability.OFFLINE, 10.0, "pack 2 offline"
        )  # type: ignore[union-attr]
        await rec.tick()
        sim.set_online(2, True)
        await wait_for(lambda: store.view.pack("sim", 2).online, 10.0, "pack 2 back")  # type: ignore[union-attr]
        await rec.tick()
        truth_voltage = sim.truth(2).voltage_v
        samples = rec.db.query(packs=[("sim", 2)])
    states = [s.availability for s in samples]
    # (on a loaded machine the pack may already be offline when the "stale" samples are taken)
    assert states[:3] == ["online"] * 3 and set(states[3:5]) <= {"stale", "offline"}
    assert states[5:] == ["offline", "online"]
    for s in samples:
        if s.availability == "online":
            assert s.measured_at is not None and s.measured_at <= s.at
            assert s.values["voltage_v"] is not None and abs(s.values["voltage_v"] - truth_voltage) < 0.05
            assert s.cells_v and len(s.cells_v) == 16
        else:  # no invented values: nothing but the availability
            assert s.measured_at is None and s.cells_v is None and s.temperatures_c is None
            assert all(s.values[f] is None for f in VALUE_FIELDS)
    # pack 1 kept being recorded with values through pack 2's gap
    assert all(s.availability == "online" for s in rec.db.query(packs=[("sim", 1)]))
    assert rec.stats.samples == 7 and rec.stats.rows == 14
    stats = rec.stats.as_dict()
    assert stats["sample_cost_s_avg"] > 0 and stats["write_cost_s_avg"] > 0  # measured per snapshot

    # exports: the gap is empty cells in both formats, the same rows in both
    header, rows = samples_table(rec.db.query())
    csv_rows = list(csv.reader(io.StringIO(render("csv", header, rows).decode())))
    (tmp_path / "r.xlsx").write_bytes(render("xlsx", header, rows, sheet="recording"))
    wb = openpyxl.load_workbook(tmp_path / "r.xlsx", read_only=True)
    # (a spreadsheet row ends at its last non-empty cell: pad to the header's width)
    xlsx_rows = [list(r) + [None] * (len(header) - len(r)) for r in wb.active.iter_rows(values_only=True)]  # type: ignore[union-attr]
    wb.close()
    assert len(csv_rows) == len(xlsx_rows) == 15
    for c, x in zip(csv_rows, xlsx_rows, strict=True):
        assert [_cell(v) for v in c] == [_cell(v) for v in x]
    at = header.index("availability")
    gap = [r for r in csv_rows[1:] if r[at] in ("stale", "offline")]
    assert len(gap) == 3
    assert all(r[header.index("voltage_v")] == "" and r[header.index("CELL01_V")] == "" for r in gap)
    xgap = [r for r in xlsx_rows[1:] if r[at] in ("stale", "offline")]
    assert len(xgap) == 3 and all(r[header.index("voltage_v")] is None for r in xgap)

    # the Multi Packs comparison: one row per sample time, None where a pack had no data
    cmp = compare(rec.db.query(), "soc_pct")
    assert cmp["packs"] == ["sim/1", "sim/2"] and len(cmp["rows"]) == 7
    assert [r["values"][1] is None for r in cmp["rows"]] == [False] * 3 + [True] * 3 + [False]
    rec.db.close()


def _cell(v: object) -> object:
    """A cell as a comparable value: numbers as floats, empty as None."""
    if v is None or v == "":
        return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v


def _sample(at: float, address: int = 1, volts: float | None = 52.0) -> Sample:
    values = dict.fromkeys(VALUE_FIELDS)
    values["voltage_v"] = volts
    return Sample(at, "b", address, "online", at, values, (3.3,) * 16, (25.0,) * 6, (), ())


def test_retention_by_age_and_by_size(tmp_path: Path) -> None:
    db = RecordingDB(tmp_path / "rec.sqlite")
    try:
        db.insert([_sample(float(t)) for t in range(100)])
        assert db.enforce_retention(now=150.0, max_age_s=100.0, max_bytes=1 << 30) == 50
        assert min(s.at for s in db.query()) == 50.0
        db.insert([_sample(1000.0 + t) for t in range(5000)])
        before = db.used_bytes()
        limit = before // 4
        deleted = db.enforce_retention(now=7000.0, max_age_s=1e9, max_bytes=limit)
        assert deleted > 0 and db.used_bytes() <= limit
        left = db.query()
        assert left and max(s.at for s in left) == 5999.0  # the newest are kept, the oldest went first
        assert min(s.at for s in left) > 1000.0
    finally:
        db.close()


@pytest.mark.e2e
async def test_polling_goes_on_while_a_write_is_blocked(tmp_path: Path) -> None:
    sim = make_sim("pace", packs=2)
    async with sim_context(sim, tmp_path) as ctx:
        rec = Recorder.from_context(ctx)
        gate = threading.Event()
        inner = rec.db.insert

        def slow_insert(samples: list[Sample]) -> int:
            gate.wait(10.0)
            return inner(samples)

        rec.db.insert = slow_insert  # type: ignore[method-assign]
        async with asyncio.TaskGroup() as tg:
            tick = tg.create_task(rec.tick())
            version = ctx.store.view.version
            # the poller keeps publishing new snapshots while the recorder's write is stuck
            await wait_for(lambda: ctx.store.view.version >= version + 4, 10.0, "new snapshots")
            assert not tick.done()
            gate.set()
        assert tick.result() == 2
        rec.db.close()


@pytest.mark.e2e
async def test_the_recording_service_runs_at_its_interval(tmp_path: Path) -> None:
    sim = make_sim("tianpower", packs=1)
    async with sim_context(sim, tmp_path, config={"recording": {"interval_s": 0.1}}) as ctx:
        rec = Recorder.from_context(ctx)
        assert rec.interval_s == 0.1
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(rec.run(ready.set))
            await wait_for(lambda: rec.stats.samples >= 3, 10.0, "three samples")
            task.cancel()
        assert ready.is_set() and rec.db.count() >= 3
        assert (tmp_path / "recording.sqlite").exists()
        rec.db.close()
