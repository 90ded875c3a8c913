"""The Tianpower / Basengreen driver: codec results -> model objects, through the bus owner only.

Builds requests with `protocol.bms.tianpower`, hands them to a `BusClient`, checks the answer
(address, command, not our own echo), and converts it: realtime data to `Telemetry`, the two
parameter tables through `mappings/bms/tianpower.toml` to a `ParameterSet`, history records to
`HistoryRecord`. Writes and controls answer with an ACK; a non-zero code becomes `DeviceError`.

Guard rails: parameter-table writes and the capacity write unit are *inferred* (not publicly
documented) and are refused unless the caller passes `allow_inferred=True`; factory commands (cell
count, calibration) are refused unless the caller passes `confirm_dangerous=True`.

This module never touches a transport and never sleeps; the bus owner does the waiting.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, TypeVar

from gateway.core.model import (
    ClockReading,
    PackIdentity,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.south.drivers.base import (
    BusClient,
    Control,
    DeviceError,
    Driver,
    HistoryReach,
    HistoryRecord,
    NoResponse,
    ParameterWrite,
    Priority,
    Unsupported,
)
from mappings.bms.params import ParameterTable, ParamSpec, load_table
from protocol.bms.base import Frame
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import SOI, TianpowerDecoder, TpFrame
from protocol.bms.tianpower.realtime import RealtimeData, TempSensor
from protocol.errors import RemoteProtocolError

log = logging.getLogger(__name__)

R = TypeVar("R")

_ROLE = {TempSensor.CELL: TempRole.CELL, TempSensor.MOS: TempRole.MOS, TempSensor.AMBIENT: TempRole.AMBIENT}


# Controls that are plain on/off switch commands.
_SWITCHES = {
    Control.HEATER: m.Switch.HEATER,
    Control.FAN: m.Switch.FAN,
    Control.BUZZER: m.Switch.BUZZER,
    Control.SOUND_LIGHT_ALARM: m.Switch.SOUND_LIGHT,
}


class MalformedResponse(DeviceError):
    """The pack answered with a valid frame whose payload does not decode (code -1)."""

    def __init__(self, message: str) -> None:
        super().__init__(-1, message)


class InferredRefused(Unsupported):
    """An undocumented (inferred) encoding was needed and the caller did not opt in."""


class DangerousRefused(Unsupported):
    """A factory command was asked for without `confirm_dangerous=True`."""


def telemetry_from(rt: RealtimeData, measured_at: float) -> Telemetry:
    """The model's view of one realtime answer (flags by kind, temperatures by role)."""
    temps: list[Temperature] = []
    per_role: dict[TempRole, int] = {}
    for t in rt.temperatures:
        role = _ROLE.get(t.sensor, TempRole.BOARD)
        per_role[role] = per_role.get(role, 0) + 1
        temps.append(Temperature(role, per_role[role], t.value_c))
    return Telemetry.build(
        measured_at=measured_at,
        cell_voltages_v=rt.cell_voltages_v,
        temperatures=temps,
        voltage_v=rt.voltage_v,
        current_a=rt.current_a,
        soc_pct=max(0.0, min(100.0, rt.soc_pct)),
        soh_pct=max(0.0, min(100.0, rt.soh_pct)),
        full_capacity_ah=rt.full_capacity_ah,
        remaining_capacity_ah=rt.remaining_capacity_ah,
        nominal_capacity_ah=None,
        cycles=rt.cycles,
        charge_mos_on=rt.charge_mos_on,
        discharge_mos_on=rt.discharge_mos_on,
        heater_on=rt.heater_on,
        fan_on=None,  # no documented fan bit
        balancing_cells=rt.balancing_cells,
        flags=rt.active_flags(),
    )


def history_record(index: int, entry: m.HistoryEntry) -> HistoryRecord:
    return HistoryRecord(
        index=index,
        recorded_at=entry.when.timestamp(),  # naive pack time read as local time
        event=entry.event,
        event_code=entry.event_code,
        cell_voltages_v=entry.cells_v,
        temperatures_c=entry.temperatures_c,
        current_a=entry.current_a,
        voltage_v=entry.voltage_v,
        soc_pct=float(entry.soc_pct),
        raw=m.encode_record(entry),
    )


@dataclass
class _HistoryCursor:
    """Where the pack's record stream stands: records are read in sequence (0xD0 0x1A repeated),
    never by index, so the driver keeps the last frame's records and the index of the first."""

    first_index: int = 0
    pending: deque[m.HistoryEntry] = field(default_factory=deque)
    ended: bool = False
    last_frame_records: int = 1  # records in the last frame read (the estimate of `history_reach`)


def _fits_storage_read(frame: TpFrame, req: m.Request) -> bool:
    """A record-count read and a record read share command 0xD0: a late answer to one (after a
    timeout and a resend) must not be taken as the answer to the other. Other requests: True."""
    if not isinstance(req, m.StorageRead):
        return True
    try:
        resp = m.parse_response(frame, req)
    except RemoteProtocolError:
        return True  # let the caller report what is wrong with it
    if req.sub is m.StorageSub.READ_RECORD_COUNT:
        return isinstance(resp, m.RecordCount)
    if req.sub is m.StorageSub.READ_RECORDS:
        return isinstance(resp, m.HistoryFrame | m.HistoryEnd)
    return True


class TianpowerDriver(Driver):
    family: ClassVar[str] = "tianpower"
    controls: ClassVar[Mapping[Control, str]] = {
        Control.CHARGE_MOS: "CMD 0xD3",
        Control.DISCHARGE_MOS: "CMD 0xD3",
        Control.HEATER: "CMD 0xE3",
        Control.FAN: "CMD 0xE2",
        Control.BUZZER: "CMD 0xD1 (alarm function switch)",
        Control.SOUND_LIGHT_ALARM: "CMD 0x63 (alarm function switch)",
        Control.FORCED_SLEEP: "CMD 0xCD; refused while charging",
    }

    def __init__(self, *, start_byte: int = SOI, table: ParameterTable | None = None) -> None:
        self._soi = start_byte  # 0x7C for Revov-style firmwares
        self._table = table if table is not None else load_table("tianpower")
        self._history: dict[int, _HistoryCursor] = {}

    @property
    def table(self) -> ParameterTable:
        return self._table

    def new_decoder(self) -> TianpowerDecoder:
        return TianpowerDecoder()

    # --- one exchange ---------------------------------------------------------------------------

    async def _send(
        self,
        bus: BusClient,
        req: m.Request,
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        allow_inferred: bool = False,
    ) -> m.Response:
        raw = m.encode_request(req, soi=self._soi, allow_inferred=allow_inferred)
        address, command = raw[1], raw[2]

        def match(frame: Frame) -> bool:
            return (
                isinstance(frame, TpFrame)
                and frame.address == address
                and frame.command == command
                and frame.raw != raw  # our own request echoed by the transceiver
                and _fits_storage_read(frame, req)
            )

        frame = await bus.transact(raw, match, priority=priority, timeout_s=timeout_s, address=address)
        if not isinstance(frame, TpFrame):
            raise NoResponse(f"tianpower {address}: no answer to command 0x{command:02X}")
        try:
            return m.parse_response(frame, req)
        except RemoteProtocolError as err:
            raise MalformedResponse(f"tianpower {address}: command 0x{command:02X}: {err}") from None

    async def _read(
        self,
        bus: BusClient,
        req: m.Request,
        kind: type[R],
        *,
        priority: Priority = Priority.POLL,
        allow_inferred: bool = False,
    ) -> R:
        resp = await self._send(bus, req, priority=priority, allow_inferred=allow_inferred)
        if isinstance(resp, kind):
            return resp
        if isinstance(resp, m.Ack):
            raise DeviceError(resp.code, f"tianpower: pack refused {type(req).__name__}: {resp.meaning}")
        raise MalformedResponse(f"tianpower: expected {kind.__name__}, got {type(resp).__name__}")

    async def _command(
        self,
        bus: BusClient,
        req: m.Request,
        *,
        priority: Priority = Priority.ADMIN,
        allow_inferred: bool = False,
    ) -> None:
        ack = await self._read(bus, req, m.Ack, priority=priority, allow_inferred=allow_inferred)
        if not ack.ok:
            raise DeviceError(ack.code, f"tianpower: pack refused {type(req).__name__}: {ack.meaning}")

    # --- Driver interface -----------------------------------------------------------------------

    async def read_realtime_data(self, bus: BusClient, address: int) -> RealtimeData:
        return await self._read(bus, m.ReadRequest(address, m.Cmd.REALTIME), RealtimeData)

    async def read_realtime(self, bus: BusClient, address: int, now: float) -> Telemetry:
        return telemetry_from(await self.read_realtime_data(bus, address), now)

    async def _text(self, bus: BusClient, address: int, cmd: m.Cmd) -> str:
        info = await self._read(bus, m.ReadRequest(address, cmd), m.TextInfo, priority=Priority.BACKGROUND)
        return info.text

    async def read_identity(self, bus: BusClient, address: int) -> PackIdentity:
        version = await self._text(bus, address, m.Cmd.VERSION)
        barcode: str | None = None
        serial: str | None = None
        try:
            barcode = await self._text(bus, address, m.Cmd.BARCODE)
        except (NoResponse, DeviceError) as err:
            log.info("tianpower %s: no PCB barcode (%s)", address, err)
        try:
            serial = await self.read_serial(bus, address)
        except (NoResponse, DeviceError) as err:
            log.info("tianpower %s: no SN code (%s)", address, err)
        return PackIdentity(
            version=version, barcode=barcode, serial=serial, model=version, protocol=self.family
        )

    async def read_param_table(self, bus: BusClient, address: int, table: m.ParamTable) -> m.ParamTableData:
        return await self._read(
            bus, m.ReadParamTable(address, table), m.ParamTableData, priority=Priority.BACKGROUND
        )

    async def read_parameters(self, bus: BusClient, address: int, now: float) -> ParameterSet:
        readings: list[ParameterReading] = []
        for table in (m.ParamTable.PROTECTION, m.ParamTable.ALARM):
            data = await self.read_param_table(bus, address, table)
            specs = {p.wire["record"]: p for p in self._table.where_wire(table=int(table))}
            for rec in data.records:
                spec = specs.get(rec.record)
                if spec is None:
                    log.debug(
                        "tianpower %s: table 0x%02X record 0x%02X not in the table",
                        address,
                        table,
                        rec.record,
                    )
                    continue
                readings.append(ParameterReading(spec.name, spec.from_wire(rec.raw), spec.unit))
        rt = await self.read_realtime_data(bus, address)
        for spec in self._table.where_wire(command=int(m.Cmd.FULL_CAPACITY)):
            readings.append(ParameterReading(spec.name, rt.full_capacity_ah, spec.unit))
        for spec in self._table.where_wire(command=int(m.Cmd.REMAINING_CAPACITY)):
            readings.append(ParameterReading(spec.name, rt.remaining_capacity_ah, spec.unit))
        return ParameterSet.of(now, readings)

    async def read_clock(self, bus: BusClient, address: int, now: float) -> ClockReading:
        clock = await self._read(
            bus, m.ReadRequest(address, m.Cmd.READ_CLOCK), m.ClockData, priority=Priority.BACKGROUND
        )
        return ClockReading(pack_time=clock.when.timestamp(), read_at=now)

    async def probe(self, bus: BusClient, address: int) -> bool:
        try:
            await self.read_realtime_data(bus, address)
        except (NoResponse, DeviceError):
            return False
        return True

    # --- writes ---------------------------------------------------------------------------------

    def plan_parameter_writes(self, address: int, writes: Sequence[ParameterWrite]) -> list[m.Request]:
        """Validate every write against the table and group them into requests (nothing is sent)."""
        by_table: dict[m.ParamTable, dict[int, int]] = {}
        requests: list[m.Request] = []
        for w in writes:
            spec: ParamSpec = self._table.get(w.name)
            raw = spec.to_wire(w.value)
            if "table" in spec.wire:
                by_table.setdefault(m.ParamTable(spec.wire["table"]), {})[spec.wire["record"]] = raw
            elif spec.wire.get("command") == m.Cmd.FULL_CAPACITY:
                requests.append(m.WriteCapacity(address, m.Capacity.FULL, raw))
            elif spec.wire.get("command") == m.Cmd.REMAINING_CAPACITY:
                requests.append(m.WriteCapacity(address, m.Capacity.REMAINING, raw))
            else:
                raise Unsupported(f"tianpower: no write encoding for {spec.name}")
        tables = [
            m.WriteParamTable(address, table, tuple(m.ParamRecord(r, v) for r, v in sorted(recs.items())))
            for table, recs in by_table.items()
        ]
        return [*tables, *requests]

    async def write_parameters(
        self, bus: BusClient, address: int, writes: list[ParameterWrite], *, allow_inferred: bool = False
    ) -> None:
        inferred = [w.name for w in writes if self._table.get(w.name).inferred]
        if inferred and not allow_inferred:
            raise InferredRefused(
                f"tianpower: writing {', '.join(inferred)} uses an inferred (not publicly documented) "
                "encoding; pass allow_inferred=True to send it"
            )
        for req in self.plan_parameter_writes(address, writes):
            await self._command(bus, req, allow_inferred=allow_inferred)

    async def write_clock(self, bus: BusClient, address: int, when_epoch_s: float) -> None:
        when = datetime.fromtimestamp(when_epoch_s).replace(microsecond=0)  # the pack keeps local time
        await self._command(bus, m.WriteClock(address, when))

    async def control(self, bus: BusClient, address: int, action: Control, value: int = 1) -> None:
        on = bool(value)
        req: m.Request
        if action is Control.CHARGE_MOS:
            req = m.MosControl(address, m.MosAction.CHARGE_ON if on else m.MosAction.CHARGE_OFF)
        elif action is Control.DISCHARGE_MOS:
            req = m.MosControl(address, m.MosAction.DISCHARGE_ON if on else m.MosAction.DISCHARGE_OFF)
        elif action in _SWITCHES:
            req = m.SwitchControl(address, _SWITCHES[action], on)
        elif action is Control.FORCED_SLEEP:
            req = m.ForcedSleep(address)
        else:
            raise Unsupported(f"tianpower: {action.value} has no documented command")
        await self._command(bus, req)

    # --- history --------------------------------------------------------------------------------

    async def history_count(self, bus: BusClient, address: int) -> int:
        req = m.StorageRead(address, m.StorageSub.READ_RECORD_COUNT)
        count = await self._read(bus, req, m.RecordCount, priority=Priority.BACKGROUND)
        self._history[address] = _HistoryCursor()  # a count read starts a new read sequence
        return count.count

    def history_reach(self, address: int, index: int) -> HistoryReach:
        """The pack only streams in order (0xD0 0x1A repeated, 1..4 records a frame; a count read
        rewinds): from the cursor when `index` lies ahead of it, else a rewind and the records
        before `index` read and skipped. Frames are assumed to carry as many records as the last
        one did (1 before any was read), so `exchanges` is an estimate; `skipped` is exact."""
        if index < 0:
            raise ValueError(f"history index must be >= 0, got {index}")
        cursor = self._history.get(address)
        per_frame = max(1, cursor.last_frame_records if cursor else 1)
        if cursor is not None and index >= cursor.first_index:
            ahead = index - cursor.first_index - len(cursor.pending)
            if ahead < 0 or cursor.ended:
                return HistoryReach(index, "stream", 0, 0)
            return HistoryReach(index, "stream", -(-ahead // per_frame), ahead)
        return HistoryReach(index, "rewind", 1 + -(-index // per_frame), index)

    async def history_advance(self, bus: BusClient, address: int, index: int) -> bool:
        if index < 0:
            raise ValueError(f"history index must be >= 0, got {index}")
        cursor = self._history.get(address)
        if cursor is None or index < cursor.first_index:
            await self.history_count(bus, address)  # one exchange: the stream starts again
            return index == 0
        if index < cursor.first_index + len(cursor.pending) + 1 or cursor.ended:
            return True  # in the frame held, or the first record of the next frame
        await self._next_history_frame(bus, address, cursor)  # one exchange
        return index < cursor.first_index + len(cursor.pending) + 1 or cursor.ended

    async def _next_history_frame(self, bus: BusClient, address: int, cursor: _HistoryCursor) -> None:
        """Drop the frame held and read the next one (one exchange)."""
        cursor.first_index += len(cursor.pending)
        cursor.pending.clear()
        req = m.StorageRead(address, m.StorageSub.READ_RECORDS)
        resp = await self._send(bus, req, priority=Priority.BACKGROUND)
        if isinstance(resp, m.HistoryEnd):
            cursor.ended = True
        elif isinstance(resp, m.HistoryFrame):
            cursor.pending.extend(resp.records)
            cursor.last_frame_records = len(resp.records)
        else:
            raise MalformedResponse(
                f"tianpower {address}: expected history records, got {type(resp).__name__}"
            )

    async def read_history(self, bus: BusClient, address: int, index: int) -> HistoryRecord | None:
        """Record `index` of the pack's stream. The pack only streams in order: going back (or a
        first call) restarts with a count read; going forward reads and skips (a download reaches
        a far index with `history_advance` first, one exchange at a time)."""
        if index < 0:
            raise ValueError(f"history index must be >= 0, got {index}")
        cursor = self._history.get(address)
        if cursor is None or index < cursor.first_index:
            await self.history_count(bus, address)
            cursor = self._history[address]
        for _ in range(index - cursor.first_index + 2):  # bounded: each pass consumes a frame
            offset = index - cursor.first_index
            if offset < len(cursor.pending):
                return history_record(index, cursor.pending[offset])
            if cursor.ended:
                return None
            await self._next_history_frame(bus, address, cursor)
        return None

    # --- family-specific extras -----------------------------------------------------------------

    async def read_serial(self, bus: BusClient, address: int) -> str:
        sn = await self._read(bus, m.ReadSerialNumber(address), m.SerialNumber, priority=Priority.BACKGROUND)
        return sn.serial

    async def write_serial(self, bus: BusClient, address: int, serial: str) -> None:
        await self._command(bus, m.WriteSerialNumber(address, serial))

    async def read_board_info(self, bus: BusClient, address: int) -> bytes:
        info = await self._read(bus, m.ReadBoardInfo(address), m.BoardInfo, priority=Priority.BACKGROUND)
        return info.data

    async def anti_theft_lock(self, bus: BusClient, address: int, mask: m.AntiTheft) -> None:
        """Enable the given locks (an empty mask clears all)."""
        await self._command(bus, m.AntiTheftLock(address, mask))

    async def unlock(self, bus: BusClient, address: int) -> None:
        await self._command(bus, m.Unlock(address))

    async def read_heater_thresholds(self, bus: BusClient, address: int) -> tuple[int, int]:
        """(heater ON temperature, heater OFF temperature) in degC."""
        on = await self._read(bus, m.ReadRequest(address, m.Cmd.READ_HEATER_ON), m.HeaterThreshold)
        off = await self._read(bus, m.ReadRequest(address, m.Cmd.READ_HEATER_OFF), m.HeaterThreshold)
        return on.temperature_c, off.temperature_c

    async def write_heater_threshold(
        self, bus: BusClient, address: int, which: str, temperature_c: int
    ) -> None:
        await self._command(bus, m.WriteHeaterThreshold(address, which, temperature_c))

    async def write_capacity(
        self,
        bus: BusClient,
        address: int,
        capacity: m.Capacity,
        capacity_ah: float,
        *,
        allow_inferred: bool = False,
    ) -> None:
        """Full / remaining / nominal capacity. The 0.01 Ah wire unit is inferred: opt in explicitly."""
        if not allow_inferred:
            raise InferredRefused(
                "tianpower: the capacity write unit (0.01 Ah) is inferred; pass allow_inferred=True"
            )
        raw = round(capacity_ah / m.CAPACITY_SCALE_AH)
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"capacity {capacity_ah} Ah is outside 0..655.35 Ah")
        await self._command(bus, m.WriteCapacity(address, capacity, raw))

    async def read_protection_counters(self, bus: BusClient, address: int) -> dict[m.Counter, int]:
        out: dict[m.Counter, int] = {}
        for counter in m.COUNTER_READ_CMD:
            value = await self._read(
                bus, m.ReadCounter(address, counter), m.CounterValue, priority=Priority.BACKGROUND
            )
            out[counter] = value.count
        return out

    async def write_counter(self, bus: BusClient, address: int, counter: m.Counter, value: int) -> None:
        await self._command(bus, m.WriteCounter(address, counter, value))

    async def read_storage_interval(self, bus: BusClient, address: int, *, old_firmware: bool = False) -> int:
        """The history storage interval as the pack reports it (the vendor tool shows minutes)."""
        sub = m.StorageSub.READ_INTERVAL_OLD if old_firmware else m.StorageSub.READ_INTERVAL
        value = await self._read(
            bus, m.StorageRead(address, sub), m.StorageValue, priority=Priority.BACKGROUND
        )
        return value.value

    async def write_storage_interval(self, bus: BusClient, address: int, interval: int) -> None:
        await self._command(bus, m.WriteStorageValue(address, m.StorageSub.WRITE_INTERVAL, interval))

    async def read_recording_speed(self, bus: BusClient, address: int) -> int:
        req = m.StorageRead(address, m.StorageSub.READ_RECORDING_SPEED)
        return (await self._read(bus, req, m.StorageValue, priority=Priority.BACKGROUND)).value

    async def write_recording_speed(self, bus: BusClient, address: int, value: int) -> None:
        await self._command(bus, m.WriteStorageValue(address, m.StorageSub.WRITE_RECORDING_SPEED, value))

    async def read_record_times(self, bus: BusClient, address: int) -> tuple[datetime, datetime]:
        """(record start time, record end time), naive pack time."""
        start = await self._read(bus, m.StorageRead(address, m.StorageSub.READ_START_TIME), m.StorageTime)
        end = await self._read(bus, m.StorageRead(address, m.StorageSub.READ_END_TIME), m.StorageTime)
        return start.when, end.when

    async def write_record_time(self, bus: BusClient, address: int, which: str, when: datetime) -> None:
        await self._command(bus, m.WriteStorageTime(address, which, when))

    async def set_cell_count(
        self, bus: BusClient, address: int, cells: int, *, confirm_dangerous: bool = False
    ) -> None:
        """Factory: change the cell string count. The pack sends no ACK and needs a reset."""
        self._require_confirmation(confirm_dangerous, "setting the cell count")
        raw = m.encode_request(m.SetCellCount(address, cells), soi=self._soi)
        await bus.transact(raw, _never, priority=Priority.ADMIN, expect_response=False, address=address)

    async def calibrate(
        self,
        bus: BusClient,
        address: int,
        point: m.CalibrationPoint,
        raw: int,
        *,
        confirm_dangerous: bool = False,
    ) -> None:
        """Factory: write a current calibration point (`m.CALIBRATION_RESET` resets it)."""
        self._require_confirmation(confirm_dangerous, "current calibration")
        await self._command(bus, m.Calibrate(address, point, raw))

    @staticmethod
    def _require_confirmation(confirmed: bool, what: str) -> None:
        if not confirmed:
            raise DangerousRefused(f"tianpower: {what} is a factory operation; pass confirm_dangerous=True")


def _never(_frame: Frame) -> bool:
    return False


__all__: list[str] = [
    "DangerousRefused",
    "InferredRefused",
    "MalformedResponse",
    "TianpowerDriver",
    "history_record",
    "telemetry_from",
]
