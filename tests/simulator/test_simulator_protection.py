"""Protections fire at the configured threshold after the configured delay and release at the stop
threshold, visible in the status flags, the MOS state and the history records (both families)."""

from __future__ import annotations

from protocol.bms.pace import commands as pc
from protocol.bms.pace import values as pv
from protocol.bms.pace.frame import parse_frame as pace_parse
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import parse_frame as tp_parse
from protocol.bms.tianpower.realtime import FlagKind
from simulator import Simulator, SimulatorOptions
from simulator.records import event_of_code


def _sim(protocol: str = "tianpower", **kw: object) -> Simulator:
    opts = {"protocol": protocol, "packs": 1, "seed": 3, "profile": "idle", "start_epoch_s": 1.78e9, **kw}
    return Simulator(SimulatorOptions(**opts))  # type: ignore[arg-type]


async def _rt(sim: Simulator) -> m.RealtimeData:
    raw = await sim.handle(m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME)))
    rt = m.parse_response(tp_parse(raw))
    assert isinstance(rt, m.RealtimeData)
    return rt


async def _records(sim: Simulator) -> list[m.HistoryEntry]:
    """Every stored record through the wire, newest first."""
    raw = await sim.handle(m.encode_request(m.StorageRead(1, m.StorageSub.READ_RECORD_COUNT)))
    count = m.parse_response(tp_parse(raw))
    assert isinstance(count, m.RecordCount)
    out: list[m.HistoryEntry] = []
    for _ in range(count.count):
        frame = m.parse_response(
            tp_parse(await sim.handle(m.encode_request(m.StorageRead(1, m.StorageSub.READ_RECORDS))))
        )
        assert isinstance(frame, m.HistoryFrame)
        out.extend(frame.records)
    return out


async def test_cell_over_voltage_fires_after_delay_and_releases_at_stop() -> None:
    sim = _sim()
    params = sim.truth(1).parameters
    assert (params["CELL_OV_Start"], params["CELL_OV_Delay"], params["CELL_OV_Stop"]) == (3.7, 1000.0, 3.38)
    sim.set_cell_voltage(1, 3, 3.69)  # just below the start threshold: nothing, however long
    sim.advance(5.0)
    assert "cell_ov" not in sim.truth(1).protections
    sim.set_cell_voltage(1, 3, 3.70)  # at the threshold: the delay starts
    sim.advance(0.9)
    rt = await _rt(sim)
    assert "Over_Voltage_Prot" not in rt.flag_names() and rt.charge_mos_on
    sim.advance(0.2)  # 1.1 s > CELL_OV_Delay
    rt = await _rt(sim)
    assert {"Over_Voltage_Prot", "CELL_OV_Prot", "CHG_MOS_Off"} <= set(rt.flag_names())
    assert not rt.charge_mos_on and rt.discharge_mos_on
    assert rt.cells[2].over_voltage and not rt.cells[0].over_voltage
    assert sim.truth(1).protection_counters["over_voltage"] == 1
    records = await _records(sim)
    assert records[0].event_code == 1 and event_of_code(records[0].event_code) == "protection:cell_ov"
    assert records[0].cells_v[2] == 3.7
    # Below start but above stop: still protected.
    sim.set_cell_voltage(1, 3, 3.50)
    sim.advance(3.0)
    assert "cell_ov" in sim.truth(1).protections
    # At the stop threshold: released, charge MOS back on, a release record.
    sim.set_cell_voltage(1, 3, 3.38)
    sim.advance(0.1)
    rt = await _rt(sim)
    assert "Over_Voltage_Prot" not in rt.flag_names() and rt.charge_mos_on
    records = await _records(sim)
    codes = [r.event_code for r in records]  # newest first
    assert 1 + 127 in codes and codes.index(1 + 127) < codes.index(1)
    assert records[codes.index(128)].event == "Cell OV protection released"
    counter = m.parse_response(
        tp_parse(await sim.handle(m.encode_request(m.ReadCounter(1, m.Counter.OVER_VOLTAGE))))
    )
    assert counter == m.CounterValue(m.Counter.OVER_VOLTAGE, 1)


async def test_written_threshold_and_delay_are_used() -> None:
    sim = _sim()
    table = sim.pack(1).family.table  # type: ignore[attr-defined]
    recs = (
        m.ParamRecord(0x03, table.get("CELL_UV_Start").to_wire(3.0)),
        m.ParamRecord(0x04, table.get("CELL_UV_Delay").to_wire(3000)),
        m.ParamRecord(0x05, table.get("CELL_UV_Stop").to_wire(3.1)),
    )
    raw = await sim.handle(
        m.encode_request(m.WriteParamTable(1, m.ParamTable.PROTECTION, recs), allow_inferred=True)
    )
    assert m.parse_response(tp_parse(raw)) == m.Ack(m.Cmd.WRITE_PARAMS_INFERRED, 0)
    sim.set_cell_voltage(1, 7, 3.0)
    sim.advance(2.9)
    assert "cell_uv" not in sim.truth(1).protections
    sim.advance(0.2)
    truth = sim.truth(1)
    assert "cell_uv" in truth.protections and not truth.discharge_mos_on and truth.charge_mos_on
    rt = await _rt(sim)
    assert {"Under_Voltage_Prot", "CELL_UV_Prot", "DSG_MOS_Off"} <= set(rt.flag_names())
    # A discharge request now gets no current: the MOS is off.
    sim.set_current(1, -30.0)
    sim.advance(1.0)
    assert sim.truth(1).current_a == 0.0
    sim.set_cell_voltage(1, 7, 3.1)
    sim.advance(0.1)
    assert sim.truth(1).discharge_mos_on
    sim.advance(1.0)
    assert sim.truth(1).current_a == -30.0


async def test_over_current_trips_and_recovers_after_the_recovery_time() -> None:
    sim = _sim()
    sim.set_current(1, 120.0)  # above CHG_OC1_Start 110 A (delay 5000 ms) and the 105 A alarm
    sim.advance(1.2, max_step_s=0.1)
    assert "chg_oc" in sim.truth(1).alarms and "chg_oc1" not in sim.truth(1).protections
    sim.advance(4.0)
    truth = sim.truth(1)
    assert "chg_oc1" in truth.protections and not truth.charge_mos_on and truth.current_a == 0.0
    rt = await _rt(sim)
    assert {"Over_Current_Prot", "CHG_MOS_Off"} <= set(rt.flag_names())
    sim.set_current(1, 20.0)
    sim.advance(31.0)  # over-current protections release after their recovery time
    truth = sim.truth(1)
    assert "chg_oc1" not in truth.protections and truth.charge_mos_on
    events = [event_of_code(r.event_code) for r in await _records(sim)]
    assert "protection:chg_oc1" in events and "released:protection:chg_oc1" in events
    assert "alarm:chg_oc" in events


async def test_temperature_protection_and_alarm() -> None:
    sim = _sim()
    sim.set_temperatures(1, 66.0)  # CHG_OT_START 65 °C (4000 ms), alarm at 60 °C
    sim.advance(3.5)
    assert "chg_ot" not in sim.truth(1).protections
    sim.advance(1.0)
    truth = sim.truth(1)
    assert "chg_ot" in truth.protections and "chg_ot" in truth.alarms and not truth.charge_mos_on
    rt = await _rt(sim)
    assert {"CHG_OT_Prot", "CHG_OT_Alarm"} <= set(rt.flag_names())
    sim.set_temperatures(1, 56.0)  # above CHG_OT_STOP 55: still on
    sim.advance(2.0)
    assert "chg_ot" in sim.truth(1).protections
    sim.set_temperatures(1, 54.0)
    sim.advance(0.5)
    assert "chg_ot" not in sim.truth(1).protections and sim.truth(1).charge_mos_on


async def test_pace_protection_in_status_and_mos() -> None:
    sim = _sim("pace")
    sim.set_cell_voltage(1, 1, 3.71)  # Cell OV Protect 3.70 V, delay 1000 ms; alarm 3.60 V
    sim.advance(0.5)
    status = pv.decode_status(pace_parse(await sim.handle(pc.status_request(1))).info).packs[0]
    assert not status.flags().protections and status.charge_mos_on
    sim.advance(0.6)
    status = pv.decode_status(pace_parse(await sim.handle(pc.status_request(1))).info).packs[0]
    flags = status.flags()
    assert "Cell OV protection" in flags.protections and "Cell OV alarm" in flags.alarms
    assert not status.charge_mos_on and status.discharge_mos_on
    assert status.cell_warnings[0] == 2
    sim.set_cell_voltage(1, 1, 3.38)
    sim.advance(0.1)
    status = pv.decode_status(pace_parse(await sim.handle(pc.status_request(1))).info).packs[0]
    assert "Cell OV protection" not in status.flags().protections and status.charge_mos_on
    # Events are in the history (newest first): release, then the protection.
    codes = []
    for i in range(sim.truth(1).history_count):
        rec = pc.decode_history(pace_parse(await sim.handle(pc.history_request(1, i))).info)
        assert rec is not None
        codes.append(rec.tail[0])
    assert 128 in codes and 1 in codes and codes.index(128) < codes.index(1)


async def test_short_circuit_trips_at_once_and_recovers() -> None:
    sim = _sim()
    sim.set_current(1, -50.0)
    sim.advance(1.0)
    sim.short_circuit(1)
    truth = sim.truth(1)
    assert "short_circuit" in truth.protections and not truth.discharge_mos_on
    assert truth.protection_counters["short_circuit"] == 1
    rt = await _rt(sim)
    assert "Short_Circuit_Prot" in rt.flag_names() and not rt.discharge_mos_on
    assert "Short_Circuit_Prot" in sim.wire_flags(1).protections
    assert (await _records(sim))[0].event_code == 9
    sim.advance(5.0)
    assert sim.truth(1).current_a == 0.0
    sim.advance(30.0)
    truth = sim.truth(1)
    assert "short_circuit" not in truth.protections and truth.discharge_mos_on and truth.current_a == -50.0


async def test_wire_flags_match_what_the_codec_decodes() -> None:
    for protocol in ("tianpower", "pace"):
        sim = _sim(protocol)
        sim.set_cell_voltage(1, 2, 2.4)  # below both families' cell UV protection
        sim.advance(3.0)
        flags = sim.wire_flags(1)
        if protocol == "tianpower":
            rt = await _rt(sim)
            assert flags.protections == set(rt.flag_names(FlagKind.PROTECTION))
            assert flags.states == set(rt.flag_names(FlagKind.STATE))
            assert "CELL_UV_Prot" in flags.protections and "DSG_MOS_Off" in flags.states
        else:
            status = pv.decode_status(pace_parse(await sim.handle(pc.status_request(1))).info).packs[0]
            decoded = status.flags()
            assert (flags.protections, flags.alarms, flags.states) == (
                decoded.protections,
                decoded.alarms,
                decoded.states,
            )
            assert "Cell UV protection" in flags.protections
