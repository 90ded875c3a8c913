"""End to end: the real `bms-gateway run` process polling simulated packs over TCP.

1. `bms-gateway simulate` (a subprocess) + `bms-gateway run`: the HTTP snapshots equal the
   simulator's ground truth (an identical, deterministic in-process simulator) within the wire
   resolution.
2. `bms-gateway simulate --faults ...` (a subprocess) + `bms-gateway run`: with corruption, drops
   and truncation on the wire no corrupted value ever appears, every pack keeps updating, and the
   simulator's fault counts (printed at exit) cover what the gateway counted.
3. The in-process simulator served on TCP (run-time scenario changes), with corruption, drops and
   truncation injected and a pack taken offline: no corrupted value ever appears, the pack turns
   stale then offline and recovers by itself, the other packs keep updating, and the gateway's
   counters match the faults exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import FaultSpec, PackTruth, Simulator, SimulatorOptions
from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ROOT = REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gateway_config(tmp_path: Path, port: int, addresses: list[int]) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
log_level = "info"
state_dir = "{tmp_path / "state"}"

[http]
listen = "127.0.0.1:0"

[modbus]
enabled = false

[[bus]]
name = "b1"
url = "socket://127.0.0.1:{port}"
protocol = "tianpower"
addresses = {addresses}
request_gap_s = 0.02
response_timeout_s = 0.4
retries = 1
realtime_interval_s = 0.2
stale_after_s = 2.0
offline_after_s = 4.0
""",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def process(
    *args: str, ready_prefix: str, env: dict[str, str] | None = None, output: list[str] | None = None
) -> AsyncIterator[str]:
    """Start `python -m gateway.cli.main ARGS`, yield the first stdout line starting with `ready_prefix`;
    `output` receives every stdout line once the process has stopped."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"{args[0]} exited early: {lines}")
                line = raw.decode().strip()
                lines.append(line)
                if line.startswith(ready_prefix):
                    break
        yield line[len(ready_prefix) :].strip()
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        if output is not None:
            output.extend(lines + out.decode().splitlines())
    assert proc.returncode == 0, f"{args[0]} exit {proc.returncode}: {err.decode()[-2000:]}"
    if args[0] == "run":
        assert b"bms-gateway stopped" in out


def assert_matches_truth(pack: dict[str, Any], truth: PackTruth) -> None:
    t = pack["telemetry"]
    assert t is not None, pack
    where = f"{pack['bus']}/{pack['address']}"
    assert t["cell_voltages_v"] == pytest.approx(list(truth.cell_voltages_v), abs=5e-4), where
    assert t["voltage_v"] == pytest.approx(truth.voltage_v, abs=5e-3), where
    assert t["current_a"] == pytest.approx(truth.current_a, abs=5e-3), where
    assert t["soc_pct"] == pytest.approx(truth.soc_pct, abs=5e-3), where
    assert t["soh_pct"] == pytest.approx(truth.soh_pct, abs=5e-3), where
    assert t["full_capacity_ah"] == pytest.approx(truth.full_capacity_ah, abs=5e-3), where
    assert t["remaining_capacity_ah"] == pytest.approx(truth.remaining_capacity_ah, abs=5e-3), where
    assert t["cycles"] == truth.cycles, where
    cells = [x["value_c"] for x in t["temperatures"] if x["role"] == "cell"]
    assert cells == pytest.approx(list(truth.cell_temperatures_c), abs=0.51), where
    assert t["charge_mos_on"] == truth.charge_mos_on and t["discharge_mos_on"] == truth.discharge_mos_on


async def wait_for(client: httpx.AsyncClient, cond: Any, limit_s: float = 20.0) -> list[dict[str, Any]]:
    """Poll /api/packs until `cond(packs)` holds (bounded)."""
    packs: list[dict[str, Any]] = []
    for _ in range(int(limit_s / 0.05)):
        packs = (await client.get("/api/packs")).json()
        if cond(packs):
            return packs
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached within {limit_s} s: {[p['availability'] for p in packs]}")


def by_addr(packs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {p["address"]: p for p in packs}


async def test_run_against_simulate_process_matches_truth(tmp_path: Path) -> None:
    port = free_port()
    sim_args = ["--protocol", "tianpower", "--packs", "3", "--profile", "idle", "--seed", "7"]
    async with process(
        "simulate", *sim_args, "--listen", f"127.0.0.1:{port}", "--no-pacing", ready_prefix="listen"
    ):
        cfg = gateway_config(tmp_path, port, [1, 2, 3])
        async with process("run", "--config", str(cfg), ready_prefix="http:") as url:
            twin = Simulator(SimulatorOptions(protocol="tianpower", packs=3, profile="idle", seed=7))
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                packs = await wait_for(
                    client,
                    lambda ps: all(p["availability"] == "online" and p["identity"]["serial"] for p in ps),
                )
                for p in packs:
                    assert (p["bus"], p["availability"]) == ("b1", "online")
                    assert_matches_truth(p, twin.truth(p["address"]))
                    assert p["identity"]["serial"] == twin.truth(p["address"]).identity.serial
                system = (await client.get("/api/system")).json()
                assert system["bank"]["packs_online"] == 3
                assert system["gateway"]["buses"]["b1"]["connected"] is True


async def test_simulate_process_with_wire_faults_never_shows_a_corrupted_value(tmp_path: Path) -> None:
    port = free_port()
    sim_args = ["--protocol", "tianpower", "--packs", "3", "--profile", "idle", "--seed", "5"]
    faults = "corrupt=0.002,drop=0.03,truncate=0.03"
    sim_out: list[str] = []
    async with process(
        "simulate", *sim_args, "--listen", f"127.0.0.1:{port}", "--no-pacing", "--turnaround", "0.002",
        "--faults", faults, ready_prefix="listen", output=sim_out,
    ):  # fmt: skip
        cfg = gateway_config(tmp_path, port, [1, 2, 3])
        async with process("run", "--config", str(cfg), ready_prefix="http:") as url:
            twin = Simulator(SimulatorOptions(protocol="tianpower", packs=3, profile="idle", seed=5))
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                seen: dict[int, set[float]] = {1: set(), 2: set(), 3: set()}
                bus: dict[str, Any] = {}
                for _ in range(400):  # until every pack updated 3 times and damage was seen (≤ 20 s)
                    for p in (await client.get("/api/packs")).json():
                        if p["telemetry"] is not None:
                            assert_matches_truth(p, twin.truth(p["address"]))  # never a damaged value
                            seen[p["address"]].add(p["telemetry"]["measured_at"])
                    bus = (await client.get("/api/system")).json()["gateway"]["buses"]["b1"]["counters"]
                    damaged = bus["checksum_errors"] > 0 and bus["timeouts"] > 0
                    if damaged and all(len(v) >= 3 for v in seen.values()):
                        break
                    await asyncio.sleep(0.05)
                assert all(len(v) >= 3 for v in seen.values()), seen
    counts = {
        key: int(value)
        for key, _, value in (
            line.removeprefix("fault ").partition(": ") for line in sim_out if line.startswith("fault ")
        )
    }
    lost = sum(counts.get(k, 0) for k in ("dropped", "truncated", "corrupted_responses"))
    assert counts.get("corrupted_responses", 0) > 0 and bus["checksum_errors"] > 0  # damaged frames were seen
    # Every lost answer costs the gateway a timeout. The simulator kept answering after the gateway's
    # counters were read, so its count is an upper bound here (test 3 checks the exact accounting).
    assert 0 < bus["timeouts"] - bus["late_frames"] - bus["unexpected_frames"] <= lost


async def test_faults_offline_pack_and_counters(tmp_path: Path) -> None:
    sim = Simulator(
        SimulatorOptions(
            protocol="tianpower", packs=3, profile="idle", seed=3, pacing=False, turnaround_s=0.002
        )
    )
    async with sim.serve_tcp("127.0.0.1", 0) as server:
        cfg = gateway_config(tmp_path, server.port, [1, 2, 3])
        async with (
            process("run", "--config", str(cfg), ready_prefix="http:") as url,
            httpx.AsyncClient(base_url=url, timeout=5) as client,
        ):
            packs = await wait_for(client, lambda ps: all(p["availability"] == "online" for p in ps))
            for p in packs:
                assert_matches_truth(p, sim.truth(p["address"]))

            # corruption, drops and truncation: values are never wrong, only sometimes older
            sim.faults = FaultSpec(corrupt_byte_prob=0.001, drop_prob=0.05, truncate_prob=0.03)
            seen_updates: dict[int, set[float]] = {1: set(), 2: set(), 3: set()}

            def enough() -> bool:  # every pack updated, and both kinds of damage happened
                c = sim.fault_counters
                updated = all(len(v) >= 3 for v in seen_updates.values())
                return updated and c["corrupted_responses"] > 0 and c["dropped"] > 0

            for i in range(400):  # at least 3 s, at most about 20 s (the faults are random)
                for p in (await client.get("/api/packs")).json():
                    assert_matches_truth(p, sim.truth(p["address"]))
                    seen_updates[p["address"]].add(p["telemetry"]["measured_at"])
                if i >= 60 and enough():
                    break
                await asyncio.sleep(0.05)
            assert enough(), (seen_updates, sim.fault_counters)

            # pack 2 goes silent: stale, then offline; the others keep updating
            sim.faults = FaultSpec()  # (each poll of the silent pack now costs two timeouts)
            sim.set_online(2, False)
            await wait_for(client, lambda ps: by_addr(ps)[2]["availability"] == "stale", 10)
            before = {
                a: p["telemetry"]["measured_at"]
                for a, p in by_addr((await client.get("/api/packs")).json()).items()
            }
            packs = await wait_for(client, lambda ps: by_addr(ps)[2]["availability"] == "offline", 10)
            now = by_addr(packs)
            assert now[1]["availability"] == "online" and now[3]["availability"] == "online"
            assert (
                now[1]["telemetry"]["measured_at"] > before[1]
                and now[3]["telemetry"]["measured_at"] > before[3]
            )
            assert now[2]["telemetry"]["measured_at"] == before[2]  # last good values kept, not updated
            bank = (await client.get("/api/system")).json()["bank"]
            assert bank["packs_online"] == 2 and bank["packs_offline"] == 1

            # it comes back by itself
            sim.set_online(2, True)
            await wait_for(client, lambda ps: all(p["availability"] == "online" for p in ps), 10)

            # quiesce, then the gateway's counters must account for every injected fault
            await asyncio.sleep(0.8)
            status = (await client.get("/api/system")).json()["gateway"]["buses"]["b1"]["counters"]
            faults = sim.fault_counters
            failed_attempts = (
                faults["dropped"]
                + faults["truncated"]
                + faults["corrupted_responses"]
                + faults["offline_ignored"]
            )
            slack = status["late_frames"] + status["unexpected_address"] + status["unexpected_frames"]
            assert failed_attempts <= status["timeouts"] <= failed_attempts + slack
            assert status["checksum_errors"] >= faults["corrupted_responses"] > 0
            assert abs(status["frames_sent"] - (faults["responses"] + faults["offline_ignored"])) <= 1
            # every attempt either got its answer or timed out (one request may be in flight)
            assert abs(status["responses"] - (status["frames_sent"] - status["timeouts"])) <= 1
            pack2 = (await client.get("/api/packs/b1/2")).json()
            assert pack2["link"]["timeouts"] >= 2  # counted per pack too
