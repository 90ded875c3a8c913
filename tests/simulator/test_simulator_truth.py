"""The codecs read every simulated field back exactly: ground truth == decoded, for both families."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from protocol.bms.pace import commands as pc
from protocol.bms.pace import values as pv
from protocol.bms.pace.frame import parse_frame as pace_parse
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import parse_frame as tp_parse
from protocol.bms.tianpower.realtime import TempSensor
from simulator import Simulator, SimulatorOptions
from simulator.records import event_code, event_of_code, pack_time

EPOCH = 1_780_000_000.0  # a fixed simulation origin so clock values are reproducible
EXACT = pytest.approx  # floats built as raw/scale on both sides: equal to the last bit or nearly


def _tp_sim(**kw: object) -> Simulator:
    opts = {"protocol": "tianpower", "packs": 3, "seed": 7, "profile": "idle", "start_epoch_s": EPOCH, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


async def _tp(sim: Simulator, req: m.Request) -> m.Response:
    raw = await sim.handle(m.encode_request(req, allow_inferred=True))
    assert raw, f"no answer to {req}"
    return m.parse_response(tp_parse(raw), req)


@pytest.mark.parametrize("profile", ["idle", "charge", "discharge"])
async def test_tianpower_realtime_equals_truth(profile: str) -> None:
    sim = _tp_sim(profile=profile)
    sim.advance(120.0)  # let the current flow and the temperatures move
    for address in sim.addresses:
        truth = sim.truth(address)
        rt = await _tp(sim, m.ReadRequest(address, m.Cmd.REALTIME))
        assert isinstance(rt, m.RealtimeData)
        assert rt.cell_voltages_v == EXACT(truth.cell_voltages_v, abs=1e-9)
        assert rt.current_a == EXACT(truth.current_a, abs=1e-9)
        assert rt.soc_pct == EXACT(truth.soc_pct, abs=1e-9)
        assert rt.full_capacity_ah == EXACT(truth.full_capacity_ah, abs=1e-9)
        assert rt.remaining_capacity_ah == EXACT(truth.remaining_capacity_ah, abs=1e-9)
        assert rt.voltage_v == EXACT(truth.voltage_v, abs=1e-9)
        assert rt.soh_pct == EXACT(truth.soh_pct, abs=1e-9)
        assert rt.cycles == truth.cycles
        cells = tuple(t.value_c for t in rt.temperatures if t.sensor is TempSensor.CELL)
        assert cells == truth.cell_temperatures_c
        assert [t.value_c for t in rt.temperatures if t.sensor is TempSensor.MOS] == [truth.mos_temperature_c]
        assert [t.value_c for t in rt.temperatures if t.sensor is TempSensor.AMBIENT] == [
            truth.ambient_temperature_c
        ]
        assert rt.charge_mos_on == truth.charge_mos_on
        assert rt.discharge_mos_on == truth.discharge_mos_on
        assert rt.balancing_cells == truth.balancing_cells
        assert ("Charging" in rt.flag_names()) == truth.charging
        assert ("Discharging" in rt.flag_names()) == truth.discharging
    if profile == "charge":
        assert sim.truth(1).current_a > 0
    if profile == "discharge":
        assert sim.truth(1).current_a < 0


async def test_tianpower_identity_clock_and_settings_equal_truth() -> None:
    sim = _tp_sim()
    truth = sim.truth(2)
    version = await _tp(sim, m.ReadRequest(2, m.Cmd.VERSION))
    barcode = await _tp(sim, m.ReadRequest(2, m.Cmd.BARCODE))
    serial = await _tp(sim, m.ReadSerialNumber(2))
    clock = await _tp(sim, m.ReadRequest(2, m.Cmd.READ_CLOCK))
    assert version == m.TextInfo(m.Cmd.VERSION, truth.identity.version)
    assert barcode == m.TextInfo(m.Cmd.BARCODE, truth.identity.barcode)
    assert serial == m.SerialNumber(truth.identity.serial)
    assert isinstance(clock, m.ClockData) and clock.when == pack_time(truth.clock_epoch_s)
    on = await _tp(sim, m.ReadRequest(2, m.Cmd.READ_HEATER_ON))
    off = await _tp(sim, m.ReadRequest(2, m.Cmd.READ_HEATER_OFF))
    assert isinstance(on, m.HeaterThreshold) and on.temperature_c == truth.heater_on_c
    assert isinstance(off, m.HeaterThreshold) and off.temperature_c == truth.heater_off_c
    interval = await _tp(sim, m.StorageRead(2, m.StorageSub.READ_INTERVAL))
    assert interval == m.StorageValue(m.StorageSub.READ_INTERVAL, truth.storage_interval_s // 60)
    for counter in (m.Counter.SHORT_CIRCUIT, m.Counter.OVER_VOLTAGE, m.Counter.TEMPERATURE):
        value = await _tp(sim, m.ReadCounter(2, counter))
        assert value == m.CounterValue(counter, truth.protection_counters[counter.value])


async def test_tianpower_parameter_tables_equal_truth_and_writes_persist() -> None:
    sim = _tp_sim()
    table = sim.pack(1).family.table  # type: ignore[attr-defined]
    for selector in (m.ParamTable.PROTECTION, m.ParamTable.ALARM):
        data = await _tp(sim, m.ReadParamTable(1, selector))
        assert isinstance(data, m.ParamTableData)
        decoded = {}
        for rec in data.records:
            (spec,) = table.where_wire(table=int(selector), record=rec.record)
            decoded[spec.name] = spec.from_wire(rec.raw)
        truth = sim.truth(1).parameters
        assert decoded == {k: truth[k] for k in decoded}
        assert len(data.records) == (51 if selector is m.ParamTable.PROTECTION else 43)
    # Write (inferred command) -> ACK -> read back.
    spec = table.get("CELL_OV_Start")
    write = m.WriteParamTable(1, m.ParamTable.PROTECTION, (m.ParamRecord(0x00, spec.to_wire(3.65)),))
    assert await _tp(sim, write) == m.Ack(m.Cmd.WRITE_PARAMS_INFERRED, 0)
    assert sim.truth(1).parameters["CELL_OV_Start"] == 3.65
    # Out of range -> refused, nothing changes.
    bad = m.WriteParamTable(1, m.ParamTable.PROTECTION, (m.ParamRecord(0x00, 9000),))
    assert await _tp(sim, bad) == m.Ack(m.Cmd.WRITE_PARAMS_INFERRED, 0x06)
    assert sim.truth(1).parameters["CELL_OV_Start"] == 3.65


async def test_tianpower_history_read_sequence_equals_store() -> None:
    sim = _tp_sim(packs=1, history_records=5)
    sim.set_current(1, 20.0)
    sim.advance(2.0)  # a "start charging" event on top of the timing records
    store = sim.pack(1).history
    count = await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORD_COUNT))
    assert count == m.RecordCount(store.count) and store.count == 7
    seen = []
    for _ in range(store.count):
        frame = await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORDS))
        assert isinstance(frame, m.HistoryFrame)
        seen.extend(frame.records)
    end = await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORDS))
    assert isinstance(end, m.HistoryEnd)
    expected = list(reversed(store.records))  # newest first
    assert [event_of_code(e.event_code) for e in seen] == [r.event for r in expected]
    assert [e.event for e in seen[:3]] == ["Start charging", "Start system", "Timing record"]
    for entry, rec in zip(seen, expected, strict=True):
        assert entry.when == pack_time(rec.at_epoch_s)
        assert entry.cells_v == EXACT(tuple(mv / 1000 for mv in rec.cell_mv), abs=1e-9)
        assert entry.temperatures_c == tuple(float(t) for t in rec.temps_c)
        assert entry.current_a == EXACT(rec.current_a, abs=1e-9)
        assert entry.soc_pct == rec.soc_pct
    # Timing records are an interval apart.
    times = [r.at_epoch_s for r in store.records if r.event == "timing"]
    assert {b - a for a, b in itertools.pairwise(times)} == {store.interval_s}


async def test_tianpower_writes_change_the_truth() -> None:
    sim = _tp_sim()
    when = dt.datetime(2030, 1, 2, 3, 4, 5)
    assert await _tp(sim, m.WriteClock(3, when)) == m.Ack(m.Cmd.WRITE_CLOCK, 0)
    assert pack_time(sim.truth(3).clock_epoch_s) == when
    assert await _tp(sim, m.WriteSerialNumber(3, "SN-NEW-3")) == m.Ack(m.Cmd.BOARD_SN, 0)
    assert await _tp(sim, m.ReadSerialNumber(3)) == m.SerialNumber("SN-NEW-3")
    assert await _tp(sim, m.MosControl(3, m.MosAction.CHARGE_OFF)) == m.Ack(m.Cmd.MOS, 0)
    rt = await _tp(sim, m.ReadRequest(3, m.Cmd.REALTIME))
    assert (
        isinstance(rt, m.RealtimeData) and not rt.charge_mos_on and "Manual_CHG_MOS_Close" in rt.flag_names()
    )
    assert await _tp(sim, m.WriteCapacity(3, m.Capacity.FULL, 12000)) == m.Ack(m.Cmd.FULL_CAPACITY, 0)
    assert sim.truth(3).full_capacity_ah == 120.0
    assert await _tp(sim, m.WriteStorageValue(3, m.StorageSub.WRITE_INTERVAL, 10)) == m.Ack(m.Cmd.STORAGE, 0)
    assert sim.truth(3).storage_interval_s == 600
    assert await _tp(sim, m.WriteHeaterThreshold(3, "on", 3)) == m.Ack(m.Cmd.WRITE_HEATER_ON, 0)
    assert sim.truth(3).heater_on_c == 3


async def test_tianpower_unknown_command_gets_error_ack() -> None:
    from protocol.bms.tianpower.frame import build_frame

    sim = _tp_sim()
    raw = await sim.handle(build_frame(1, 0x77, b""))
    frame = tp_parse(raw)
    assert (frame.command, frame.data) == (0x77, b"\x04")  # ACK "invalid command"
    # Not for any simulated pack: silence.
    assert await sim.handle(m.encode_request(m.ReadRequest(9, m.Cmd.REALTIME))) == b""
    # Garbage: silence, never an exception.
    assert await sim.handle(b"\x00\x01garbage\x0d") == b""


# --- PACE ---------------------------------------------------------------------------------------


def _pace_sim(**kw: object) -> Simulator:
    opts = {"protocol": "pace", "packs": 3, "seed": 5, "profile": "idle", "start_epoch_s": EPOCH, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


async def _pace(sim: Simulator, raw_request: bytes) -> bytes:
    raw = await sim.handle(raw_request)
    assert raw, "no answer"
    frame = pace_parse(raw)
    assert frame.command == 0, f"RTN 0x{frame.command:02X}"
    return frame.info


def _assert_block(block: pv.AnalogBlock, truth) -> None:  # type: ignore[no-untyped-def]
    assert block.cell_voltages_v == EXACT(truth.cell_voltages_v, abs=1e-9)
    temps = (*truth.cell_temperatures_c, truth.mos_temperature_c, truth.ambient_temperature_c)
    assert block.temperatures_c == temps
    assert block.current_a == EXACT(truth.current_a, abs=1e-9)
    assert block.voltage_v == EXACT(truth.voltage_v, abs=1e-9)
    assert block.remaining_ah == EXACT(truth.remaining_capacity_ah, abs=1e-9)
    assert block.full_capacity_ah == EXACT(truth.full_capacity_ah, abs=1e-9)
    assert block.design_capacity_ah == EXACT(truth.nominal_capacity_ah, abs=1e-9)
    assert block.cycles == truth.cycles
    assert block.soc_pct == EXACT(truth.soc_pct, abs=1e-9)
    assert block.soh_pct == EXACT(truth.soh_pct, abs=1e-9)


@pytest.mark.parametrize("profile", ["idle", "charge", "discharge"])
async def test_pace_analog_and_status_equal_truth(profile: str) -> None:
    sim = _pace_sim(profile=profile)
    sim.advance(120.0)
    for address in sim.addresses:
        truth = sim.truth(address)
        analog = pv.decode_analog(await _pace(sim, pc.analog_request(address)))
        assert analog.command_value == address
        _assert_block(analog.packs[0], truth)
        status = pv.decode_status(await _pace(sim, pc.status_request(address))).packs[0]
        assert status.charge_mos_on == truth.charge_mos_on
        assert status.discharge_mos_on == truth.discharge_mos_on
        assert status.balancing_cells == truth.balancing_cells
        flags = status.flags()
        assert ("Charging" in flags.states) == truth.charging
        assert ("Discharging" in flags.states) == truth.discharging
        assert not flags.protections and not flags.alarms


async def test_pace_master_answers_for_the_bank() -> None:
    sim = _pace_sim(packs=4, first_address=2)
    sim.set_online(4, False)
    assert pc.decode_pack_count(await _pace(sim, pc.pack_count_request(2))) == 3
    bank = pv.decode_analog(await _pace(sim, pc.analog_request(2, bank=True)), bank=True)
    assert bank.command_value == 3 and not bank.trailing
    for block, address in zip(bank.packs, (2, 3, 5), strict=True):
        _assert_block(block, sim.truth(address))
    status = pv.decode_status(await _pace(sim, pc.status_request(2, bank=True)), bank=True)
    assert len(status.packs) == 3
    # A slave asked for the bank refuses (RTN 06); an offline pack is silent.
    raw = await sim.handle(pc.analog_request(3, bank=True))
    assert pace_parse(raw).command == 0x06
    assert await sim.handle(pc.analog_request(4)) == b""


async def test_pace_identity_clock_capacities_protocols_groups() -> None:
    sim = _pace_sim()
    truth = sim.truth(1)
    assert (
        pc.decode_text(await _pace(sim, pc.simple_request(1, pc.Cmd.HARDWARE_VERSION)))
        == truth.identity.version
    )
    assert (
        pc.decode_text(await _pace(sim, pc.simple_request(1, pc.Cmd.SERIAL_NUMBER))) == truth.identity.serial
    )
    when = pc.decode_datetime(await _pace(sim, pc.simple_request(1, pc.Cmd.READ_TIME)), pv.Variant.V25)
    assert when == pack_time(truth.clock_epoch_s)
    caps = pc.decode_capacities(await _pace(sim, pc.simple_request(1, pc.Cmd.READ_CAPACITIES)))
    assert caps == pc.Capacities(
        truth.remaining_capacity_ah, truth.full_capacity_ah, truth.nominal_capacity_ah
    )
    protocols = pc.decode_protocols(await _pace(sim, pc.simple_request(1, pc.Cmd.READ_PROTOCOLS)))
    assert (protocols.can, protocols.rs485, protocols.mode) == (
        truth.extra["can_protocol"],
        truth.extra["rs485_protocol"],
        truth.extra["protocol_mode"],
    )
    await _pace(sim, pc.protocols_request(1, pc.Protocols(0x13, 0x14, 0x01)))
    assert pc.decode_protocols(await _pace(sim, pc.simple_request(1, pc.Cmd.READ_PROTOCOLS))) == pc.Protocols(
        0x13, 0x14, 0x01
    )
    table = sim.pack(1).family.table  # type: ignore[attr-defined]
    checked = 0
    for layout in pc.PARAM_GROUPS:
        g = pc.decode_group_read(layout.read, await _pace(sim, pc.simple_request(1, layout.read)))
        for spec in table.where_wire(read=layout.read):
            value = spec.from_wire(g.values[int(spec.wire["field"])])
            assert value == EXACT(truth.parameters[spec.name], abs=1e-9), spec.name
            checked += 1
    assert checked == len(truth.parameters) == len(table)
    # Write a group, read it back.
    g = pc.decode_group_read(0xD1, await _pace(sim, pc.simple_request(1, 0xD1)))
    await _pace(sim, pc.group_write_request(1, g.replace({1: 3650})))
    assert sim.truth(1).parameters["Cell_OV_Protect"] == 3.65
    # Out of range: RTN 06 and nothing changes.
    raw = await sim.handle(pc.group_write_request(1, g.replace({1: 9000})))
    assert pace_parse(raw).command == 0x06
    assert sim.truth(1).parameters["Cell_OV_Protect"] == 3.65


async def test_pace_history_records_equal_store() -> None:
    sim = _pace_sim(packs=1, history_records=3)
    store = sim.pack(1).history
    for index in range(store.count):
        rec = pc.decode_history(await _pace(sim, pc.history_request(1, index)))
        assert rec is not None
        src = store.newest_first(index)
        assert src is not None
        assert rec.recorded_at == pack_time(src.at_epoch_s)
        assert rec.cell_voltages_v == EXACT(tuple(mv / 1000 for mv in src.cell_mv), abs=1e-9)
        assert rec.remaining_ah == src.remaining_ah and rec.full_ah == src.full_ah
        assert rec.tail[0] == event_code(src.event)  # the simulator's event code in the undecoded tail
    assert pc.decode_history(await _pace(sim, pc.history_request(1, store.count))) is None


async def test_pace_errors_get_rtn_codes() -> None:
    sim = _pace_sim()
    unknown = await sim.handle(pc.request(1, 0x77))
    assert pace_parse(unknown).command == 0x04
    wrong_value = await sim.handle(pc.request(1, pc.Cmd.ANALOG, b"\x02"))
    assert pace_parse(wrong_value).command == 0x06
    wrong_ver = await sim.handle(pc.request(1, pc.Cmd.ANALOG, b"\x01", version=0x20))
    assert pace_parse(wrong_ver).command == 0x01
    probe = pace_parse(await sim.handle(pc.version_probe(1)))
    assert probe.version == 0x25 and probe.command == 0


async def test_pace_v20_reads() -> None:
    sim = _pace_sim(pace_version=0x20)
    truth = sim.truth(1)
    info = await _pace(sim, pc.analog_request(1, version=0x20))
    block = pv.decode_analog(info, variant=pv.Variant.V20).packs[0]
    _assert_block(block, truth)
    status = pv.decode_status_v20(await _pace(sim, pc.status_request(1, version=0x20)))
    assert status.charge_mos_on and status.discharge_mos_on
    when = pc.decode_datetime(
        await _pace(sim, pc.simple_request(1, pc.Cmd.V20_READ_TIME, version=0x20)), pv.Variant.V20
    )
    assert when == pack_time(truth.clock_epoch_s)
    assert (
        pc.decode_text(await _pace(sim, pc.simple_request(1, pc.Cmd.V20_SERIAL, version=0x20)))
        == truth.identity.serial
    )
    probe = pace_parse(await sim.handle(pc.version_probe(1)))
    assert probe.version == 0x20


async def test_tianpower_read_sequence_is_not_shifted_by_new_records() -> None:
    sim = _tp_sim(packs=1, history_records=4)
    store = sim.pack(1).history
    expected = list(reversed(store.records))
    await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORD_COUNT))
    first = await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORDS))
    sim.set_current(1, 10.0)
    sim.advance(1.0)  # a new "start charging" record arrives in the middle of the download
    rest = [await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORDS)) for _ in range(len(expected) - 1)]
    got = [first, *rest]
    assert all(isinstance(f, m.HistoryFrame) for f in got)
    whens = [f.records[0].when for f in got if isinstance(f, m.HistoryFrame)]
    assert whens == [pack_time(r.at_epoch_s) for r in expected]
    assert isinstance(await _tp(sim, m.StorageRead(1, m.StorageSub.READ_RECORDS)), m.HistoryEnd)
