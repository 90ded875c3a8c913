"""Tianpower / Basengreen simulated packs on the wire: request bytes in, response bytes out.

What it is for: every command of `protocol.bms.tianpower` answered from a `SimPack`, with the
codec's own request parser and response builders, so that what the gateway decodes is exactly the
pack's ground truth. The status bytes, the extra protection word, the cell flags and the history
event codes are set from the pack's protection state machine (mapping tables below); injected
hardware faults (`FaultSpec.hardware`) set their status bits by the codec's flag table.

Choices the reference leaves open, marked *inferred* in docs/simulator.md: the split of history
event codes 17-35 (alarms and the MOS/ambient protections), the meaning of non-zero ACK codes
(YD/T1363: 0x04 unknown command, 0x05 format error, 0x06 invalid data / refused), one record per
history frame, the pack clock kept in local time, and the firmware-upgrade commands 0xA0-0xA4 (ours, see
docs/bootloader.md).

It must never perform I/O and never raise on any request bytes (bad input gets an error ACK or
silence, never an exception out of `respond`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mappings.bms.params import ParameterValueError
from protocol.bms import bootloader as bl
from protocol.bms.base import FrameDecoder
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import TianpowerDecoder, TpFrame, build_frame, parse_frame
from protocol.bms.tianpower.realtime import (
    ALL_FLAGS,
    EXTRA_WORD,
    FLAGS_BY_NAME,
    CellReading,
    CounterGroup,
    FlagKind,
    RealtimeData,
    TempReading,
    extra_protection_word,
    status_bytes,
)
from protocol.bms.tianpower.shapes import BOOT_CODES
from protocol.errors import LocalProtocolError, RemoteProtocolError
from simulator.pack import (
    ANTI_THEFT_COMM,
    Identity,
    PackBank,
    PackTruth,
    ResponderOptions,
    SimPack,
    WireFlags,
)
from simulator.records import epoch_of, event_code, event_of_code, pack_time
from simulator.tp_model import TianpowerModel

if TYPE_CHECKING:
    from simulator.history import SimRecord

ACK_OK = 0x00
ACK_UNKNOWN_COMMAND = 0x04  # YD/T1363 meaning (inferred)
ACK_FORMAT_ERROR = 0x05
ACK_INVALID_DATA = 0x06  # also: the pack refuses the action (e.g. sleep while charging)

TAG_CELL, TAG_AMBIENT, TAG_MOS = 0x00, 0x20, 0x40

# condition -> status flag names (protection); extra-word names go to group 0x0A.
PROTECTION_FLAGS: dict[str, tuple[str, ...]] = {
    "cell_ov": ("Over_Voltage_Prot", "CELL_OV_Prot"),
    "pack_ov": ("Over_Voltage_Prot", "PACK_OV_Prot"),
    "cell_uv": ("Under_Voltage_Prot", "CELL_UV_Prot"),
    "pack_uv": ("Under_Voltage_Prot", "PACK_UV_Prot"),
    "chg_oc1": ("Over_Current_Prot",),
    "chg_oc2": ("Over_Current_Prot",),
    "dsg_oc1": ("Over_Current_Prot",),
    "dsg_oc2": ("Over_Current_Prot",),
    "chg_ot": ("CHG_OT_Prot",),
    "chg_ut": ("CHG_UT_Prot",),
    "dsg_ot": ("DISC_OT_Prot",),
    "dsg_ut": ("DISC_UT_Prot",),
    "mos_ot": ("MOS_OT_Prot",),
    "env_ot": ("ENV_OT_Prot",),
    "env_ut": ("ENV_UT_Prot",),
    "short_circuit": ("Short_Circuit_Prot",),
}
FAULT_FLAGS = tuple(f.name for f in ALL_FLAGS if f.kind is FlagKind.FAULT)  # FaultSpec.hardware
ALARM_FLAGS: dict[str, str] = {
    "cell_ov": "CELL_OV_Alarm",
    "cell_uv": "CELL_UV_Alarm",
    "pack_ov": "PACK_OV_Alarm",
    "pack_uv": "PACK_UV_Alarm",
    "chg_oc": "CHG_OC_Alarm",
    "dsg_oc": "DISC_OC_Alarm",
    "chg_ot": "CHG_OT_Alarm",
    "chg_ut": "CHG_UT_Alarm",
    "dsg_ot": "DISC_OT_Alarm",
    "dsg_ut": "DISC_UT_Alarm",
    "mos_ot": "MOS_OT_Alarm",
    "soc_low": "SOC_Low_Alarm",
    "cell_diff": "Vol_Diff_Alarm",
    "env_ot": "ENV_OT_Alarm",
    "env_ut": "ENV_UT_Alarm",
}


def realtime_of(truth: PackTruth, pack: SimPack) -> RealtimeData:
    """The CMD 0x01 answer for a pack's ground truth."""
    cell_ov = "cell_ov" in truth.protections
    cell_uv = "cell_uv" in truth.protections
    ov_start = pack.params["CELL_OV_Start"]
    uv_start = pack.params["CELL_UV_Start"]
    cells = tuple(
        CellReading(
            voltage_v=v,
            balancing=i in truth.balancing_cells,
            over_voltage=cell_ov and v >= ov_start,
            under_voltage=cell_uv and v <= uv_start,
        )
        for i, v in enumerate(truth.cell_voltages_v, 1)
    )
    temps = (
        *(TempReading(TAG_CELL, t) for t in truth.cell_temperatures_c),
        TempReading(TAG_MOS, truth.mos_temperature_c),
        TempReading(TAG_AMBIENT, truth.ambient_temperature_c),
    )
    flags = status_names(truth)
    ph = pack.physics
    counters = (
        CounterGroup(0x0B, (round(ph.charged_ah_lifetime),)),
        CounterGroup(0x0C, (round(ph.discharged_ah_lifetime),)),
        CounterGroup(0x0D, (round(ph.charged_ah_lifetime + ph.discharged_ah_lifetime) * 10,)),
        CounterGroup(0x0E, (0x00400000,)),
        CounterGroup(0x0F, (round(ph.charged_wh_lifetime),)),
        CounterGroup(0x10, (round(ph.discharged_wh_lifetime),)),
    )
    return RealtimeData(
        cells=cells,
        current_a=truth.current_a,
        soc_pct=truth.soc_pct,
        full_capacity_ah=truth.full_capacity_ah,
        temperatures=temps,
        status=status_bytes(*(f for f in flags if FLAGS_BY_NAME[f].byte != EXTRA_WORD)),
        cycles=truth.cycles,
        voltage_v=truth.voltage_v,
        soh_pct=truth.soh_pct,
        extra_protection=extra_protection_word(*(f for f in flags if FLAGS_BY_NAME[f].byte == EXTRA_WORD)),
        counters=counters,
    )


def status_names(truth: PackTruth) -> frozenset[str]:
    """Every status/extra flag name the pack reports for its truth."""
    names: set[str] = set()
    for key in truth.protections:
        names.update(PROTECTION_FLAGS.get(key, ()))
    names.update(ALARM_FLAGS[k] for k in truth.alarms if k in ALARM_FLAGS)
    names.update(truth.hardware_faults)
    if not truth.charge_mos_on:
        names.add("CHG_MOS_Off")
    if not truth.discharge_mos_on:
        names.add("DSG_MOS_Off")
    if truth.charging:
        names.add("Charging")
    if truth.discharging:
        names.add("Discharging")
    if truth.manual_charge_mos_off:
        names.add("Manual_CHG_MOS_Close")
    if truth.manual_discharge_mos_off:
        names.add("Manual_DSG_MOS_Close")
    if truth.heater_on:
        names.add("Heating_Pad_On")
    if truth.locked:
        names.add("Battery_Locked")
    return frozenset(names)


def record_entry(rec: SimRecord, cells: int) -> m.HistoryEntry:
    slots = list(rec.cell_mv[: m.RECORD_CELLS]) + [0] * (
        m.RECORD_CELLS - min(len(rec.cell_mv), m.RECORD_CELLS)
    )
    return m.HistoryEntry(
        event_code=event_code(rec.event),
        cell_count=cells,
        cell_voltages_v=tuple(mv / 1000.0 for mv in slots),
        temperatures_c=tuple(float(t) for t in rec.temps_c),
        current_a=rec.current_a,
        voltage_v=rec.voltage_mv / 1000.0,
        soc_pct=rec.soc_pct,
        when=pack_time(rec.at_epoch_s),
    )


class TianpowerResponder:
    family = "tianpower"

    @classmethod
    def from_options(cls, options: ResponderOptions) -> TianpowerResponder:
        return cls()

    def __init__(self) -> None:
        self.model = TianpowerModel()
        self._specs = {p.name: p for p in self.model.table}
        self._by_record = {
            (int(p.wire["table"]), int(p.wire["record"])): p.name
            for p in self.model.table
            if "table" in p.wire and "record" in p.wire
        }

    # --- Responder protocol -------------------------------------------------------------------

    def new_decoder(self) -> FrameDecoder:
        return TianpowerDecoder()

    def create_pack(self, address: int, rng: random.Random) -> SimPack:
        serial_no = rng.randrange(10000)
        identity = Identity(
            version="HY-PT003-B200LT55-V1.0.3",
            barcode=f"TBI2309{serial_no:04d}{address:03d}",
            serial=f"BASEN-SIM{address:02d}",
            manufacturer="Basengreen (simulated)",
            model="HY-PT003-B200LT55",
        )
        return SimPack.create(address, self.model, rng, identity)

    def wire_flags(self, sim: PackBank, address: int) -> WireFlags:
        pack = sim.pack(address)
        rt = realtime_of(pack.measure(sim.epoch_s), pack)
        return WireFlags(
            protections=frozenset(rt.flag_names(FlagKind.PROTECTION)),
            alarms=frozenset(rt.flag_names(FlagKind.ALARM)),
            faults=frozenset(rt.flag_names(FlagKind.FAULT)),
            states=frozenset(rt.flag_names(FlagKind.STATE)),
        )

    def fault_flag_names(self) -> tuple[str, ...]:
        return FAULT_FLAGS

    def is_invalid(self, data: bytes) -> bool:
        try:
            parse_frame(data)
        except RemoteProtocolError:
            return True
        return False

    def protected(self, index: int, length: int) -> bool:
        # SOI, LEN and EOI: damage there would merge frames instead of failing the checksum.
        return index in (0, 3, length - 1)

    def respond(self, sim: PackBank, raw: bytes) -> tuple[int | None, bytes]:
        try:
            frame = parse_frame(raw)
        except RemoteProtocolError:
            return None, b""
        address = frame.address
        pack = sim.answering_pack(address)
        if pack is None:
            return address, b""
        op = BOOT_CODES.op(frame.command)
        if op is not None:
            reply = pack.bootloader.handle(op, frame.data)
            sim.dirty = True
            return address, build_frame(address, frame.command, reply, soi=frame.soi)
        if pack.bootloader.mode is bl.Mode.BOOTLOADER:
            return address, b""  # only the bootloader runs: the application stays silent
        try:
            request = m.parse_request(frame)
        except RemoteProtocolError:
            code = ACK_FORMAT_ERROR if frame.command in m.COMMAND_TITLES else ACK_UNKNOWN_COMMAND
            return address, m.encode_ack(address, frame.command, code, soi=frame.soi)
        try:
            resp = self._answer(sim, pack, request, frame)
        except (LocalProtocolError, ValueError, KeyError):
            resp = m.Ack(frame.command, ACK_INVALID_DATA)
        if resp is None:
            return address, b""
        return address, m.encode_response(address, resp, soi=frame.soi)

    # --- commands ---------------------------------------------------------------------------------

    def _ack(self, frame: TpFrame, ok: bool = True) -> m.Ack:
        return m.Ack(frame.command, ACK_OK if ok else ACK_INVALID_DATA)

    def _answer(self, sim: PackBank, pack: SimPack, req: m.Request, frame: TpFrame) -> m.Response | None:
        match req:
            case m.ReadRequest(command=cmd):
                return self._read(sim, pack, cmd, frame)
            case m.ReadParamTable(table=table):
                return m.ParamTableData(self._table_records(pack, int(table)))
            case m.WriteParamTable(table=table, records=records):
                return self._ack(frame, self._write_params(sim, pack, int(table), records))
            case m.WriteClock(when=when):
                pack.clock_offset_s = epoch_of(when) - sim.epoch_s
                sim.dirty = True
                return self._ack(frame)
            case m.MosControl(action=action):
                charge = action in (m.MosAction.CHARGE_ON, m.MosAction.CHARGE_OFF)
                on = action in (m.MosAction.CHARGE_ON, m.MosAction.DISCHARGE_ON)
                return self._ack(frame, pack.set_mos(charge, on))
            case m.SwitchControl(switch=switch, on=on):
                if switch is m.Switch.HEATER:
                    pack.heater_manual = on
                    pack.physics.heater_on = on
                elif switch is m.Switch.FAN:
                    pack.fan_on = on
                elif switch is m.Switch.BUZZER:
                    pack.buzzer_on = on
                else:
                    pack.sound_light_on = on
                return self._ack(frame)
            case m.ForcedSleep():
                return self._ack(frame, pack.force_sleep())
            case m.WriteHeaterThreshold(which=which, temperature_c=t):
                if not -40 <= t <= 60:
                    return self._ack(frame, False)
                if which == "on":
                    pack.heater_on_c = float(t)
                else:
                    pack.heater_off_c = float(t)
                sim.dirty = True
                return self._ack(frame)
            case m.ReadBoardInfo():
                return m.BoardInfo(f"{pack.identity.model} {len(pack.physics.cells)}S".encode("ascii"))
            case m.ReadSerialNumber():
                return m.SerialNumber(pack.identity.serial)
            case m.WriteSerialNumber(serial=sn):
                m.encode_serial(sn)  # validates (LocalProtocolError -> invalid data)
                pack.identity = Identity(pack.identity.version, pack.identity.barcode, sn,
                                         pack.identity.manufacturer, pack.identity.model)  # fmt: skip
                sim.dirty = True
                return self._ack(frame)
            case m.AntiTheftLock(mask=mask):
                pack.anti_theft_mask = int(mask)
                if not int(mask) & ANTI_THEFT_COMM:
                    pack.locked = False
                sim.dirty = True
                return self._ack(frame)
            case m.Unlock():
                pack.unlock()
                sim.dirty = True
                return self._ack(frame)
            case m.StorageRead(sub=sub):
                return self._storage_read(sim, pack, sub)
            case m.WriteStorageTime(which=which, when=when):
                if which == "start":
                    pack.history.start_epoch_s = int(epoch_of(when))
                else:
                    pack.history.end_epoch_s = int(epoch_of(when))
                sim.dirty = True
                return self._ack(frame)
            case m.WriteStorageValue(sub=sub, value=value):
                if sub is m.StorageSub.WRITE_INTERVAL:
                    if value < 1:
                        return self._ack(frame, False)
                    pack.history.interval_s = value * 60
                else:
                    pack.extra["recording_speed"] = value
                sim.dirty = True
                return self._ack(frame)
            case m.ReadCounter(counter=counter):
                return m.CounterValue(counter, pack.counters.get(counter.value, 0))
            case m.WriteCounter(counter=counter, value=value):
                if counter is m.Counter.CYCLES:
                    pack.physics.cycles = value
                else:
                    pack.counters[counter.value] = value
                sim.dirty = True
                return self._ack(frame)
            case m.WriteCapacity(capacity=cap, raw=raw):
                ah = raw * m.CAPACITY_SCALE_AH
                if cap is m.Capacity.FULL:
                    pack.set_capacity(full_ah=ah)
                elif cap is m.Capacity.REMAINING:
                    pack.set_capacity(remaining_ah=ah)
                else:
                    pack.set_capacity(nominal_ah=ah)
                sim.dirty = True
                return self._ack(frame)
            case m.Calibrate(point=point, raw=raw):
                pack.extra[f"calibration_{point.name.lower()}"] = raw
                return self._ack(frame)
            case m.SetCellCount(cells=cells):
                pack.extra["cell_count_after_reset"] = cells  # no ACK; takes effect after a reset
                return None
        return m.Ack(frame.command, ACK_UNKNOWN_COMMAND)

    def _read(self, sim: PackBank, pack: SimPack, cmd: m.Cmd, frame: TpFrame) -> m.Response:
        if cmd is m.Cmd.REALTIME:
            if pack.hardware_faults:
                sim.count("hardware_fault_responses")
            return realtime_of(pack.measure(sim.epoch_s), pack)
        if cmd is m.Cmd.VERSION:
            return m.TextInfo(cmd, pack.version)
        if cmd is m.Cmd.BARCODE:
            return m.TextInfo(cmd, pack.identity.barcode)
        if cmd is m.Cmd.READ_CLOCK:
            return m.ClockData(pack_time(pack.clock(sim.epoch_s)))
        if cmd is m.Cmd.READ_HEATER_ON:
            return m.HeaterThreshold(cmd, round(pack.heater_on_c))
        if cmd is m.Cmd.READ_HEATER_OFF:
            return m.HeaterThreshold(cmd, round(pack.heater_off_c))
        return m.Ack(frame.command, ACK_UNKNOWN_COMMAND)

    def _table_records(self, pack: SimPack, table: int) -> tuple[m.ParamRecord, ...]:
        out = []
        for (tbl, record), name in sorted(self._by_record.items()):
            if tbl == table:
                out.append(m.ParamRecord(record, self._specs[name].to_wire(pack.params[name])))
        return tuple(out)

    def _write_params(
        self, sim: PackBank, pack: SimPack, table: int, records: tuple[m.ParamRecord, ...]
    ) -> bool:
        values: dict[str, float] = {}
        for r in records:
            name = self._by_record.get((table, r.record))
            if name is None:
                return False
            values[name] = self._specs[name].from_wire(r.raw)
        try:
            pack.write_parameters(values)
        except ParameterValueError:
            return False
        sim.dirty = True
        return True

    def _storage_read(self, sim: PackBank, pack: SimPack, sub: m.StorageSub) -> m.Response:
        hist = pack.history
        if sub in (m.StorageSub.READ_START_TIME, m.StorageSub.READ_END_TIME):
            start = sub is m.StorageSub.READ_START_TIME
            configured = hist.start_epoch_s if start else hist.end_epoch_s
            if configured is None:
                rec = (
                    hist.records[0]
                    if start and hist.records
                    else (hist.records[-1] if hist.records else None)
                )
                configured = rec.at_epoch_s if rec else pack.clock(sim.epoch_s)
            return m.StorageTime("start" if start else "end", pack_time(configured))
        if sub in (m.StorageSub.READ_INTERVAL, m.StorageSub.READ_INTERVAL_OLD):
            return m.StorageValue(sub, hist.interval_s // 60)
        if sub is m.StorageSub.READ_RECORDING_SPEED:
            return m.StorageValue(sub, int(pack.extra.get("recording_speed", 1)))
        if sub is m.StorageSub.READ_RECORD_COUNT:
            hist.rewind()
            return m.RecordCount(hist.count)
        rec = hist.read_next()
        if rec is None:
            return m.HistoryEnd()
        return m.HistoryFrame((record_entry(rec, len(pack.physics.cells)),))


def decoded_history_event(entry: m.HistoryEntry) -> str:
    """Our event key of a decoded record (tests compare it with the pack's store)."""
    return event_of_code(entry.event_code)
