"""End to end: the whole gateway (simulator -> RS485 bus owner -> poller -> model -> policy -> CAN).

The gateway runs on its built-in simulator with `[can]` on python-can's virtual interface; a
second virtual bus plays the inverter. Frames must reflect the simulated packs; when the packs stop
answering, stop frames with alarm bits appear within the stale window, and frames never stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import can
import pytest

from gateway.app.config import Config, ConfigError, parse_config
from gateway.app.context import AppContext
from gateway.app.wiring import build_context, build_services, run_app
from gateway.core.policy.decisions import DecisionStore

pytestmark = pytest.mark.e2e

STALE_S = 3.0


def config(channel: str, state_dir: Path | None = None) -> Config:
    return Config.model_validate(
        {
            **({"state_dir": str(state_dir)} if state_dir is not None else {}),
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"listen": "127.0.0.1:0"},  # not the fixed default port 5020, which may be taken
            "simulator": {"enabled": True, "packs": 2, "profile": "idle"},
            "can": {"enabled": True, "interface": "virtual", "channel": channel, "protocol": "pylon"},
            "policy": {"stale_after_s": STALE_S, "evaluate_interval_s": 0.5},
        }
    )


def test_wiring_registers_policy_and_can() -> None:
    ctx = build_context(config("wiring"))
    names = [s.name for s in build_services(ctx)]
    assert "policy" in names and "can" in names and names[-1] == "http"
    assert isinstance(ctx.decisions, DecisionStore)
    assert ctx.can.protocol.name == "pylon"
    with pytest.raises(ConfigError, match=r"can\.protocol: .*unknown inverter CAN protocol 'nope'"):
        parse_config({"simulator": {"enabled": True}, "can": {"enabled": True, "protocol": "nope"}}, env={})


async def test_frames_follow_the_simulator_and_stop_when_it_goes_silent(tmp_path: Path) -> None:
    channel = f"e2e-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    seen: list[AppContext] = []
    ready = asyncio.Event()

    def on_ready(c: AppContext) -> None:
        seen.append(c)
        ready.set()

    peer = can.Bus(interface="virtual", channel=channel)
    app = asyncio.ensure_future(
        run_app(config(channel, tmp_path), install_signals=False, stop=stop, on_all_ready=on_ready)
    )
    frames: list[tuple[float, can.Message]] = []

    async def collect(seconds: float, until: object = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = await asyncio.to_thread(peer.recv, 0.05)
            if msg is not None:
                frames.append((time.monotonic(), msg))
                if callable(until) and until():
                    return

    try:
        async with asyncio.timeout(60):
            await ready.wait()
            ctx = seen[0]
            sim = ctx.simulator
            assert sim is not None
            decisions: DecisionStore = ctx.decisions
            fresh = await decisions.wait_for(lambda d: d.has_data and d.bank.packs_online == 2)
            await collect(2.5)  # frames from before both packs were read drain first; keep the last ones
            soc_frames = [m for _, m in frames if m.arbitration_id == 0x355]
            assert soc_frames, "CAN frames flow once the first decision exists"
            truth_soc = sum(sim.truth(a).soc_pct * sim.truth(a).full_capacity_ah for a in (1, 2)) / sum(
                sim.truth(a).full_capacity_ah for a in (1, 2)
            )
            assert soc_frames[-1].data[0] == pytest.approx(truth_soc, abs=1.0)
            voltage = [m for _, m in frames if m.arbitration_id == 0x356][-1]
            truth_v = (sim.truth(1).voltage_v + sim.truth(2).voltage_v) / 2
            assert int.from_bytes(voltage.data[0:2], "little", signed=True) / 100 == pytest.approx(
                truth_v, abs=0.05
            )
            assert [m for _, m in frames if m.arbitration_id == 0x35C][-1].data[0] == 0xC0
            assert not fresh.stale

            silent_at = time.monotonic()
            for a in (1, 2):
                sim.set_online(a, False)  # the packs stop answering on RS485
            frames.clear()
            await collect(
                STALE_S + 6.0,
                until=lambda: any(m.arbitration_id == 0x35C and m.data[0] == 0 for _, m in frames),
            )
            stops = [t for t, m in frames if m.arbitration_id == 0x35C and m.data[0] == 0]
            assert stops, "stop frames appear"
            # last good read <= 2 s (poll interval) before silence, then the stale limit, one cycle, slack
            assert stops[0] - silent_at < STALE_S + 4.0
            alarm = [m for _, m in frames if m.arbitration_id == 0x359][-1].data
            assert alarm[1] & 0x08 and alarm[3] & 0x08
            count = len(frames)
            await collect(  # the same 2.5 s bound, done as soon as it holds (and a 0x351 came after)
                2.5,
                until=lambda: (
                    len(frames) > count + 6 and any(m.arbitration_id == 0x351 for _, m in frames[count:])
                ),
            )
            assert len(frames) > count + 6, "frames never stop"
            later = [m for _, m in frames[count:] if m.arbitration_id == 0x351][-1].data
            assert later[2:6] == bytes(4)  # CCL = DCL = 0 A
            assert int.from_bytes(later[0:2], "little") > 400  # CVL stays at the last voltage, never 0
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await app
        peer.shutdown()
