"""Hardware fault injection (`FaultSpec.hardware`, `--faults hw=…`): the named status flags of kind
"fault" reach the wire as the family's codec decodes them, only fault flags are accepted, and the
gateway carries them to `Telemetry.faults` and `bms_pack_fault` (run_app on the built-in simulator)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app.config import ConfigError, parse_config
from gateway.app.wiring import build_context
from protocol.bms.base import FlagKind
from protocol.bms.pace import commands as pc
from protocol.bms.pace import values as pv
from protocol.bms.pace.frame import parse_frame as pace_parse
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import parse_frame as tp_parse
from simulator import FaultSpec, Simulator, SimulatorOptions, parse_fault_spec
from tests.support.app_running import app_running


def _sim(protocol: str = "tianpower", hardware: dict[int, set[str]] | None = None, **kw: object) -> Simulator:
    spec = FaultSpec(hardware=MappingProxyType({a: frozenset(n) for a, n in (hardware or {}).items()}))
    opts = {"protocol": protocol, "packs": 2, "seed": 5, "pacing": False, "faults": spec, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


def test_hw_items_parse_repeat_and_merge() -> None:
    spec = parse_fault_spec("hw=3:NTC_Disconnected+CHG_MOS_Fault, hw=3:Hot_Failure,hw=4:NTC fault,drop=0.1")
    assert dict(spec.hardware) == {
        3: frozenset({"NTC_Disconnected", "CHG_MOS_Fault", "Hot_Failure"}),
        4: frozenset({"NTC fault"}),
    }
    assert spec.drop_prob == 0.1
    assert parse_fault_spec("drop=0.1").hardware == {}


@pytest.mark.parametrize("item", ["hw=3", "hw=3:", "hw=x:NTC_Disconnected", "hw=300:NTC_Disconnected", "hw"])
def test_bad_hw_items_name_the_item(item: str) -> None:
    with pytest.raises(ValueError, match=rf"--faults: cannot use {item!r}"):
        parse_fault_spec(item)


async def test_tianpower_realtime_carries_the_fault_flag_by_the_codec_table() -> None:
    sim = _sim(hardware={1: {"NTC_Disconnected", "CHG_MOS_Fault"}})
    for address, want in ((1, {"NTC_Disconnected", "CHG_MOS_Fault"}), (2, set())):
        req = m.ReadRequest(address, m.Cmd.REALTIME)
        rt = m.parse_response(tp_parse(await sim.handle(m.encode_request(req))), req)
        assert isinstance(rt, m.RealtimeData)
        assert set(rt.flag_names(FlagKind.FAULT)) == want
        faults = {f.name: f.kind for f in rt.active_flags() if f.name in want}
        assert faults == dict.fromkeys(want, FlagKind.FAULT)
        assert sim.wire_flags(address).faults == want
    # NTC_Disconnected is byte 1 bit 0, CHG_MOS_Fault byte 0 bit 5 of group 0x06 (the codec's table)
    assert sim.fault_counters["hardware_fault_responses"] == 1


@pytest.mark.parametrize(
    ("version", "name"), [(0x25, "NTC fault"), (0x25, "Terminals reversed"), (0x20, "Cell 3 fault")]
)
async def test_pace_status_carries_the_fault_flag(version: int, name: str) -> None:
    sim = _sim("pace", hardware={2: {name}}, pace_version=version)
    for address in sim.addresses:
        frame = pace_parse(await sim.handle(pc.status_request(address, version=version)))
        assert frame.command == 0
        status = (
            pv.decode_status(frame.info).packs[0] if version == 0x25 else pv.decode_status_v20(frame.info)
        )
        flags = status.flags()
        assert flags.faults == ({name} if address == 2 else set())
        assert [f.kind for f in flags.items if f.name == name] == ([FlagKind.FAULT] if address == 2 else [])
    if version == 0x25:  # the bank answer of the master carries it in pack 2's block
        frame = pace_parse(await sim.handle(pc.status_request(1, bank=True)))
        blocks = pv.decode_status(frame.info, bank=True).packs
        assert [b.flags().faults for b in blocks] == [frozenset(), frozenset({name})]
    assert sim.fault_counters["hardware_fault_responses"] == (2 if version == 0x25 else 1)


@pytest.mark.parametrize(
    ("protocol", "bad"),
    [
        ("tianpower", "CHG_OT_Prot"),
        ("tianpower", "No_Such_Flag"),
        ("pace", "Cell OV protection"),
        ("pace", "NTC_Disconnected"),
    ],
)
def test_only_fault_flags_of_the_family_are_accepted(protocol: str, bad: str) -> None:
    valid = "NTC_Disconnected" if protocol == "tianpower" else "NTC fault"
    with pytest.raises(
        ValueError, match=rf"{bad!r} for pack 1 is not a fault flag of {protocol}; valid: .*{valid}"
    ):
        _sim(protocol, hardware={1: {bad}})
    sim = _sim(protocol)
    before = sim.faults
    with pytest.raises(ValueError, match="not a fault flag"):
        sim.faults = parse_fault_spec(f"drop=0.5,hw=1:{valid}+{bad}")
    assert sim.faults is before and sim.wire_flags(1).faults == set()  # nothing applied


def test_hardware_faults_are_set_and_cleared_at_run_time() -> None:
    sim = _sim()
    sim.faults = parse_fault_spec("hw=2:Vol_Line_Break")
    assert sim.wire_flags(2).faults == {"Vol_Line_Break"} and sim.truth(2).hardware_faults == {
        "Vol_Line_Break"
    }
    sim.faults = FaultSpec()
    assert sim.wire_flags(2).faults == set()


def test_a_bad_hardware_fault_in_the_simulator_configuration_is_refused(tmp_path: Path) -> None:
    # a protection flag is not a hardware fault: refused when the configuration is read (what
    # `bms-gateway config check` and the start both do), before anything is built
    with pytest.raises(ConfigError, match=r"simulator\.faults: hardware fault 'CELL_OV_Prot'"):
        parse_config({"state_dir": str(tmp_path), "simulator": {"faults": "hw=1:CELL_OV_Prot"}})
    config = parse_config({"state_dir": str(tmp_path), "simulator": {"faults": "hw=1:NTC_Disconnected"}})
    assert build_context(config, tmp_path / "gateway.toml").simulator is not None


def _fault_samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["pack"], s.labels["name"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "bms_pack_fault" and s.labels.get("bus") == "sim"
    }


async def _until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll (scrape) until the predicate holds; the polling is the point, there is no event to wait on."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if await predicate():
                return
            await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_gateway_shows_the_injected_fault_in_telemetry_and_metrics(tmp_path: Path) -> None:
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"enabled": False},
            "simulator": {"packs": 2, "pacing": False, "faults": "hw=1:NTC_Disconnected"},
        },
        env={},
    )
    async with app_running(config) as ctx:
        assert ctx.simulator is not None

        def faults(address: int) -> frozenset[str] | None:
            pack = ctx.store.view.packs.get(("sim", address))
            return None if pack is None or pack.telemetry is None else pack.telemetry.faults

        async with httpx.AsyncClient(base_url=ctx.endpoints["http"]) as http:
            samples: dict[tuple[str, str], float] = {}

            async def fault_reported() -> bool:
                nonlocal samples
                samples = _fault_samples((await http.get("/metrics")).text)
                return (
                    faults(1) is not None
                    and faults(2) is not None
                    and samples.get(("1", "NTC_Disconnected")) == 1
                )

            await _until(fault_reported)
            assert faults(1) == {"NTC_Disconnected"} and faults(2) == set()
            assert {k: v for k, v in samples.items() if v} == {("1", "NTC_Disconnected"): 1.0}

            ctx.simulator.faults = FaultSpec()  # repaired at run time: the flag goes back to 0

            async def fault_cleared() -> bool:
                nonlocal samples
                samples = _fault_samples((await http.get("/metrics")).text)
                return faults(1) == set() and samples.get(("1", "NTC_Disconnected")) == 0

            await _until(fault_cleared)


@pytest.mark.e2e
def test_the_simulate_command_refuses_a_flag_that_is_no_fault_as_a_person_sees_it() -> None:
    """`bms-gateway simulate --faults hw=1:CELL_OV_Prot` typed at a shell: exit 2, one line that
    names the flag, the family and the valid fault flags; nothing starts listening."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("bms-gateway")), "simulate", "--listen", "127.0.0.1:0",
         "--faults", "hw=1:CELL_OV_Prot"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out
    assert out.stdout == ""
    line = out.stderr.strip()
    assert line.startswith("bms-gateway simulate: hardware fault 'CELL_OV_Prot' for pack 1")
    assert "tianpower" in line and "NTC_Disconnected" in line and "CHG_MOS_Fault" in line
