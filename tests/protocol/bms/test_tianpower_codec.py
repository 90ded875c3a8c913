"""Tianpower codec: golden vectors both directions, framing errors, every command's round trip."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bms.tianpower import EXAMPLES, TianpowerDecoder, build_frame, checksum, describe, parse_frame
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import build_table_read
from protocol.bms.tianpower.realtime import (
    ALL_FLAGS,
    FLAGS_BY_NAME,
    CellReading,
    CounterGroup,
    FlagKind,
    RealtimeData,
    TempReading,
    TempSensor,
    decode_realtime,
    encode_realtime_data,
    extra_protection_word,
    status_bytes,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from tests.support import REPO

BASENGREEN = EXAMPLES["basengreen_realtime_response"]
EG4 = EXAMPLES["eg4_realtime_response"]


def test_checksum_table_for_the_info_request() -> None:
    expected = [
        0x00,
        0xFE,
        0xFC,
        0xFE,
        0xF8,
        0xFE,
        0xFC,
        0xFE,
        0xF0,
        0xFE,
        0xFC,
        0xFE,
        0xF8,
        0xFE,
        0xFC,
        0xFE,
    ]
    assert [checksum(bytes((0x7E, adr, 0x01, 0x00))) for adr in range(16)] == expected


def test_basengreen_capture_decodes_to_the_documented_values() -> None:
    frame = parse_frame(BASENGREEN)
    assert (frame.address, frame.command, frame.is_request, len(frame.raw)) == (1, 0x01, False, 130)
    rt = m.parse_response(frame)
    assert isinstance(rt, RealtimeData)
    assert len(rt.cells) == 16
    assert min(rt.cell_voltages_v) == 3.391 and max(rt.cell_voltages_v) == 3.397
    assert rt.current_a == 0.0
    assert rt.soc_pct == 99.99
    assert rt.full_capacity_ah == 280.0
    cell_temps = [t.value_c for t in rt.temperatures if t.sensor is TempSensor.CELL]
    assert cell_temps == [21, 22, 22, 21]
    assert [t.value_c for t in rt.temperatures if t.sensor is TempSensor.MOS] == [22]
    assert [t.value_c for t in rt.temperatures if t.sensor is TempSensor.AMBIENT] == [25]
    assert rt.cycles == 28 and rt.voltage_v == 54.29 and rt.soh_pct == 100.0
    assert rt.status == bytes(10) and rt.flags() == () and rt.extra_protection == 0
    assert rt.charge_mos_on and rt.discharge_mos_on and not rt.heater_on
    assert [(c.group, c.values[0]) for c in rt.counters] == [
        (0x0B, 6661),
        (0x0C, 6493),
        (0x0D, 2_828_271),
        (0x0E, 0x00400000),
        (0x0F, 357_638),
        (0x10, 281_506),
    ]
    assert "charged Ah" in rt.counters[0].hypothesis
    assert rt.remaining_capacity_ah == 279.97


def test_eg4_capture_decodes() -> None:
    rt = decode_realtime(parse_frame(EG4).data)
    assert set(rt.cell_voltages_v) == {3.315, 3.316}
    assert rt.soc_pct == 88.6 and rt.full_capacity_ah == 100.0 and rt.voltage_v == 53.05 and rt.cycles == 1
    assert [(t.tag, t.value_c) for t in rt.temperatures] == [
        (0, 15),
        (0, 15),
        (0, 14),
        (0, 14),
        (0x80, 16),
        (0x20, 16),
    ]
    assert rt.temperatures[4].sensor is TempSensor.MOS
    assert rt.counters == ()


@pytest.mark.parametrize("name", ["basengreen_realtime_response", "eg4_realtime_response"])
def test_realtime_encoder_reproduces_the_captures(name: str) -> None:
    raw = EXAMPLES[name]
    rt = decode_realtime(parse_frame(raw).data)
    assert m.encode_realtime(1, rt) == raw


def test_golden_requests_are_built_by_the_builders() -> None:
    when = datetime(2025, 3, 18, 22, 48, 19)
    cases: dict[str, m.Request] = {
        "realtime_request_adr1": m.ReadRequest(1, m.Cmd.REALTIME),
        "realtime_request_adr0": m.ReadRequest(0, m.Cmd.REALTIME),
        "version_request": m.ReadRequest(1, m.Cmd.VERSION),
        "barcode_request": m.ReadRequest(1, m.Cmd.BARCODE),
        "sn_read_request": m.ReadSerialNumber(1),
        "protection_table_request": m.ReadParamTable(1, m.ParamTable.PROTECTION),
        "alarm_table_request": m.ReadParamTable(1, m.ParamTable.ALARM),
        "clock_read_request": m.ReadRequest(1, m.Cmd.READ_CLOCK),
        "clock_write_request": m.WriteClock(1, when),
        "charge_mos_off_request": m.MosControl(1, m.MosAction.CHARGE_OFF),
        "forced_sleep_request": m.ForcedSleep(1),
        "heater_on_request": m.SwitchControl(1, m.Switch.HEATER, True),
        "heater_on_temp_read_request": m.ReadRequest(1, m.Cmd.READ_HEATER_ON),
        "heater_on_temp_write_request": m.WriteHeaterThreshold(1, "on", 5),
        "board_info_request": m.ReadBoardInfo(1),
        "record_count_request": m.StorageRead(1, m.StorageSub.READ_RECORD_COUNT),
        "short_circuit_counter_request": m.ReadCounter(1, m.Counter.SHORT_CIRCUIT),
    }
    for name, req in cases.items():
        assert m.encode_request(req) == EXAMPLES[name], name
        frame = parse_frame(EXAMPLES[name])
        assert frame.is_request, name
        assert m.parse_request(frame) == req, name
    revov = {
        "revov_realtime_request": m.ReadRequest(1, m.Cmd.REALTIME),
        "revov_barcode_request": m.ReadRequest(1, m.Cmd.BARCODE),
        "revov_06_request": m.ReadRequest(1, m.Cmd.REVOV_06),
    }
    for name, req in revov.items():
        assert m.encode_request(req, soi=0x7C) == EXAMPLES[name], name
        assert m.parse_request(parse_frame(EXAMPLES[name])) == req


ALL_REQUESTS: list[m.Request] = [
    m.ReadRequest(3, m.Cmd.READ_HEATER_OFF),
    m.WriteParamTable(2, m.ParamTable.ALARM, (m.ParamRecord(0, 3550), m.ParamRecord(0x2A, 30))),
    m.MosControl(1, m.MosAction.DISCHARGE_ON),
    m.SwitchControl(1, m.Switch.FAN, False),
    m.SwitchControl(1, m.Switch.BUZZER, True),
    m.SwitchControl(1, m.Switch.SOUND_LIGHT, False),
    m.WriteHeaterThreshold(1, "off", -10),
    m.WriteSerialNumber(1, "BASEN-TEST1"),
    m.AntiTheftLock(1, m.AntiTheft.COMMUNICATION | m.AntiTheft.SLEEP_VOLTAGE),
    m.AntiTheftLock(1, m.AntiTheft(0)),
    m.Unlock(1),
    m.StorageRead(1, m.StorageSub.READ_RECORDS),
    m.StorageRead(1, m.StorageSub.READ_INTERVAL),
    m.WriteStorageTime(1, "end", datetime(2024, 5, 9, 14, 20, 51)),
    m.WriteStorageValue(1, m.StorageSub.WRITE_INTERVAL, 60),
    m.WriteStorageValue(1, m.StorageSub.WRITE_RECORDING_SPEED, 3),
    m.WriteCounter(1, m.Counter.CYCLES, 28),
    m.WriteCounter(1, m.Counter.UNDER_VOLTAGE, 0),
    m.WriteCapacity(1, m.Capacity.FULL, 28000),
    m.WriteCapacity(1, m.Capacity.NOMINAL, 28000),
    m.Calibrate(1, m.CalibrationPoint.DISCHARGE_2, m.CALIBRATION_RESET),
    m.SetCellCount(1, 15),
]


@pytest.mark.parametrize("req", ALL_REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips(req: m.Request) -> None:
    raw = m.encode_request(req, allow_inferred=True)
    frame = parse_frame(raw)
    assert frame.is_request
    assert m.parse_request(frame) == req


def test_documented_request_bytes() -> None:
    assert m.encode_request(m.SwitchControl(1, m.Switch.BUZZER, True))[2:6] == bytes((0xD1, 2, 1, 1))
    assert m.encode_request(m.SwitchControl(1, m.Switch.SOUND_LIGHT, True))[2:6] == bytes((0x63, 2, 0, 1))
    assert m.encode_request(m.SwitchControl(1, m.Switch.FAN, False))[2:5] == bytes((0xE2, 1, 2))
    assert m.encode_request(m.Unlock(1))[2:6] == bytes((0xFB, 2, 0xFF, 0xFF))
    assert m.encode_request(m.AntiTheftLock(1, m.AntiTheft.PHYSICAL))[2:6] == bytes((0xFC, 2, 0, 2))
    assert m.encode_request(m.WriteCapacity(1, m.Capacity.NOMINAL, 0x1234))[2:7] == bytes(
        (0xDB, 3, 0x13, 0x12, 0x34)
    )
    assert m.encode_request(m.SetCellCount(1, 16))[2:6] == bytes((0x92, 2, 2, 16))
    sn = m.encode_request(m.WriteSerialNumber(1, "AB"))
    assert sn[2:8] == bytes((0xDC, 4, 0x01)) + b"AB^"
    assert m.encode_request(m.WriteStorageValue(1, m.StorageSub.WRITE_INTERVAL, 60))[2:7] == bytes(
        (0xD0, 3, 0x11, 0, 60)
    )
    assert m.encode_request(m.WriteCounter(1, m.Counter.OVER_VOLTAGE, 5))[2:6] == bytes((0x98, 2, 0, 5))
    assert m.encode_request(m.Calibrate(1, m.CalibrationPoint.CHARGE_1, 1000))[2:4] == bytes((0x84, 2))


def test_inferred_table_write_needs_an_explicit_opt_in() -> None:
    req = m.WriteParamTable(1, m.ParamTable.PROTECTION, (m.ParamRecord(0, 3650),))
    with pytest.raises(LocalProtocolError, match=r"not publicly documented.*allow_inferred=True"):
        m.encode_request(req)
    raw = m.encode_request(req, allow_inferred=True)
    assert raw[2] == m.Cmd.WRITE_PARAMS_INFERRED and raw[4:9] == bytes((0xE0, 0x00, 0x02, 0x0E, 0x42))


@pytest.mark.parametrize(
    "bad",
    [
        m.ReadRequest(16 * 16, m.Cmd.REALTIME),
        m.ReadRequest(1, m.Cmd.MOS),
        m.WriteSerialNumber(1, "x" * 36),
        m.WriteSerialNumber(1, "a^b"),
        m.WriteSerialNumber(1, "naïve"),
        m.WriteHeaterThreshold(1, "sideways", 5),
        m.WriteHeaterThreshold(1, "on", -51),
        m.WriteClock(1, datetime(1999, 1, 1)),
        m.SetCellCount(1, 0),
        m.WriteCounter(1, m.Counter.CYCLES, 70000),
        m.ReadCounter(1, m.Counter.CYCLES),
        m.StorageRead(1, m.StorageSub.WRITE_INTERVAL),
    ],
    ids=repr,
)
def test_bad_requests_raise_local_protocol_error(bad: m.Request) -> None:
    with pytest.raises(LocalProtocolError):
        m.encode_request(bad)


def _record(code: int, minute: int) -> m.HistoryEntry:
    return m.HistoryEntry(
        event_code=code,
        cell_count=16,
        cell_voltages_v=tuple(3.29 + i / 1000 for i in range(16)),
        temperatures_c=(27.0, 27.0, 28.0, 27.0, 26.0, 30.0),
        current_a=-12.5,
        voltage_v=52.69,
        soc_pct=51,
        when=datetime(2024, 5, 9, 14, minute, 51),
    )


ALL_RESPONSES: list[tuple[m.Response, m.Request | None]] = [
    (m.Ack(0xD3, 0), None),
    (m.Ack(0xCF, 6), None),
    (m.TextInfo(0x33, "HY-PT003-E200LT55-V1.0.3"), None),
    (m.TextInfo(0x42, "TBI23090400189"), None),
    (
        m.ParamTableData((m.ParamRecord(0, 3700), m.ParamRecord(1, 1000)), m.ParamTable.PROTECTION),
        m.ReadParamTable(1, m.ParamTable.PROTECTION),
    ),
    (m.ClockData(datetime(2024, 5, 9, 11, 29, 38)), None),
    (m.HeaterThreshold(0xF1, 5, b"\x00\x00"), None),
    (m.HeaterThreshold(0xF3, 15, b"\x01\x02"), None),
    (m.SerialNumber("BASEN-TEST1"), None),
    (m.BoardInfo(b"\x06\x01\x02\x03"), m.ReadBoardInfo(1)),
    (m.CounterValue(m.Counter.OVER_CURRENT, 70000), None),
    (m.StorageTime("start", datetime(2024, 4, 8, 19, 13, 51)), None),
    (m.StorageTime("end", datetime(2024, 5, 9, 14, 20, 51)), None),
    (m.StorageValue(m.StorageSub.READ_INTERVAL, 60), None),
    (m.StorageValue(m.StorageSub.READ_RECORDING_SPEED, 2), None),
    (m.RecordCount(35), None),
    (
        m.HistoryFrame((_record(16, 20), _record(36, 21), _record(37 + 127, 22), _record(9, 23)), marker=1),
        None,
    ),
    (m.HistoryEnd(), None),
    (m.RawData(0x06, b"\x00\x01\x02\x03"), None),
]


@pytest.mark.parametrize(("resp", "request_"), ALL_RESPONSES, ids=lambda r: type(r).__name__)
def test_every_response_round_trips(resp: m.Response, request_: m.Request | None) -> None:
    raw = m.encode_response(5, resp)
    frame = parse_frame(raw)
    assert frame.address == 5
    assert m.parse_response(frame, request_) == resp


def test_history_record_layout_and_events() -> None:
    rec = _record(16, 20)
    raw = m.encode_record(rec)
    assert len(raw) == 52
    assert raw[0] == 16 and raw[1] == 16 and raw[34:40] == bytes((77, 77, 78, 77, 76, 80))
    assert raw[40:42] == (30000 + 1250).to_bytes(2, "big") and raw[42:44] == (52690).to_bytes(2, "big")
    assert raw[44] == 51 and raw[45:51] == bytes((24, 5, 9, 14, 20, 51))
    assert m.event_name(16) == "Timing record"
    assert m.event_name(36) == "Start system" and m.event_name(37) == "Exit system"
    assert m.event_name(1 + 127) == "Cell OV protection released"
    assert m.event_name(20) == "Alarm event 20"
    assert m.event_name(200) == "Event 200"
    frame = parse_frame(m.encode_response(1, m.HistoryFrame((rec,), marker=0)))
    assert frame.raw[6] == 1 and frame.raw[7:59] == raw  # count at offset 6, records from offset 7


def test_end_of_data_frame_shape() -> None:
    raw = m.encode_history_end(1)
    assert raw == m.encode_response(1, m.HistoryEnd())
    assert m.encode_history_frame(1, (_record(16, 1),)) == m.encode_response(
        1, m.HistoryFrame((_record(16, 1),))
    )
    assert raw[3] == 0x0D and raw[6:15] == bytes(9)


def test_param_table_response_errors() -> None:
    bad_size = build_frame(1, 0x43, bytes((0, 3, 0x0E, 0x74)))
    with pytest.raises(RemoteProtocolError, match="size byte 0x03"):
        m.parse_response(parse_frame(bad_size), m.ReadParamTable(1, m.ParamTable.PROTECTION))
    with pytest.raises(RemoteProtocolError, match="not a multiple of 4"):
        m.parse_response(parse_frame(build_frame(1, 0x43, bytes(6))), None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (bytes.fromhex("7E 01 01 00 FF 0D"), "checksum mismatch: frame has 0xFF, computed 0xFE"),
        (bytes.fromhex("7E 01 01 00 FE 0A"), "bad end byte 0x0A"),
        (
            bytes.fromhex("7E 01 01 02 FE 0D"),
            "wrong length: LEN 0x02 announces 2 data bytes (8-byte frame), got 6",
        ),
        (bytes.fromhex("7E 01 01 00 FE 0D 00"), "wrong length"),
        (bytes.fromhex("7F 01 01 00 FE 0D"), "bad start byte 0x7F"),
        (bytes.fromhex("7E 01 01"), "frame too short"),
    ],
)
def test_parse_frame_errors_are_clear(raw: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_frame(raw)
    assert message in str(info.value)


def test_unknown_command_and_misdirected_frames() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown command 0x77"):
        m.parse_response(parse_frame(build_frame(1, 0x77, b"\x01\x02")))
    with pytest.raises(RemoteProtocolError, match="unknown command 0x77"):
        m.parse_request(parse_frame(build_frame(1, 0x77, b"")))
    with pytest.raises(RemoteProtocolError, match="is a request"):
        m.parse_response(parse_frame(EXAMPLES["realtime_request_adr1"]))
    with pytest.raises(RemoteProtocolError, match="not a request"):
        m.parse_request(parse_frame(BASENGREEN))
    with pytest.raises(RemoteProtocolError, match="lacks group"):
        decode_realtime(bytes((1, 1, 0x0D, 0x00)))
    with pytest.raises(RemoteProtocolError, match="group 0x05 announces 6 values"):
        decode_realtime(bytes((5, 6, 0, 0)))


def test_zero_and_start_bytes_inside_data_do_not_cut_frames() -> None:
    # 0x0D and 0x7E everywhere in the payload; the checksum happens to be 0x0D for some of them.
    payloads = [bytes((0x0D, 0x7E, 0x0D, 0x0D)), bytes((0x7E,)) * 20, bytes((0x0D,)) * 9]
    for p in payloads:
        raw = build_frame(1, 0x01, p)
        dec = TianpowerDecoder()
        dec.feed(raw + raw)
        assert [f.raw for f in dec.frames()] == [raw, raw]


def test_table_read_request_is_recognised_before_its_len() -> None:
    raw = build_table_read(3, 0xE0)
    dec = TianpowerDecoder()
    dec.feed(raw)
    frame = dec.next_frame()
    assert frame is not None and frame.is_request and frame.raw == raw


def test_echo_then_response_decode_in_order() -> None:
    dec = TianpowerDecoder()
    dec.feed(EXAMPLES["realtime_request_adr1"] + BASENGREEN)
    frames = list(dec.frames())
    assert [getattr(f, "is_request", None) for f in frames] == [True, False]


def test_status_flags_by_name_and_kind() -> None:
    status = status_bytes("Charging", "CHG_MOS_Off", "Short_Circuit_Prot", "CELL_OV_Alarm", "Startup_Failed")
    rt = RealtimeData(
        cells=(CellReading(3.3, balancing=True), CellReading(3.31, over_voltage=True)),
        current_a=12.34,
        soc_pct=50.0,
        full_capacity_ah=100.0,
        temperatures=(TempReading(0, 20.0), TempReading(0x40, 30.0)),
        status=status,
        cycles=3,
        voltage_v=6.61,
        soh_pct=99.5,
        extra_protection=extra_protection_word("Full_Cha_Prot"),
    )
    assert set(rt.flag_names(FlagKind.PROTECTION)) == {"Short_Circuit_Prot", "Full_Cha_Prot"}
    assert rt.flag_names(FlagKind.ALARM) == ("CELL_OV_Alarm",)
    assert rt.flag_names(FlagKind.FAULT) == ("Startup_Failed",)
    assert set(rt.flag_names(FlagKind.STATE)) == {"Charging", "CHG_MOS_Off"}
    assert not rt.charge_mos_on and rt.discharge_mos_on
    assert rt.balancing_cells == (1,)
    assert rt.unknown_bits() == ()
    assert decode_realtime(encode_realtime_data(rt)) == rt
    odd = RealtimeData(
        **{**{f: getattr(rt, f) for f in rt.__dataclass_fields__}, "status": bytes(6) + b"\x08" + bytes(3)}
    )
    assert odd.unknown_bits() == ("Status_B6_Bit3",)
    assert FLAGS_BY_NAME["536_COM_Timeout"].kind is FlagKind.ALARM


def test_current_sign_positive_is_charging() -> None:
    # Shinwa spec example: raw 30101 -> -1.01 A (discharging)
    data = bytearray(encode_realtime_data(decode_realtime(parse_frame(BASENGREEN).data)))
    idx = data.index(bytes((0x02, 0x01, 0x75, 0x30)))
    data[idx + 2 : idx + 4] = (30101).to_bytes(2, "big")
    assert decode_realtime(bytes(data)).current_a == -1.01


cells_st = st.lists(
    st.builds(
        CellReading,
        voltage_v=st.integers(0, 0x1FFF).map(lambda mv: mv / 1000),
        balancing=st.booleans(),
        over_voltage=st.booleans(),
        under_voltage=st.booleans(),
    ),
    min_size=1,
    max_size=32,
)
realtime_st = st.builds(
    RealtimeData,
    cells=cells_st.map(tuple),
    current_a=st.integers(0, 0xFFFF).map(lambda raw: round((30000 - raw) / 100, 2)),
    soc_pct=st.integers(0, 10000).map(lambda r: r / 100),
    full_capacity_ah=st.integers(0, 0xFFFF).map(lambda r: r / 100),
    temperatures=st.lists(
        st.builds(
            TempReading, tag=st.sampled_from([0, 0x20, 0x40, 0x80]), value_c=st.integers(-50, 205).map(float)
        ),
        max_size=8,
    ).map(tuple),
    status=st.binary(min_size=10, max_size=10),
    cycles=st.integers(0, 0xFFFF),
    voltage_v=st.integers(0, 0xFFFF).map(lambda r: r / 100),
    soh_pct=st.integers(0, 10000).map(lambda r: r / 100),
    extra_protection=st.none() | st.integers(0, 0xFFFF),
    counters=st.lists(st.integers(0, 0xFFFFFFFF), max_size=6).map(
        lambda vals: tuple(CounterGroup(0x0B + i, (v,)) for i, v in enumerate(vals))
    ),
)


@given(realtime_st)
def test_realtime_round_trip_property(rt: RealtimeData) -> None:
    data = encode_realtime_data(rt)
    if len(data) > 255:
        with pytest.raises(LocalProtocolError):
            m.encode_realtime(1, rt)
        return
    assert m.parse_response(parse_frame(m.encode_realtime(1, rt))) == rt


@given(
    command=st.sampled_from(sorted(m.COMMAND_TITLES)),
    data=st.binary(max_size=255),
    address=st.integers(0, 255),
)
def test_fuzz_valid_frames_with_arbitrary_payloads(command: int, data: bytes, address: int) -> None:
    raw = build_frame(address, command, data)
    frame = parse_frame(raw)
    try:
        out = describe(raw)
    except RemoteProtocolError:
        return
    assert out["address"] == address and out["direction"] == ("request" if frame.is_request else "response")


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=60)), min_size=1, max_size=6))
def test_decoder_finds_every_frame_between_garbage_without_start_bytes(
    parts: list[tuple[bytes, bytes]],
) -> None:
    dec = TianpowerDecoder()
    sent = []
    for junk, payload in parts:
        clean = bytes(b for b in junk if b not in (0x7E, 0x7C))
        raw = build_frame(1, 0x01, payload)
        sent.append(raw)
        dec.feed(clean + raw)
    got = [f.raw for f in dec.frames() if not isinstance(f, RemoteProtocolError)]
    assert got == sent


datetimes_st = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2255, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)
entry_st = st.builds(
    m.HistoryEntry,
    event_code=st.integers(0, 255),
    cell_count=st.integers(0, 255),
    cell_voltages_v=st.lists(st.integers(0, 0x1FFF).map(lambda mv: mv / 1000), min_size=16, max_size=16).map(
        tuple
    ),
    temperatures_c=st.lists(st.integers(-50, 205).map(float), min_size=6, max_size=6).map(tuple),
    current_a=st.integers(0, 0xFFFF).map(lambda raw: round((30000 - raw) / 100, 2)),
    voltage_v=st.integers(0, 0xFFFF).map(lambda raw: raw / 1000),
    soc_pct=st.integers(0, 255),
    when=datetimes_st,
    pad=st.integers(0, 255),
)


@given(st.lists(entry_st, min_size=1, max_size=4), st.integers(0, 255))
def test_history_frame_round_trip_property(entries: list[m.HistoryEntry], marker: int) -> None:
    resp = m.HistoryFrame(tuple(entries), marker=marker)
    assert m.parse_response(parse_frame(m.encode_response(1, resp))) == resp


@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF)), max_size=60),
    st.sampled_from(list(m.ParamTable)),
)
def test_param_table_round_trip_property(pairs: list[tuple[int, int]], table: m.ParamTable) -> None:
    records = tuple(m.ParamRecord(r, v) for r, v in pairs)
    resp = m.ParamTableData(records, table)
    raw = m.encode_response(1, resp)
    assert m.parse_response(parse_frame(raw), m.ReadParamTable(1, table)) == resp
    if records:
        req = m.WriteParamTable(1, table, records)
        assert m.parse_request(parse_frame(m.encode_request(req, allow_inferred=True))) == req


@given(datetimes_st, st.integers(0, 15))
def test_clock_round_trips_property(when: datetime, address: int) -> None:
    req = m.WriteClock(address, when)
    assert m.parse_request(parse_frame(m.encode_request(req))) == req
    assert m.parse_response(parse_frame(m.encode_response(address, m.ClockData(when)))) == m.ClockData(when)


def test_every_flag_name_is_documented() -> None:
    doc = (REPO / "docs" / "protocols.md").read_text(encoding="utf-8")
    missing = [f.name for f in ALL_FLAGS if f"`{f.name}`" not in doc]
    assert missing == []
