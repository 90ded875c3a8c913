"""Tianpower driver against a tiny in-test pack that answers with frames from the codec's builders.

The in-test `FakeBus` is the hardware edge: it decodes the request, lets `FakePack` answer, echoes
the request first (as some transceivers do), and returns the first frame the driver's match accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import pytest

from gateway.core.model import TempRole
from gateway.south.drivers.base import Control, DeviceError, NoResponse, ParameterWrite, Priority, Unsupported
from gateway.south.drivers.tianpower import (
    DangerousRefused,
    InferredRefused,
    MalformedResponse,
    TianpowerDriver,
    telemetry_from,
)
from mappings.bms.params import ParameterValueError, load_table
from protocol.bms.tianpower import EXAMPLES, TianpowerDecoder, build_frame, parse_frame
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.realtime import (
    CellReading,
    RealtimeData,
    TempReading,
    decode_realtime,
    status_bytes,
)
from tests.support.fake_bus import WireBus

TABLE = load_table("tianpower")
BASENGREEN_RT = decode_realtime(parse_frame(EXAMPLES["basengreen_realtime_response"]).data)


def _default_tables() -> dict[m.ParamTable, dict[int, int]]:
    tables: dict[m.ParamTable, dict[int, int]] = {m.ParamTable.PROTECTION: {}, m.ParamTable.ALARM: {}}
    for spec in TABLE:
        if "table" in spec.wire:
            value = spec.default if spec.default is not None else spec.min
            tables[m.ParamTable(spec.wire["table"])][spec.wire["record"]] = spec.to_wire(value)
    return tables


def _entry(i: int) -> m.HistoryEntry:
    return m.HistoryEntry(
        event_code=16 if i % 3 else 36,
        cell_count=16,
        cell_voltages_v=tuple(3.290 + (i + c) % 7 / 1000 for c in range(16)),
        temperatures_c=(27.0, 27.0, 28.0, 27.0, 26.0, 30.0),
        current_a=-1.5 * i,
        voltage_v=52.69,
        soc_pct=50 + i,
        when=datetime(2024, 5, 9, 10, i, 0),
    )


@dataclass
class FakePack:
    address: int = 1
    realtime: RealtimeData = BASENGREEN_RT
    tables: dict[m.ParamTable, dict[int, int]] = field(default_factory=_default_tables)
    clock: datetime = datetime(2024, 5, 9, 11, 29, 38)
    serial: str | None = "BASEN-TEST1"
    history: list[m.HistoryEntry] = field(default_factory=list)
    counters: dict[m.Counter, int] = field(default_factory=lambda: {c: 3 for c in m.Counter})
    heater: dict[str, int] = field(default_factory=lambda: {"on": 5, "off": 15})
    interval: int = 60
    ack_code: int = 0
    silent: bool = False
    received: list[m.Request] = field(default_factory=list)
    _cursor: int = 0

    def answer(self, req: m.Request) -> m.Response | None:
        self.received.append(req)
        if self.silent or req.address != self.address:
            return None
        match req:
            case m.ReadRequest(command=m.Cmd.REALTIME):
                return self.realtime
            case m.ReadRequest(command=m.Cmd.VERSION):
                return m.TextInfo(m.Cmd.VERSION, "HY-PT003-E200LT55-V1.0.3")
            case m.ReadRequest(command=m.Cmd.BARCODE):
                return m.TextInfo(m.Cmd.BARCODE, "TBI23090400189")
            case m.ReadRequest(command=m.Cmd.READ_CLOCK):
                return m.ClockData(self.clock)
            case m.ReadRequest(command=m.Cmd.READ_HEATER_ON):
                return m.HeaterThreshold(m.Cmd.READ_HEATER_ON, self.heater["on"])
            case m.ReadRequest(command=m.Cmd.READ_HEATER_OFF):
                return m.HeaterThreshold(m.Cmd.READ_HEATER_OFF, self.heater["off"])
            case m.ReadSerialNumber():
                return m.SerialNumber(self.serial) if self.serial else m.Ack(m.Cmd.BOARD_SN, 4)
            case m.ReadParamTable(table=table):
                return m.ParamTableData(
                    tuple(m.ParamRecord(r, v) for r, v in sorted(self.tables[table].items()))
                )
            case m.WriteParamTable(table=table, records=records):
                for r in records:
                    self.tables[table][r.record] = r.raw
                return m.Ack(m.Cmd.WRITE_PARAMS_INFERRED, self.ack_code)
            case m.WriteHeaterThreshold(which=which, temperature_c=t):
                self.heater[which] = t
                return m.Ack(
                    m.Cmd.WRITE_HEATER_ON if which == "on" else m.Cmd.WRITE_HEATER_OFF, self.ack_code
                )
            case m.ReadCounter(counter=c):
                return m.CounterValue(c, self.counters[c])
            case m.WriteCounter(counter=c, value=v):
                self.counters[c] = v
                return m.Ack(m.COUNTER_WRITE_CMD[c], self.ack_code)
            case m.StorageRead(sub=m.StorageSub.READ_RECORD_COUNT):
                self._cursor = 0
                return m.RecordCount(len(self.history))
            case m.StorageRead(sub=m.StorageSub.READ_RECORDS):
                chunk = self.history[self._cursor : self._cursor + 4]
                self._cursor += len(chunk)
                return m.HistoryFrame(tuple(chunk)) if chunk else m.HistoryEnd()
            case m.StorageRead(sub=m.StorageSub.READ_INTERVAL):
                return m.StorageValue(m.StorageSub.READ_INTERVAL, self.interval)
            case m.StorageRead(sub=m.StorageSub.READ_START_TIME):
                return m.StorageTime("start", datetime(2024, 4, 8, 19, 13, 51))
            case m.StorageRead(sub=m.StorageSub.READ_END_TIME):
                return m.StorageTime("end", datetime(2024, 5, 9, 14, 20, 51))
            case m.WriteStorageValue(sub=m.StorageSub.WRITE_INTERVAL, value=v):
                self.interval = v
                return m.Ack(m.Cmd.STORAGE, self.ack_code)
            case m.SetCellCount():
                return None  # documented: no ACK
            case _:
                cmd, _data = m.request_data(req, allow_inferred=True)
                return m.Ack(cmd, self.ack_code)


class FakeBus(WireBus):
    def __init__(self, pack: FakePack, echo: bool = True) -> None:
        self.pack = pack
        self.echo = echo
        self.sent: list[tuple[bytes, Priority]] = []
        self.override: Callable[[bytes], bytes] | None = None
        super().__init__(TianpowerDecoder, self._line)

    def _line(self, request: bytes, priority: Priority, expect_response: bool) -> bytes | None:
        self.sent.append((request, priority))
        req = m.parse_request(parse_frame(request))
        resp = self.pack.answer(req)
        if not expect_response:
            return None
        wire = request if self.echo else b""
        if self.override is not None:
            wire += self.override(request)
        elif resp is not None:
            wire += m.encode_response(self.pack.address, resp)
        return wire


@pytest.fixture
def pack() -> FakePack:
    return FakePack(history=[_entry(i) for i in range(10)])


@pytest.fixture
def bus(pack: FakePack) -> FakeBus:
    return FakeBus(pack)


DRIVER = TianpowerDriver()


async def test_realtime_from_the_basengreen_capture_skips_the_echo(bus: FakeBus) -> None:
    bus.override = lambda _req: EXAMPLES["basengreen_realtime_response"]
    t = await DRIVER.read_realtime(bus, 1, now=1000.0)
    assert t.measured_at == 1000.0
    assert len(t.cell_voltages_v) == 16 and t.cell_min_v == 3.391 and t.cell_max_v == 3.397
    assert [x.value_c for x in t.temperature(TempRole.CELL)] == [21, 22, 22, 21]
    assert [x.value_c for x in t.temperature(TempRole.MOS)] == [22]
    assert [x.value_c for x in t.temperature(TempRole.AMBIENT)] == [25]
    assert t.current_a == 0.0 and t.soc_pct == 99.99 and t.full_capacity_ah == 280.0
    assert t.cycles == 28 and t.voltage_v == 54.29 and t.soh_pct == 100.0
    assert t.charge_mos_on and t.discharge_mos_on and t.heater_on is False
    assert t.protections == t.alarms == t.faults == t.states == frozenset()
    assert bus.sent[0] == (EXAMPLES["realtime_request_adr1"], Priority.POLL)


async def test_flags_become_protections_alarms_faults_and_states(pack: FakePack, bus: FakeBus) -> None:
    pack.realtime = RealtimeData(
        cells=(CellReading(3.65, balancing=True), CellReading(3.60), CellReading(3.61, balancing=True)),
        current_a=-25.5,
        soc_pct=100.02,
        full_capacity_ah=100.0,
        temperatures=(
            TempReading(0, 30.0),
            TempReading(0x40, 45.0),
            TempReading(0x20, 20.0),
            TempReading(0x10, 1.0),
        ),
        status=bytes(
            a | b
            for a, b in zip(
                status_bytes(
                    "Discharging", "CHG_MOS_Off", "Heating_Pad_On", "CELL_OV_Alarm", "NTC_Disconnected"
                ),
                bytes(6) + b"\x04" + bytes(3),  # an undocumented bit (byte 6 bit 2)
                strict=True,
            )
        ),
        cycles=5,
        voltage_v=10.86,
        soh_pct=98.5,
        extra_protection=1,
    )
    t = await DRIVER.read_realtime(bus, 1, now=1.0)
    assert t.protections == {"CELL_OV_Prot"}
    assert t.alarms == {"CELL_OV_Alarm"}
    assert t.faults == {"NTC_Disconnected"}
    assert t.states == {"Discharging", "CHG_MOS_Off", "Heating_Pad_On", "Status_B6_Bit2"}
    assert t.charge_mos_on is False and t.discharge_mos_on is True and t.heater_on is True
    assert t.balancing_cells == (1, 3)
    assert t.soc_pct == 100.0  # clamped in the model, raw kept in the codec result
    assert [x.role for x in t.temperatures] == [TempRole.CELL, TempRole.MOS, TempRole.AMBIENT, TempRole.BOARD]
    assert t.remaining_discharge_time_s == round(100.0 / 25.5 * 3600)  # whole seconds, its resolution


async def test_identity(pack: FakePack, bus: FakeBus) -> None:
    ident = await DRIVER.read_identity(bus, 1)
    assert (ident.version, ident.barcode, ident.serial, ident.protocol) == (
        "HY-PT003-E200LT55-V1.0.3",
        "TBI23090400189",
        "BASEN-TEST1",
        "tianpower",
    )
    pack.serial = None  # the pack refuses the SN read
    assert (await DRIVER.read_identity(bus, 1)).serial is None


async def test_parameters_read_through_the_table(bus: FakeBus) -> None:
    params = await DRIVER.read_parameters(bus, 1, now=5.0)
    assert params.read_at == 5.0
    assert params.get("CELL_OV_Start") == 3.70 and params.values["CELL_OV_Start"].unit == "V"
    assert params.get("CHG_UT_START") == -5
    assert params.get("CELL_OV_Start_Alarm") == 3.55
    assert params.get("LC_Style") == 4
    assert params.get("Set_Full_charge_capacity") == 280.0
    assert params.get("Set_Remaining_capacity") == 279.97
    assert len(params.values) == len(TABLE)


async def test_inferred_parameter_writes_need_opt_in_then_verify(pack: FakePack, bus: FakeBus) -> None:
    writes = [
        ParameterWrite("CELL_OV_Start", 3.65),
        ParameterWrite("PACK_UV_Delay", 2000),
        ParameterWrite("CELL_UV_Start_Alarm", 2.95),
    ]
    with pytest.raises(InferredRefused, match=r"CELL_OV_Start.*allow_inferred=True"):
        await DRIVER.write_parameters(bus, 1, writes)
    assert bus.sent == []
    await DRIVER.write_parameters(bus, 1, writes, allow_inferred=True)
    kinds = [m.parse_request(parse_frame(raw)) for raw, _ in bus.sent]
    assert kinds == [
        m.WriteParamTable(1, m.ParamTable.PROTECTION, (m.ParamRecord(0x00, 3650), m.ParamRecord(0x0A, 2000))),
        m.WriteParamTable(1, m.ParamTable.ALARM, (m.ParamRecord(0x03, 2950),)),
    ]
    assert all(prio is Priority.ADMIN for _, prio in bus.sent)
    params = await DRIVER.read_parameters(bus, 1, now=0.0)
    assert params.get("CELL_OV_Start") == 3.65 and params.get("CELL_UV_Start_Alarm") == 2.95


async def test_invalid_parameter_values_never_reach_the_bus(bus: FakeBus) -> None:
    with pytest.raises(ParameterValueError, match=r"CELL_OV_Start: 7 V is outside the allowed range 1\.\.6"):
        await DRIVER.write_parameters(bus, 1, [ParameterWrite("CELL_OV_Start", 7)], allow_inferred=True)
    with pytest.raises(ParameterValueError, match="LC_Style"):
        await DRIVER.write_parameters(bus, 1, [ParameterWrite("LC_Style", 6)], allow_inferred=True)
    assert bus.sent == []


async def test_device_refusal_becomes_device_error(pack: FakePack, bus: FakeBus) -> None:
    pack.ack_code = 6
    with pytest.raises(DeviceError) as info:
        await DRIVER.control(bus, 1, Control.CHARGE_MOS, 0)
    assert info.value.code == 6 and "invalid data" in str(info.value)


@pytest.mark.parametrize(
    ("action", "value", "expected"),
    [
        (Control.CHARGE_MOS, 0, m.MosControl(1, m.MosAction.CHARGE_OFF)),
        (Control.CHARGE_MOS, 1, m.MosControl(1, m.MosAction.CHARGE_ON)),
        (Control.DISCHARGE_MOS, 0, m.MosControl(1, m.MosAction.DISCHARGE_OFF)),
        (Control.DISCHARGE_MOS, 1, m.MosControl(1, m.MosAction.DISCHARGE_ON)),
        (Control.HEATER, 1, m.SwitchControl(1, m.Switch.HEATER, True)),
        (Control.FAN, 0, m.SwitchControl(1, m.Switch.FAN, False)),
        (Control.BUZZER, 0, m.SwitchControl(1, m.Switch.BUZZER, False)),
        (Control.SOUND_LIGHT_ALARM, 1, m.SwitchControl(1, m.Switch.SOUND_LIGHT, True)),
        (Control.FORCED_SLEEP, 1, m.ForcedSleep(1)),
    ],
)
async def test_controls(
    bus: FakeBus, pack: FakePack, action: Control, value: int, expected: m.Request
) -> None:
    await DRIVER.control(bus, 1, action, value)
    assert pack.received == [expected]


async def test_undocumented_controls_are_unsupported(bus: FakeBus) -> None:
    for action in (Control.SHUTDOWN, Control.CURRENT_LIMITER):
        with pytest.raises(Unsupported, match="no documented command"):
            await DRIVER.control(bus, 1, action)
    assert bus.sent == []


async def test_clock_read_and_write(pack: FakePack, bus: FakeBus) -> None:
    reading = await DRIVER.read_clock(bus, 1, now=100.0)
    assert reading.pack_time == datetime(2024, 5, 9, 11, 29, 38).timestamp() and reading.read_at == 100.0
    when = datetime(2025, 3, 18, 22, 48, 19)
    await DRIVER.write_clock(bus, 1, when.timestamp() + 0.4)
    assert pack.received[-1] == m.WriteClock(1, when)
    assert bus.sent[-1][0] == EXAMPLES["clock_write_request"]


async def test_history_streams_in_order_and_resumes(pack: FakePack, bus: FakeBus) -> None:
    assert await DRIVER.history_count(bus, 1) == 10
    driver = TianpowerDriver()
    got = []
    for i in range(11):
        rec = await driver.read_history(bus, 1, i)
        got.append(rec)
    assert got[-1] is None
    records = [r for r in got if r is not None]
    assert [r.index for r in records] == list(range(10))
    assert records[0].event == "Start system" and records[1].event == "Timing record"
    assert records[4].soc_pct == 54.0 and records[4].current_a == -6.0
    assert records[4].recorded_at == datetime(2024, 5, 9, 10, 4, 0).timestamp()
    assert records[4].raw == m.encode_record(pack.history[4])
    # going back restarts the pack's stream; a fresh driver resuming at 6 reads forward
    again = await driver.read_history(bus, 1, 2)
    assert again is not None and again.raw == m.encode_record(pack.history[2])
    resumed = await TianpowerDriver().read_history(bus, 1, 6)
    assert resumed is not None and resumed.index == 6 and resumed.raw == m.encode_record(pack.history[6])
    assert all(prio is Priority.BACKGROUND for _, prio in bus.sent)


async def test_family_extras(pack: FakePack, bus: FakeBus) -> None:
    await DRIVER.write_serial(bus, 1, "BASEN-NEW")
    await DRIVER.anti_theft_lock(bus, 1, m.AntiTheft.COMMUNICATION)
    await DRIVER.unlock(bus, 1)
    assert pack.received[-3:] == [
        m.WriteSerialNumber(1, "BASEN-NEW"),
        m.AntiTheftLock(1, m.AntiTheft.COMMUNICATION),
        m.Unlock(1),
    ]
    await DRIVER.write_heater_threshold(bus, 1, "on", 3)
    assert await DRIVER.read_heater_thresholds(bus, 1) == (3, 15)
    await DRIVER.write_counter(bus, 1, m.Counter.OVER_VOLTAGE, 0)
    counters = await DRIVER.read_protection_counters(bus, 1)
    assert counters[m.Counter.OVER_VOLTAGE] == 0 and counters[m.Counter.SHORT_CIRCUIT] == 3
    await DRIVER.write_storage_interval(bus, 1, 30)
    assert await DRIVER.read_storage_interval(bus, 1) == 30
    assert await DRIVER.read_record_times(bus, 1) == (
        datetime(2024, 4, 8, 19, 13, 51),
        datetime(2024, 5, 9, 14, 20, 51),
    )
    with pytest.raises(InferredRefused):
        await DRIVER.write_capacity(bus, 1, m.Capacity.FULL, 200.0)
    await DRIVER.write_capacity(bus, 1, m.Capacity.NOMINAL, 200.0, allow_inferred=True)
    assert pack.received[-1] == m.WriteCapacity(1, m.Capacity.NOMINAL, 20000)


async def test_factory_commands_need_confirmation(pack: FakePack, bus: FakeBus) -> None:
    with pytest.raises(DangerousRefused, match="confirm_dangerous=True"):
        await DRIVER.set_cell_count(bus, 1, 15)
    with pytest.raises(DangerousRefused):
        await DRIVER.calibrate(bus, 1, m.CalibrationPoint.CHARGE_1, 1000)
    assert bus.sent == []
    await DRIVER.set_cell_count(bus, 1, 15, confirm_dangerous=True)  # no ACK expected
    await DRIVER.calibrate(bus, 1, m.CalibrationPoint.CHARGE_1, m.CALIBRATION_RESET, confirm_dangerous=True)
    assert pack.received == [m.SetCellCount(1, 15), m.Calibrate(1, m.CalibrationPoint.CHARGE_1, 0xFFFF)]


async def test_probe_and_silence(pack: FakePack, bus: FakeBus) -> None:
    assert await DRIVER.probe(bus, 1)
    assert not await DRIVER.probe(bus, 2)  # nobody at address 2: only our echo comes back
    pack.silent = True
    with pytest.raises(NoResponse):
        await DRIVER.read_realtime(bus, 1, now=0.0)


async def test_malformed_payload_is_a_device_error(bus: FakeBus) -> None:
    bus.override = lambda _req: build_frame(1, 0x01, bytes((0x01, 0x01, 0x0D, 0x00)))
    with pytest.raises(MalformedResponse, match="lacks group"):
        await DRIVER.read_realtime(bus, 1, now=0.0)
    bus.override = lambda _req: m.encode_response(1, m.Ack(0x01, 4))
    with pytest.raises(DeviceError, match="invalid command"):
        await DRIVER.read_realtime(bus, 1, now=0.0)


async def test_revov_start_byte(pack: FakePack) -> None:
    bus = FakeBus(pack)
    driver = TianpowerDriver(start_byte=0x7C)
    await driver.read_realtime(bus, 1, now=0.0)
    assert bus.sent[0][0] == EXAMPLES["revov_realtime_request"]


def test_telemetry_from_is_pure() -> None:
    t1 = telemetry_from(BASENGREEN_RT, 1.0)
    t2 = telemetry_from(replace(BASENGREEN_RT), 1.0)
    assert t1 == t2 and t1.cell_diff_v == pytest.approx(0.006)
