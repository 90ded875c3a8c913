"""Simulator behaviour in-process: faults and their counters, sleep and wake, anti-theft, determinism,
state persistence, profiles, and the bootloader carried in both families' framing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bms import bootloader as bl
from protocol.bms.pace import commands as pc
from protocol.bms.pace.frame import parse_frame as pace_parse
from protocol.bms.registry import boot
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import parse_frame as tp_parse
from protocol.errors import RemoteProtocolError
from simulator import FaultSpec, OfflineSchedule, Simulator, SimulatorOptions, parse_fault_spec

REALTIME_1 = m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME))


def _sim(protocol: str = "tianpower", **kw: object) -> Simulator:
    opts = {"protocol": protocol, "packs": 2, "seed": 21, "profile": "idle", "start_epoch_s": 1.78e9, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


def _valid(family: str, raw: bytes) -> bool:
    try:
        (tp_parse if family == "tianpower" else pace_parse)(raw)
    except RemoteProtocolError:
        return False
    return True


@pytest.mark.parametrize(
    ("family", "request_bytes"),
    [("tianpower", REALTIME_1), ("pace", pc.analog_request(1))],
)
async def test_every_corrupted_response_fails_its_check(family: str, request_bytes: bytes) -> None:
    sim = _sim(family, faults=FaultSpec(corrupt_byte_prob=0.004))
    n = 300
    rejected = 0
    for _ in range(n):
        raw = await sim.handle(request_bytes)
        assert raw  # corruption never drops: same length, damaged content
        rejected += not _valid(family, raw)
    counters = sim.fault_counters
    assert counters["corrupted_responses"] > 10
    assert rejected == counters["corrupted_responses"]
    assert counters["responses"] == n


async def test_drop_truncate_garbage_echo_are_counted() -> None:
    sim = _sim(
        faults=FaultSpec(drop_prob=0.3, truncate_prob=0.3, garbage_prob=0.3, echo=True, extra_delay_s=0.01)
    )
    full = len(await Simulator(SimulatorOptions(packs=2, seed=21)).handle(REALTIME_1))
    outcomes = {"silent": 0, "short": 0, "full": 0}
    for _ in range(200):
        raw = await sim.handle(REALTIME_1)
        assert raw.startswith(REALTIME_1)  # the echo comes first
        rest = raw[len(REALTIME_1) :]
        start = rest.find(b"\x7e\x01\x01")
        if not rest:
            outcomes["silent"] += 1
        elif start >= 0 and len(rest) - start == full:
            outcomes["full"] += 1
        else:
            outcomes["short"] += 1
    c = sim.fault_counters
    assert c["echoed"] == 200 and c["delayed"] == 200
    assert c["dropped"] == outcomes["silent"] > 0
    assert c["truncated"] > 0 and c["garbage_inserted"] > 0
    assert outcomes["full"] + outcomes["short"] == 200 - c["dropped"]


async def test_each_damaged_answer_is_counted_in_one_category_only() -> None:
    sim = _sim(faults=FaultSpec(corrupt_byte_prob=0.05, drop_prob=0.2, truncate_prob=0.3))
    full = len(await Simulator(SimulatorOptions(packs=2, seed=21)).handle(REALTIME_1))
    intact = 0
    for _ in range(200):
        raw = await sim.handle(REALTIME_1)
        intact += len(raw) == full and _valid("tianpower", raw)
    c = sim.fault_counters
    assert c["responses"] == 200 and min(c["dropped"], c["truncated"], c["corrupted_responses"]) > 0
    # dropped + truncated + corrupted is exactly the number of answers a master lost
    assert c["dropped"] + c["truncated"] + c["corrupted_responses"] == 200 - intact


async def test_record_deletion_empties_the_history_on_the_wire() -> None:
    sim = _sim(history_records=4)

    async def ask(address: int, sub: m.StorageSub) -> m.Response:
        return m.parse_response(tp_parse(await sim.handle(m.encode_request(m.StorageRead(address, sub)))))

    before = await ask(1, m.StorageSub.READ_RECORD_COUNT)
    assert isinstance(before, m.RecordCount) and before.count >= 4
    sim.clear_history(1)  # the vendor tool's "Delete Record" (no documented wire command)
    assert await ask(1, m.StorageSub.READ_RECORD_COUNT) == m.RecordCount(0)
    assert isinstance(await ask(1, m.StorageSub.READ_RECORDS), m.HistoryEnd)  # straight to end of data
    assert await ask(2, m.StorageSub.READ_RECORD_COUNT) == before  # only pack 1 was cleared


async def test_offline_schedule_slow_pack_and_set_online() -> None:
    sim = _sim(faults=FaultSpec(offline={1: OfflineSchedule(period_s=60.0, offline_s=10.0)}, slow={2: 0.3}))
    assert await sim.handle(REALTIME_1) == b""  # t=0: inside the offline window
    sim.advance(10.5)
    assert await sim.handle(REALTIME_1) != b""
    sim.advance(50.0)  # t=60.5: offline again
    assert await sim.handle(REALTIME_1) == b""
    assert sim.fault_counters["offline_ignored"] == 2
    delivery = sim.deliver(m.encode_request(m.ReadRequest(2, m.Cmd.REALTIME)))
    assert delivery.response and delivery.extra_delay_s == pytest.approx(0.3)
    sim.set_online(2, False)
    assert await sim.handle(m.encode_request(m.ReadRequest(2, m.Cmd.REALTIME))) == b""


def test_fault_spec_syntax() -> None:
    spec = parse_fault_spec("corrupt=0.01,drop=0.05,truncate=0.02,garbage=0.1,delay=0.05,jitter=0.02,echo,"
                            "offline=2:60/10+3:30/5,slow=4:0.5,sleep=5+6")  # fmt: skip
    assert spec.corrupt_byte_prob == 0.01 and spec.drop_prob == 0.05 and spec.truncate_prob == 0.02
    assert spec.garbage_prob == 0.1 and spec.extra_delay_s == 0.05 and spec.jitter_s == 0.02 and spec.echo
    assert spec.offline[2] == OfflineSchedule(60.0, 10.0) and spec.offline[3] == OfflineSchedule(30.0, 5.0)
    assert spec.slow == {4: 0.5} and spec.sleeping == {5, 6}
    assert parse_fault_spec("") == FaultSpec()
    for bad in ("corrupt=1.5", "nonsense", "offline=2", "slow=x:1", "echo=1"):
        with pytest.raises(ValueError, match="--faults"):
            parse_fault_spec(bad)


async def test_forced_sleep_silence_and_wake_by_traffic() -> None:
    sim = _sim()
    clock = [100.0]
    sim.wall_time = lambda: clock[0]
    sim.set_current(1, 10.0)
    sim.advance(1.0)
    ack = m.parse_response(tp_parse(await sim.handle(m.encode_request(m.ForcedSleep(1)))))
    assert ack == m.Ack(m.Cmd.FORCED_SLEEP, 0x06)  # refused while charging (manual 4.5.3)
    sim.set_current(1, None)
    sim.advance(1.0)
    ack = m.parse_response(tp_parse(await sim.handle(m.encode_request(m.ForcedSleep(1)))))
    assert ack == m.Ack(m.Cmd.FORCED_SLEEP, 0)
    assert sim.truth(1).sleeping
    # A few requests with a long pause in between do not wake it.
    for _ in range(10):
        assert await sim.handle(REALTIME_1) == b""
        clock[0] += 0.2
    clock[0] += 5.0
    for _ in range(19):
        assert await sim.handle(REALTIME_1) == b""
        clock[0] += 0.2
    assert sim.truth(1).sleeping
    assert await sim.handle(REALTIME_1) == b""  # the 20th back-to-back request wakes it
    assert not sim.truth(1).sleeping
    assert await sim.handle(REALTIME_1) != b""
    assert sim.fault_counters["sleep_ignored"] == 30
    # A charger also wakes a sleeping pack; the sleeping fault puts packs to sleep.
    sim.faults = FaultSpec(sleeping=frozenset({2}))
    assert sim.truth(2).sleeping
    sim.set_current(2, 5.0)
    sim.advance(1.0)
    assert not sim.truth(2).sleeping


async def test_communication_anti_theft_locks_and_unlocks() -> None:
    sim = _sim()
    ack = m.parse_response(
        tp_parse(await sim.handle(m.encode_request(m.AntiTheftLock(1, m.AntiTheft.COMMUNICATION))))
    )
    assert ack == m.Ack(m.Cmd.ANTI_THEFT, 0)
    sim.advance(47 * 3600.0, max_step_s=600.0)
    assert not sim.truth(1).locked
    sim.advance(2 * 3600.0, max_step_s=600.0)  # 48 h without communication
    truth = sim.truth(1)
    assert truth.locked and not truth.discharge_mos_on and truth.charge_mos_on
    rt = m.parse_response(tp_parse(await sim.handle(REALTIME_1)))
    assert isinstance(rt, m.RealtimeData) and "Battery_Locked" in rt.flag_names()
    assert m.parse_response(tp_parse(await sim.handle(m.encode_request(m.Unlock(1))))) == m.Ack(
        m.Cmd.UNLOCK, 0
    )
    assert not sim.truth(1).locked and sim.truth(1).discharge_mos_on


async def test_same_seed_same_values_however_often_polled() -> None:
    a = _sim(seed=99, start_epoch_s=1.7e9)
    b = _sim(seed=99, start_epoch_s=1.7e9)
    c = _sim(seed=98, start_epoch_s=1.7e9)
    first = await a.handle(REALTIME_1)
    for _ in range(25):
        await a.handle(REALTIME_1)
    a.advance(600.0)
    assert await a.handle(REALTIME_1) == first == await b.handle(REALTIME_1)
    assert await c.handle(REALTIME_1) != first
    assert dataclasses.replace(a.truth(2), clock_epoch_s=0) == dataclasses.replace(
        b.truth(2), clock_epoch_s=0
    )


@pytest.mark.parametrize("profile", ["charge", "discharge", "cycle"])
def test_profiles_move_the_state(profile: str) -> None:
    sim = _sim(profile=profile)
    before = sim.truth(1)
    sim.advance(1800.0, max_step_s=5.0)
    after = sim.truth(1)
    if profile in ("charge", "cycle"):
        assert after.soc_pct > before.soc_pct and after.current_a > 0
        assert after.cell_temperatures_c[0] >= before.cell_temperatures_c[0]
    else:
        assert after.soc_pct < before.soc_pct and after.current_a < 0
    if profile == "cycle":
        signs = set()
        for _ in range(16):  # up to full, then down again
            sim.advance(1800.0, max_step_s=10.0)
            signs.add(sim.truth(1).current_a > 0)
        assert signs == {True, False}


async def test_state_file_persists_parameters_sn_clock_history(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    sim = _sim(state_file=path, history_records=3)
    table = sim.pack(1).family.table  # type: ignore[attr-defined]
    write = m.WriteParamTable(
        1, m.ParamTable.PROTECTION, (m.ParamRecord(0, table.get("CELL_OV_Start").to_wire(3.6)),)
    )
    await sim.handle(m.encode_request(write, allow_inferred=True))
    await sim.handle(m.encode_request(m.WriteSerialNumber(1, "PERSIST-1")))
    clock_before = sim.truth(1).clock_epoch_s
    sim.save_state()
    data = json.loads(path.read_text())
    assert data["packs"]["1"]["serial"] == "PERSIST-1"
    again = _sim(state_file=path)
    truth = again.truth(1)
    assert truth.parameters["CELL_OV_Start"] == 3.6
    assert truth.identity.serial == "PERSIST-1"
    assert truth.history_count == 5  # 3 timing records, a start before the save, a start after the load
    assert [r.event for r in again.pack(1).history.records[-2:]] == ["start_system", "start_system"]
    assert abs(truth.clock_epoch_s - clock_before) <= 1
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read simulator state"):
        _sim(state_file=path)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="packs"):
        SimulatorOptions(packs=0)
    with pytest.raises(ValueError, match="do not fit"):
        SimulatorOptions(packs=3, first_address=14)
    with pytest.raises(ValueError, match="profile"):
        SimulatorOptions(profile="storm")
    with pytest.raises(ValueError, match="protocol"):
        SimulatorOptions(protocol="modbus")  # type: ignore[arg-type]


# --- the bootloader through the simulator, in both families' framing -------------------------------


async def _upgrade(
    sim: Simulator, family: str, address: int, image: bl.FirmwareImage, limit: int | None = None
) -> bl.UpgradeSession:
    session = bl.UpgradeSession(image)
    sent = 0
    while not session.done and (limit is None or sent < limit):
        op, body = session.next_request()
        raw = await sim.handle(boot(family).encode_frame(address, op, body))
        session.on_reply(boot(family).decode_reply_frame(raw, op))
        sent += 1
    return session


def _image(sim: Simulator, address: int, version: str, payload: bytes) -> bl.FirmwareImage:
    truth = sim.truth(address)
    return bl.parse_image(bl.build_image(truth.protocol, truth.identity.model, version, payload))


@pytest.mark.parametrize("family", ["tianpower", "pace"])
async def test_full_upgrade_through_the_simulator(family: str) -> None:
    sim = _sim(family)
    image = _image(sim, 1, "SIM-FW-V9.9.9", bytes(range(256)) * 6)
    session = await _upgrade(sim, family, 1, image)
    assert session.done and sim.truth(1).identity.version == "SIM-FW-V9.9.9"
    assert not sim.truth(1).in_bootloader


async def test_interrupted_upgrade_leaves_the_pack_in_its_bootloader_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sim = _sim(state_file=path)
    old = sim.truth(1).identity.version
    image = _image(sim, 1, "SIM-FW-V2", bytes(range(200)) * 5)
    await _upgrade(sim, "tianpower", 1, image, limit=4)  # enter + 3 blocks, then the gateway dies
    assert sim.truth(1).in_bootloader and sim.truth(1).identity.version == old
    assert await sim.handle(REALTIME_1) == b""  # the application does not run
    sim.save_state()
    restarted = _sim(state_file=path)  # the simulator restarts too: the partial image survives
    assert restarted.truth(1).in_bootloader
    session = await _upgrade(restarted, "tianpower", 1, image)
    assert session.done and session.resumed_from == 3
    assert restarted.truth(1).identity.version == "SIM-FW-V2"
    assert await restarted.handle(REALTIME_1) != b""


@pytest.mark.parametrize("family", ["tianpower", "pace"])
async def test_corrupt_image_is_refused_and_the_old_firmware_keeps_running(family: str) -> None:
    sim = _sim(family)
    old = sim.truth(1).identity.version
    good = _image(sim, 1, "SIM-FW-BAD", bytes(range(256)) * 3)
    forged = bl.FirmwareImage(good.header, good.payload[:-1] + b"\x00")
    with pytest.raises(bl.UpgradeError) as err:
        await _upgrade(sim, family, 1, forged)
    assert err.value.status is bl.Status.IMAGE_CRC_MISMATCH
    truth = sim.truth(1)
    assert truth.identity.version == old and not truth.in_bootloader
    probe = pc.analog_request(1) if family == "pace" else REALTIME_1
    assert await sim.handle(probe) != b""
    # An image for another model is refused at ENTER.
    other = bl.parse_image(bl.build_image(family, "OTHER-MODEL", "X-1", b"abc"))
    with pytest.raises(bl.UpgradeError) as err:
        await _upgrade(sim, family, 1, other)
    assert err.value.status is bl.Status.WRONG_TARGET


# --- bad input never crashes a pack ---------------------------------------------------------------


@given(st.binary(max_size=300))
async def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for family in ("tianpower", "pace"):
        await _sim(family).handle(data)


@given(st.integers(0, 255), st.binary(max_size=120), st.integers(0, 3))
async def test_any_valid_frame_gets_an_answer_or_silence(command: int, data: bytes, address: int) -> None:
    from protocol.bms.tianpower.frame import build_frame

    sim = _sim("tianpower")
    raw = await sim.handle(build_frame(address, command, data))
    if raw:
        assert _valid("tianpower", raw)
    sim = _sim("pace")
    raw = await sim.handle(pc.request(address, command, data[:60]))
    if raw:
        assert _valid("pace", raw)


def test_charge_profile_rests_at_full_without_chatter() -> None:
    sim = _sim(profile="charge", packs=1)
    sim.advance(5 * 3600.0, max_step_s=5.0)
    truth = sim.truth(1)
    assert truth.current_a == 0.0 and truth.soc_pct > 95.0
    events = [r.event for r in sim.pack(1).history.records]
    assert events.count("start_charging") == 1
    assert events.count("timing") == 5
