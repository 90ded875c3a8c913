"""History download speed: 5,000 records from a simulated Tianpower pack at 9600 baud.

The simulator paces its answers like the wire (10 bits per byte at the baud rate, plus the pack's
turnaround before it answers); the gateway's bus owner, driver and download job do the rest exactly
as in production (records committed in batches to a SQLite file in a temporary folder).

Reported:
- records per second of the whole download (count read, every record, the final check of the
  newest records);
- the wire-time minimum: every byte the download put on and read from the bus (bus owner counters)
  at 10 bits per byte — no pause, no turnaround, no processing;
- the vendor tool's pace (a fixed 400 ms per record, manual section 4.6) and our speedup over it;
- the real-time recording's cost per snapshot of 15 online packs (event loop and writer thread).

Last line: `RESULT history_wire_efficiency=<minimum / measured>`.

Usage: .venv/bin/python bench/history_download.py [--records 5000] [--baud 9600]
       [--turnaround 0.005] [--gap <default: [[bus]] request_gap_s's default>]
Loopback only; bounded by the record count (about 7 minutes for 5,000 records at 9600 baud).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOOL_S_PER_RECORD = 0.4


async def bench(records: int, baud: int, turnaround_s: float, gap_s: float) -> float:
    from gateway.ops.history.download import DownloadJob
    from gateway.ops.history.store import HistoryDB
    from gateway.south.bus import BusOwner
    from gateway.south.drivers.tianpower import TianpowerDriver
    from gateway.south.transport import SerialSettings
    from simulator import Simulator, SimulatorOptions

    sim = Simulator(
        SimulatorOptions(
            protocol="tianpower",
            packs=1,
            pacing=True,
            baud=baud,
            turnaround_s=turnaround_s,
            history_records=records - 1,  # plus the "Start system" record of the simulator's start
        )
    )
    driver = TianpowerDriver()
    with tempfile.TemporaryDirectory() as tmp:
        db = HistoryDB(Path(tmp) / "history.sqlite")
        async with sim.serve_tcp("127.0.0.1", 0) as server:
            owner = BusOwner.from_url(
                "bench",
                f"socket://127.0.0.1:{server.port}",
                SerialSettings(baudrate=baud),
                driver.new_decoder,
                gap_s=gap_s,
                response_timeout_s=1.0,
                retries=2,
                flush_after_connect_s=0.0,
            )
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(owner.run(lambda: None))
                for _ in range(500):  # bounded: 5 s
                    if owner.connected:
                        break
                    await asyncio.sleep(0.01)
                sent0, recv0 = owner.counters.bytes_sent, owner.counters.bytes_received
                t0 = time.perf_counter()
                job = DownloadJob(db, owner, driver, "bench", 1, "BENCH")
                result = await job.run()
                elapsed = time.perf_counter() - t0
                wire_bytes = owner.counters.bytes_sent - sent0 + owner.counters.bytes_received - recv0
                requests = owner.counters.requests
                task.cancel()
        stored = db.count()
        db.close()
    if result.state != "done" or stored != records:
        raise SystemExit(f"download incomplete: {result.state} {result.detail}; {stored} of {records} stored")
    wire_min_s = wire_bytes * 10.0 / baud
    tool_s = records * TOOL_S_PER_RECORD
    print(
        f"records: {records} (Tianpower, {baud} baud, pack turnaround {turnaround_s * 1000:.1f} ms, "
        f"bus gap {gap_s * 1000:.1f} ms)"
    )
    print(f"requests: {requests}; bytes on the wire: {wire_bytes} ({wire_bytes / records:.1f} per record)")
    per_record_ms = elapsed / records * 1000
    print(
        f"measured: {elapsed:.1f} s = {records / elapsed:.1f} records/s ({per_record_ms:.1f} ms per record)"
    )
    print(f"wire-time minimum: {wire_min_s:.1f} s = {records / wire_min_s:.1f} records/s")
    print(
        f"vendor tool at a fixed 400 ms per record: {tool_s:.0f} s; speedup over it: {tool_s / elapsed:.2f}x"
    )
    return wire_min_s / elapsed


async def recording_cost(snapshots: int = 300) -> tuple[float, float]:
    """(event-loop seconds, writer-thread seconds) per snapshot of 15 online packs."""
    from gateway.core.model import Availability, ModelStore, PackSnapshot, Telemetry
    from gateway.ops.history.recording import Recorder, RecordingDB

    keys = [("bench", a) for a in range(1, 16)]
    store = ModelStore(keys)
    now = time.time()
    tel = Telemetry.build(
        measured_at=now,
        cell_voltages_v=[3.3] * 16,
        temperatures=[],
        voltage_v=52.8,
        current_a=-10.0,
        soc_pct=60.0,
        soh_pct=100.0,
        full_capacity_ah=100.0,
        remaining_capacity_ah=60.0,
        nominal_capacity_ah=100.0,
        cycles=1,
        charge_mos_on=True,
        discharge_mos_on=True,
        heater_on=False,
        fan_on=None,
        balancing_cells=(),
        protections=[],
        alarms=[],
        faults=[],
        states=[],
    )
    store.publish(*(PackSnapshot(b, a, Availability.ONLINE, tel) for b, a in keys))
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(lambda: store.view, RecordingDB(Path(tmp) / "rec.sqlite"))
        for _ in range(snapshots):
            await rec.tick()
        rec.db.close()
    stats = rec.stats.as_dict()
    return stats["sample_cost_s_avg"], stats["write_cost_s_avg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--turnaround", type=float, default=0.005, help="pack answer latency (s)")
    from gateway.app.config import BusConfig

    default_gap = BusConfig.model_fields["request_gap_s"].default
    ap.add_argument(
        "--gap",
        type=float,
        default=default_gap,
        help=f"bus owner inter-frame gap (s); default: the configuration default ({default_gap})",
    )
    args = ap.parse_args()
    if args.records < 2:
        raise SystemExit("--records must be at least 2")
    efficiency = asyncio.run(bench(args.records, args.baud, args.turnaround, args.gap))
    loop_s, write_s = asyncio.run(recording_cost())
    print(
        f"recording, 15 packs per snapshot: {loop_s * 1e6:.0f} us on the event loop, "
        f"{write_s * 1e3:.2f} ms in the writer thread"
    )
    print(f"RESULT history_wire_efficiency={efficiency:.3f}")


if __name__ == "__main__":
    main()
