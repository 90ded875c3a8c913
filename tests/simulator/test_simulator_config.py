"""The `[simulator]` section reaches the built-in simulator: addresses, wire pacing, faults, state file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.app.config import ConfigError, parse_config
from gateway.app.wiring import SimulatorService, build_context
from simulator import OfflineSchedule


def test_every_simulator_key_reaches_the_simulator(tmp_path: Path) -> None:
    config = parse_config(
        {
            "state_dir": str(tmp_path / "var"),
            "simulator": {
                "protocol": "pace",
                "packs": 2,
                "first_address": 4,
                "seed": 9,
                "profile": "idle",
                "baud": 2400,
                "pacing": False,
                "faults": "drop=0.25,echo,offline=5:60/10",
                "state_file": "sim-state.json",
            },
        }
    )
    ctx = build_context(config, tmp_path / "gateway.toml")
    sim = ctx.simulator
    assert sim is not None
    opts = sim.options
    assert (opts.protocol, opts.packs, opts.first_address, opts.seed, opts.profile) == (
        "pace",
        2,
        4,
        9,
        "idle",
    )
    assert (opts.baud, opts.pacing) == (2400, False)
    assert opts.faults.drop_prob == 0.25 and opts.faults.echo
    assert opts.faults.offline == {5: OfflineSchedule(60.0, 10.0)}
    assert Path(str(opts.state_file)) == tmp_path / "var" / "sim-state.json"
    assert sorted(sim.packs) == [4, 5]
    assert ctx.pollers["sim"].cfg.addresses == [4, 5]  # the gateway polls the simulated addresses
    assert sorted(ctx.store.view.packs) == [("sim", 4), ("sim", 5)]


def test_slow_baud_gives_the_sim_bus_a_longer_timeout() -> None:
    fast = build_context(parse_config({"simulator": {"baud": 115200}}))
    slow = build_context(parse_config({"simulator": {"baud": 1200}}))
    unpaced = build_context(parse_config({"simulator": {"baud": 1200, "pacing": False}}))
    timeouts = [c.pollers["sim"].cfg.response_timeout_s for c in (fast, slow, unpaced)]
    # a 400-byte answer at 1200 Bd needs 3.3 s of wire time: the timeout covers it
    assert timeouts[1] > 400 * 10 / 1200 > timeouts[0] and timeouts[2] == 1.0


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"faults": "corrupt=2"}, "simulator.faults"),
        ({"faults": "bogus"}, "'bogus'"),
        ({"first_address": 14, "packs": 3}, "at most 15"),
        ({"first_address": 16}, "simulator.first_address"),
        ({"baud": 300}, "simulator.baud"),
        ({"pacing": "sometimes"}, "simulator.pacing"),
    ],
)
def test_bad_simulator_settings_name_the_key(section: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"simulator": section})
    assert needle in str(info.value)


def test_foreign_state_file_stops_the_start_with_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"format": 1, "protocol": "pace", "packs": {}}))
    config = parse_config({"state_dir": str(tmp_path), "simulator": {"state_file": "state.json"}})
    with pytest.raises(ConfigError, match=r"simulator: .*not 'tianpower'"):
        build_context(config)


async def test_state_file_is_written_when_the_simulator_stops(tmp_path: Path) -> None:
    config = parse_config(
        {"state_dir": str(tmp_path), "simulator": {"state_file": "sim.json", "pacing": False, "packs": 1}}
    )
    ctx = build_context(config)
    service = ctx.extras["simulator_service"]
    assert isinstance(service, SimulatorService)
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5.0)
        assert ctx.simulator is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    saved = json.loads((tmp_path / "sim.json").read_text())
    assert saved["protocol"] == "tianpower" and list(saved["packs"]) == ["1"]
