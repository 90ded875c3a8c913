"""Tianpower commands: typed requests and responses, their builders and parsers, both directions.

Every request kind is a frozen dataclass; `encode_request(req)` builds its bytes and
`parse_request(frame)` turns a captured/received request back into the same object (the simulator
receives requests with it). Every response kind likewise: `encode_response(address, resp)` (the
simulator's response builders) and `parse_response(frame, request)` (the driver's decoder), so that
`parse_response(parse_frame(encode_response(a, r))) == r`.

Command table: GHswitt/esphome-basen (README command table and history-record format, `dev`
branch) and the vendor tool's manual. Two things are *inferred* and marked
so: the parameter-table write (`WriteParamTable`, mirror of the 0x43 read, command 0x44) and the
meaning of non-zero ACK codes (YD/T1363 meanings). Writing the tables therefore needs an explicit
opt-in from every caller (`allow_inferred=True` in `encode_request`).

The firmware-upgrade commands 0xA0-0xA4 are not the vendor's: they carry bms-gateway's own
bootloader protocol (`protocol.bms.bootloader`, docs/bootloader.md) as `BootloaderRequest` and
`BootloaderAnswer`, so that captures and echoes of an upgrade are recognised like any command.

Sans-I/O, no state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from protocol.bms import bootloader as bl
from protocol.bms.tianpower.frame import (
    CMD_READ_PARAMS,
    SOI,
    TpFrame,
    build_frame,
    build_table_read,
)
from protocol.bms.tianpower.realtime import RealtimeData, decode_realtime, encode_realtime_data
from protocol.bms.tianpower.shapes import (
    BOOT_CODES,
    BOOTLOADER_COMMANDS,
    CMD_WRITE_PARAMS_INFERRED,
    looks_like_request,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError

# --- command codes ---------------------------------------------------------------------------------


class Cmd(enum.IntEnum):
    REALTIME = 0x01
    REVOV_06 = 0x06  # seen only in a Revov driver; "returns 4 bytes", meaning unknown
    VERSION = 0x33
    BARCODE = 0x42
    READ_PARAMS = CMD_READ_PARAMS
    WRITE_PARAMS_INFERRED = CMD_WRITE_PARAMS_INFERRED
    READ_CLOCK = 0x45
    WRITE_CLOCK = 0xCF
    MOS = 0xD3
    FORCED_SLEEP = 0xCD
    HEATER = 0xE3
    FAN = 0xE2
    BUZZER = 0xD1
    SOUND_LIGHT = 0x63
    READ_HEATER_ON = 0xF1
    READ_HEATER_OFF = 0xF3
    WRITE_HEATER_ON = 0xF2
    WRITE_HEATER_OFF = 0xF4
    BOARD_SN = 0xDC  # board info read, SN read and SN write share it
    ANTI_THEFT = 0xFC
    UNLOCK = 0xFB
    STORAGE = 0xD0
    COUNT_SHORT_CIRCUIT = 0x39
    COUNT_TEMPERATURE = 0x3A
    COUNT_OVER_CURRENT = 0x3B
    COUNT_OVER_VOLTAGE = 0x3C
    COUNT_UNDER_VOLTAGE = 0x3D
    SET_CYCLES = 0x93
    SET_COUNT_SHORT_CIRCUIT = 0x95
    SET_COUNT_TEMPERATURE = 0x96
    SET_COUNT_OVER_CURRENT = 0x97
    SET_COUNT_OVER_VOLTAGE = 0x98
    SET_COUNT_UNDER_VOLTAGE = 0x99
    FULL_CAPACITY = 0xC9
    REMAINING_CAPACITY = 0xCA
    NOMINAL_CAPACITY = 0xDB
    CAL_CHARGE_1 = 0x84
    CAL_CHARGE_2 = 0x85
    CAL_DISCHARGE_1 = 0x86
    CAL_DISCHARGE_2 = 0x87
    CELL_COUNT = 0x92
    # bms-gateway's own bootloader protocol (not the vendor's), see protocol.bms.bootloader
    BOOT_ENTER = 0xA0
    BOOT_BLOCK = 0xA1
    BOOT_VERIFY = 0xA2
    BOOT_REBOOT = 0xA3
    BOOT_STATUS = 0xA4


COMMAND_TITLES: dict[int, str] = {
    Cmd.REALTIME: "realtime data",
    Cmd.REVOV_06: "unknown Revov command 0x06",
    Cmd.VERSION: "version / model string",
    Cmd.BARCODE: "PCB barcode",
    Cmd.READ_PARAMS: "read parameter table",
    Cmd.WRITE_PARAMS_INFERRED: "write parameter table (inferred)",
    Cmd.READ_CLOCK: "read clock",
    Cmd.WRITE_CLOCK: "write clock",
    Cmd.MOS: "MOS control",
    Cmd.FORCED_SLEEP: "forced sleep",
    Cmd.HEATER: "heater pad switch",
    Cmd.FAN: "fan switch",
    Cmd.BUZZER: "buzzer switch",
    Cmd.SOUND_LIGHT: "sound/light alarm switch",
    Cmd.READ_HEATER_ON: "read heater ON temperature",
    Cmd.READ_HEATER_OFF: "read heater OFF temperature",
    Cmd.WRITE_HEATER_ON: "write heater ON temperature",
    Cmd.WRITE_HEATER_OFF: "write heater OFF temperature",
    Cmd.BOARD_SN: "board info / SN code",
    Cmd.ANTI_THEFT: "anti-theft locks",
    Cmd.UNLOCK: "unlock",
    Cmd.STORAGE: "storage / history",
    Cmd.COUNT_SHORT_CIRCUIT: "read short-circuit counter",
    Cmd.COUNT_TEMPERATURE: "read temperature-protection counter",
    Cmd.COUNT_OVER_CURRENT: "read over-current counter",
    Cmd.COUNT_OVER_VOLTAGE: "read over-voltage counter",
    Cmd.COUNT_UNDER_VOLTAGE: "read under-voltage counter",
    Cmd.SET_CYCLES: "write cycle count",
    Cmd.SET_COUNT_SHORT_CIRCUIT: "write short-circuit counter",
    Cmd.SET_COUNT_TEMPERATURE: "write temperature-protection counter",
    Cmd.SET_COUNT_OVER_CURRENT: "write over-current counter",
    Cmd.SET_COUNT_OVER_VOLTAGE: "write over-voltage counter",
    Cmd.SET_COUNT_UNDER_VOLTAGE: "write under-voltage counter",
    Cmd.FULL_CAPACITY: "write full capacity",
    Cmd.REMAINING_CAPACITY: "write remaining capacity",
    Cmd.NOMINAL_CAPACITY: "write nominal capacity",
    Cmd.CAL_CHARGE_1: "calibration: charge point 1 (factory)",
    Cmd.CAL_CHARGE_2: "calibration: charge point 2 (factory)",
    Cmd.CAL_DISCHARGE_1: "calibration: discharge point 1 (factory)",
    Cmd.CAL_DISCHARGE_2: "calibration: discharge point 2 (factory)",
    Cmd.CELL_COUNT: "set cell count (factory, no ACK)",
    Cmd.BOOT_ENTER: "firmware upgrade: enter bootloader (bms-gateway protocol)",
    Cmd.BOOT_BLOCK: "firmware upgrade: image block (bms-gateway protocol)",
    Cmd.BOOT_VERIFY: "firmware upgrade: verify image (bms-gateway protocol)",
    Cmd.BOOT_REBOOT: "firmware upgrade: reboot into the image (bms-gateway protocol)",
    Cmd.BOOT_STATUS: "firmware upgrade: bootloader status (bms-gateway protocol)",
}

DANGEROUS_COMMANDS = frozenset(
    (Cmd.CAL_CHARGE_1, Cmd.CAL_CHARGE_2, Cmd.CAL_DISCHARGE_1, Cmd.CAL_DISCHARGE_2, Cmd.CELL_COUNT)
)

# ACK return codes: 0 is documented; the rest are the YD/T1363 meanings (*inferred*).
ACK_CODES: dict[int, str] = {
    0x00: "OK",
    0x01: "VER error (inferred meaning)",
    0x02: "CHKSUM error (inferred meaning)",
    0x03: "LCHKSUM error (inferred meaning)",
    0x04: "invalid command (inferred meaning)",
    0x05: "format error (inferred meaning)",
    0x06: "invalid data (inferred meaning)",
}


class ParamTable(enum.IntEnum):
    PROTECTION = 0xE0
    ALARM = 0x00


class MosAction(enum.IntEnum):
    CHARGE_ON = 0x01
    CHARGE_OFF = 0x02
    DISCHARGE_ON = 0x03
    DISCHARGE_OFF = 0x04


class Switch(enum.StrEnum):
    HEATER = "heater"
    FAN = "fan"
    BUZZER = "buzzer"
    SOUND_LIGHT = "sound_light"


_SWITCH_CMD = {
    Switch.HEATER: Cmd.HEATER,
    Switch.FAN: Cmd.FAN,
    Switch.BUZZER: Cmd.BUZZER,
    Switch.SOUND_LIGHT: Cmd.SOUND_LIGHT,
}
_CMD_SWITCH = {v: k for k, v in _SWITCH_CMD.items()}


class AntiTheft(enum.IntFlag):
    """0xFC mask bits."""

    COMMUNICATION = 0x01
    PHYSICAL = 0x02
    CHARGE_ACTIVATION = 0x04
    SLEEP_VOLTAGE = 0x08


class Counter(enum.StrEnum):
    SHORT_CIRCUIT = "short_circuit"
    TEMPERATURE = "temperature"
    OVER_CURRENT = "over_current"
    OVER_VOLTAGE = "over_voltage"
    UNDER_VOLTAGE = "under_voltage"
    CYCLES = "cycles"  # write only (the read is in the realtime data)


COUNTER_READ_CMD = {
    Counter.SHORT_CIRCUIT: Cmd.COUNT_SHORT_CIRCUIT,
    Counter.TEMPERATURE: Cmd.COUNT_TEMPERATURE,
    Counter.OVER_CURRENT: Cmd.COUNT_OVER_CURRENT,
    Counter.OVER_VOLTAGE: Cmd.COUNT_OVER_VOLTAGE,
    Counter.UNDER_VOLTAGE: Cmd.COUNT_UNDER_VOLTAGE,
}
COUNTER_WRITE_CMD = {
    Counter.CYCLES: Cmd.SET_CYCLES,
    Counter.SHORT_CIRCUIT: Cmd.SET_COUNT_SHORT_CIRCUIT,
    Counter.TEMPERATURE: Cmd.SET_COUNT_TEMPERATURE,
    Counter.OVER_CURRENT: Cmd.SET_COUNT_OVER_CURRENT,
    Counter.OVER_VOLTAGE: Cmd.SET_COUNT_OVER_VOLTAGE,
    Counter.UNDER_VOLTAGE: Cmd.SET_COUNT_UNDER_VOLTAGE,
}
_READ_CMD_COUNTER = {v: k for k, v in COUNTER_READ_CMD.items()}
_WRITE_CMD_COUNTER = {v: k for k, v in COUNTER_WRITE_CMD.items()}


class Capacity(enum.StrEnum):
    FULL = "full"
    REMAINING = "remaining"
    NOMINAL = "nominal"


CAPACITY_CMD = {
    Capacity.FULL: Cmd.FULL_CAPACITY,
    Capacity.REMAINING: Cmd.REMAINING_CAPACITY,
    Capacity.NOMINAL: Cmd.NOMINAL_CAPACITY,
}
_CMD_CAPACITY = {v: k for k, v in CAPACITY_CMD.items()}
NOMINAL_CAPACITY_TAG = 0x13  # DB 03 13 Hi Lo
# The 16-bit capacity write value is taken as 0.01 Ah like realtime group 0x04 (*inferred*).
CAPACITY_SCALE_AH = 0.01


class CalibrationPoint(enum.IntEnum):
    CHARGE_1 = Cmd.CAL_CHARGE_1
    CHARGE_2 = Cmd.CAL_CHARGE_2
    DISCHARGE_1 = Cmd.CAL_DISCHARGE_1
    DISCHARGE_2 = Cmd.CAL_DISCHARGE_2


CALIBRATION_RESET = 0xFFFF


class StorageSub(enum.IntEnum):
    """First DATA byte of a CMD 0xD0 frame."""

    WRITE_START_TIME = 0x04
    WRITE_END_TIME = 0x05
    READ_START_TIME = 0x07
    READ_END_TIME = 0x08
    READ_INTERVAL_OLD = 0x09  # older firmware
    READ_INTERVAL = 0x10
    WRITE_INTERVAL = 0x11
    READ_RECORD_COUNT = 0x19
    READ_RECORDS = 0x1A
    READ_RECORDING_SPEED = 0xE0
    WRITE_RECORDING_SPEED = 0xE1


STORAGE_READS = frozenset(
    (
        StorageSub.READ_START_TIME,
        StorageSub.READ_END_TIME,
        StorageSub.READ_INTERVAL_OLD,
        StorageSub.READ_INTERVAL,
        StorageSub.READ_RECORD_COUNT,
        StorageSub.READ_RECORDS,
        StorageSub.READ_RECORDING_SPEED,
    )
)
HEATER_TEMP_OFFSET_C = 50
SN_TERMINATOR = 0x5E  # '^'
SN_MAX_LEN = 35
SN_READ_TAG = 0x06
SN_WRITE_TAG = 0x01

# --- requests --------------------------------------------------------------------------------------

_PLAIN_READS = frozenset(
    (
        Cmd.REALTIME,
        Cmd.REVOV_06,
        Cmd.VERSION,
        Cmd.BARCODE,
        Cmd.READ_CLOCK,
        Cmd.READ_HEATER_ON,
        Cmd.READ_HEATER_OFF,
    )
)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A read without arguments: realtime, version, barcode, clock, heater ON/OFF temperature, 0x06."""

    address: int
    command: Cmd


@dataclass(frozen=True, slots=True)
class ReadParamTable:
    address: int
    table: ParamTable


@dataclass(frozen=True, slots=True)
class ParamRecord:
    record: int  # record id within its table
    raw: int  # 16-bit wire value (scale/offset come from mappings/bms/tianpower.toml)


@dataclass(frozen=True, slots=True)
class WriteParamTable:
    """*Inferred*: writing records of a parameter table (mirror of the 0x43 read format)."""

    address: int
    table: ParamTable
    records: tuple[ParamRecord, ...]


@dataclass(frozen=True, slots=True)
class WriteClock:
    address: int
    when: datetime  # naive; the pack's clock has no zone


@dataclass(frozen=True, slots=True)
class MosControl:
    address: int
    action: MosAction


@dataclass(frozen=True, slots=True)
class SwitchControl:
    address: int
    switch: Switch
    on: bool


@dataclass(frozen=True, slots=True)
class ForcedSleep:
    address: int


@dataclass(frozen=True, slots=True)
class WriteHeaterThreshold:
    address: int
    which: str  # "on" | "off"
    temperature_c: int


@dataclass(frozen=True, slots=True)
class ReadBoardInfo:
    address: int


@dataclass(frozen=True, slots=True)
class ReadSerialNumber:
    address: int


@dataclass(frozen=True, slots=True)
class WriteSerialNumber:
    address: int
    serial: str


@dataclass(frozen=True, slots=True)
class AntiTheftLock:
    address: int
    mask: AntiTheft  # 0 clears every lock


@dataclass(frozen=True, slots=True)
class Unlock:
    address: int


@dataclass(frozen=True, slots=True)
class StorageRead:
    address: int
    sub: StorageSub


@dataclass(frozen=True, slots=True)
class WriteStorageTime:
    address: int
    which: str  # "start" | "end"
    when: datetime


@dataclass(frozen=True, slots=True)
class WriteStorageValue:
    """Storage interval (0x11) or recording speed (0xE1), 16-bit."""

    address: int
    sub: StorageSub
    value: int


@dataclass(frozen=True, slots=True)
class ReadCounter:
    address: int
    counter: Counter


@dataclass(frozen=True, slots=True)
class WriteCounter:
    address: int
    counter: Counter
    value: int


@dataclass(frozen=True, slots=True)
class WriteCapacity:
    address: int
    capacity: Capacity
    raw: int  # 16-bit; 0.01 Ah per unit is *inferred* (see CAPACITY_SCALE_AH)


@dataclass(frozen=True, slots=True)
class Calibrate:
    """Factory use, dangerous. `raw` 0xFFFF resets the point."""

    address: int
    point: CalibrationPoint
    raw: int


@dataclass(frozen=True, slots=True)
class SetCellCount:
    """Factory use, dangerous; the pack sends no ACK and needs a reset."""

    address: int
    cells: int


@dataclass(frozen=True, slots=True)
class BootloaderRequest:
    """A message of bms-gateway's firmware-upgrade protocol (commands 0xA0-0xA4)."""

    address: int
    message: bl.BootRequest


Request = (
    ReadRequest
    | ReadParamTable
    | WriteParamTable
    | WriteClock
    | MosControl
    | SwitchControl
    | ForcedSleep
    | WriteHeaterThreshold
    | ReadBoardInfo
    | ReadSerialNumber
    | WriteSerialNumber
    | AntiTheftLock
    | Unlock
    | StorageRead
    | WriteStorageTime
    | WriteStorageValue
    | ReadCounter
    | WriteCounter
    | WriteCapacity
    | Calibrate
    | SetCellCount
    | BootloaderRequest
)


def _u16(name: str, value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{name} must be an integer 0..65535, got {value!r}")
    return value.to_bytes(2, "big")


def encode_datetime(when: datetime) -> bytes:
    if not 2000 <= when.year <= 2255:
        raise LocalProtocolError(f"year {when.year} cannot be sent (2000..2255)")
    return bytes((when.year - 2000, when.month, when.day, when.hour, when.minute, when.second))


def decode_datetime(data: bytes, what: str = "date") -> datetime:
    if len(data) != 6:
        raise RemoteProtocolError(f"{what}: expected 6 bytes YY MM DD hh mm ss, got {len(data)}")
    try:
        return datetime(2000 + data[0], data[1], data[2], data[3], data[4], data[5])
    except ValueError as err:
        raise RemoteProtocolError(f"{what}: invalid date/time {data.hex(' ')}: {err}") from None


def request_data(req: Request, *, allow_inferred: bool = False) -> tuple[int, bytes]:
    """(command, DATA) of a request (not for `ReadParamTable`, which has no DATA)."""
    match req:
        case ReadRequest(command=cmd):
            if cmd not in _PLAIN_READS:
                raise LocalProtocolError(f"0x{int(cmd):02X} is not a plain read")
            return cmd, b""
        case WriteParamTable(table=table, records=records):
            if not allow_inferred:
                raise LocalProtocolError(
                    "writing the parameter tables is not publicly documented (inferred encoding); "
                    "pass allow_inferred=True to send it anyway"
                )
            if not records:
                raise LocalProtocolError("no parameter records to write")
            body = bytearray((int(table),))
            for r in records:
                if not 0 <= r.record <= 0xFF:
                    raise LocalProtocolError(f"record id {r.record} is not a byte")
                body += bytes((r.record, 0x02)) + _u16(f"record 0x{r.record:02X}", r.raw)
            return Cmd.WRITE_PARAMS_INFERRED, bytes(body)
        case WriteClock(when=when):
            return Cmd.WRITE_CLOCK, encode_datetime(when)
        case MosControl(action=action):
            return Cmd.MOS, bytes((int(MosAction(action)),))
        case SwitchControl(switch=sw, on=on):
            cmd = _SWITCH_CMD[Switch(sw)]
            if cmd in (Cmd.HEATER, Cmd.FAN):
                return cmd, bytes((1 if on else 2,))
            if cmd is Cmd.BUZZER:
                return cmd, bytes((0x01, 1 if on else 0))
            return cmd, bytes((0x00, 1 if on else 0))
        case ForcedSleep():
            return Cmd.FORCED_SLEEP, b"\x00\x01"
        case WriteHeaterThreshold(which=which, temperature_c=t):
            if which not in ("on", "off"):
                raise LocalProtocolError(f"heater threshold must be 'on' or 'off', got {which!r}")
            cmd = Cmd.WRITE_HEATER_ON if which == "on" else Cmd.WRITE_HEATER_OFF
            return cmd, _u16("heater temperature + 50", t + HEATER_TEMP_OFFSET_C)
        case ReadBoardInfo():
            return Cmd.BOARD_SN, bytes((SN_READ_TAG,))
        case ReadSerialNumber():
            return Cmd.BOARD_SN, bytes((SN_READ_TAG, 0, 0))
        case WriteSerialNumber(serial=sn):
            return Cmd.BOARD_SN, bytes((SN_WRITE_TAG,)) + encode_serial(sn) + bytes((SN_TERMINATOR,))
        case AntiTheftLock(mask=mask):
            if not 0 <= int(mask) <= 0x0F:
                raise LocalProtocolError(f"anti-theft mask must be 0..15, got {int(mask)}")
            return Cmd.ANTI_THEFT, bytes((0x00, int(mask)))
        case Unlock():
            return Cmd.UNLOCK, b"\xff\xff"
        case StorageRead(sub=sub):
            if sub not in STORAGE_READS:
                raise LocalProtocolError(f"0x{int(sub):02X} is not a storage read")
            return Cmd.STORAGE, bytes((int(sub),))
        case WriteStorageTime(which=which, when=when):
            if which not in ("start", "end"):
                raise LocalProtocolError(f"storage time must be 'start' or 'end', got {which!r}")
            sub = StorageSub.WRITE_START_TIME if which == "start" else StorageSub.WRITE_END_TIME
            return Cmd.STORAGE, bytes((int(sub),)) + encode_datetime(when)
        case WriteStorageValue(sub=sub, value=value):
            if sub not in (StorageSub.WRITE_INTERVAL, StorageSub.WRITE_RECORDING_SPEED):
                raise LocalProtocolError(f"0x{int(sub):02X} is not a storage value write")
            return Cmd.STORAGE, bytes((int(sub),)) + _u16("storage value", value)
        case ReadCounter(counter=counter):
            if counter not in COUNTER_READ_CMD:
                raise LocalProtocolError(f"counter {counter} cannot be read with its own command")
            return COUNTER_READ_CMD[counter], b"\x00\x00"
        case WriteCounter(counter=counter, value=value):
            return COUNTER_WRITE_CMD[counter], _u16("counter value", value)
        case WriteCapacity(capacity=cap, raw=raw):
            if cap is Capacity.NOMINAL:
                return Cmd.NOMINAL_CAPACITY, bytes((NOMINAL_CAPACITY_TAG,)) + _u16("capacity", raw)
            return CAPACITY_CMD[cap], _u16("capacity", raw)
        case Calibrate(point=point, raw=raw):
            return int(CalibrationPoint(point)), _u16("calibration value", raw)
        case SetCellCount(cells=cells):
            if not 1 <= cells <= 32:
                raise LocalProtocolError(f"cell count must be 1..32, got {cells!r}")
            return Cmd.CELL_COUNT, bytes((0x02, cells))
        case BootloaderRequest(message=message):
            return BOOT_CODES.code(message.op), message.encode()
        case _:
            raise LocalProtocolError(f"cannot encode {req!r}")


def encode_request(req: Request, *, soi: int = SOI, allow_inferred: bool = False) -> bytes:
    """The request's bytes. Inferred encodings (parameter-table writes) need `allow_inferred=True`."""
    if isinstance(req, ReadParamTable):
        return build_table_read(req.address, int(ParamTable(req.table)), soi=soi)
    cmd, data = request_data(req, allow_inferred=allow_inferred)
    return build_frame(req.address, int(cmd), data, soi=soi)


def encode_serial(sn: str) -> bytes:
    if not sn or len(sn) > SN_MAX_LEN or not sn.isascii() or not sn.isprintable() or "^" in sn:
        raise LocalProtocolError(
            f"SN code must be 1..{SN_MAX_LEN} printable ASCII characters without '^', got {sn!r}"
        )
    return sn.encode("ascii")


def _u16_at(d: bytes, i: int = 0) -> int:
    return int.from_bytes(d[i : i + 2], "big")


def parse_request(frame: TpFrame) -> Request:
    """The typed request a (validated) frame carries; RemoteProtocolError if it is not a request."""
    a, cmd, d = frame.address, frame.command, frame.data
    if cmd == Cmd.READ_PARAMS and not d and frame.length_byte in (0xE0, 0x00):
        return ReadParamTable(a, ParamTable(frame.length_byte))
    if not looks_like_request(cmd, d):
        if cmd not in COMMAND_TITLES:
            raise RemoteProtocolError(f"unknown command 0x{cmd:02X}")
        raise RemoteProtocolError(
            f"not a request of command 0x{cmd:02X} ({COMMAND_TITLES[cmd]}): data {d.hex(' ') or '(none)'}"
        )
    if cmd in _PLAIN_READS:
        return ReadRequest(a, Cmd(cmd))
    if cmd in BOOTLOADER_COMMANDS:
        return BootloaderRequest(a, bl.decode_request(BOOTLOADER_COMMANDS[cmd], d))
    if cmd == Cmd.WRITE_PARAMS_INFERRED:
        recs = tuple(ParamRecord(d[i], _u16_at(d, i + 2)) for i in range(1, len(d), 4))
        return WriteParamTable(a, ParamTable(d[0]), recs)
    if cmd == Cmd.WRITE_CLOCK:
        return WriteClock(a, decode_datetime(d, "clock write"))
    if cmd == Cmd.MOS:
        return MosControl(a, MosAction(d[0]))
    if cmd in (Cmd.HEATER, Cmd.FAN):
        return SwitchControl(a, _CMD_SWITCH[Cmd(cmd)], d[0] == 1)
    if cmd in (Cmd.BUZZER, Cmd.SOUND_LIGHT):
        return SwitchControl(a, _CMD_SWITCH[Cmd(cmd)], d[1] == 1)
    if cmd == Cmd.FORCED_SLEEP:
        return ForcedSleep(a)
    if cmd in (Cmd.WRITE_HEATER_ON, Cmd.WRITE_HEATER_OFF):
        which = "on" if cmd == Cmd.WRITE_HEATER_ON else "off"
        return WriteHeaterThreshold(a, which, _u16_at(d) - HEATER_TEMP_OFFSET_C)
    if cmd == Cmd.BOARD_SN:
        if d == bytes((SN_READ_TAG,)):
            return ReadBoardInfo(a)
        if d == bytes((SN_READ_TAG, 0, 0)):
            return ReadSerialNumber(a)
        try:
            return WriteSerialNumber(a, d[1:-1].decode("ascii"))
        except UnicodeDecodeError:
            raise RemoteProtocolError("SN write: the SN code is not ASCII") from None
    if cmd == Cmd.ANTI_THEFT:
        return AntiTheftLock(a, AntiTheft(d[1] & 0x0F))
    if cmd == Cmd.UNLOCK:
        return Unlock(a)
    if cmd == Cmd.STORAGE:
        sub = StorageSub(d[0])
        if len(d) == 1:
            return StorageRead(a, sub)
        if sub in (StorageSub.WRITE_START_TIME, StorageSub.WRITE_END_TIME):
            which = "start" if sub is StorageSub.WRITE_START_TIME else "end"
            return WriteStorageTime(a, which, decode_datetime(d[1:], "storage time"))
        return WriteStorageValue(a, sub, _u16_at(d, 1))
    if cmd in _READ_CMD_COUNTER:
        return ReadCounter(a, _READ_CMD_COUNTER[Cmd(cmd)])
    if cmd in _WRITE_CMD_COUNTER:
        return WriteCounter(a, _WRITE_CMD_COUNTER[Cmd(cmd)], _u16_at(d))
    if cmd in _CMD_CAPACITY:
        cap = _CMD_CAPACITY[Cmd(cmd)]
        return WriteCapacity(a, cap, _u16_at(d, 1 if cap is Capacity.NOMINAL else 0))
    if cmd in (Cmd.CAL_CHARGE_1, Cmd.CAL_CHARGE_2, Cmd.CAL_DISCHARGE_1, Cmd.CAL_DISCHARGE_2):
        return Calibrate(a, CalibrationPoint(cmd), _u16_at(d))
    if cmd == Cmd.CELL_COUNT:
        return SetCellCount(a, d[1])
    raise RemoteProtocolError(f"unknown request command 0x{cmd:02X}")  # pragma: no cover - table-driven


# --- responses --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    command: int
    code: int

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def meaning(self) -> str:
        return ACK_CODES.get(self.code, f"unknown return code 0x{self.code:02X}")


@dataclass(frozen=True, slots=True)
class TextInfo:
    """Version/model string (0x33) or PCB barcode (0x42)."""

    command: int
    text: str


@dataclass(frozen=True, slots=True)
class ParamTableData:
    records: tuple[ParamRecord, ...]
    table: ParamTable | None = None  # known from the request; the response does not say

    def raw_by_record(self) -> dict[int, int]:
        return {r.record: r.raw for r in self.records}


@dataclass(frozen=True, slots=True)
class ClockData:
    when: datetime


@dataclass(frozen=True, slots=True)
class HeaterThreshold:
    command: int  # 0xF1 (ON) or 0xF3 (OFF)
    temperature_c: int
    prefix: bytes = b"\x00\x00"  # data bytes 0-1, meaning undocumented

    @property
    def which(self) -> str:
        return "on" if self.command == Cmd.READ_HEATER_ON else "off"


@dataclass(frozen=True, slots=True)
class SerialNumber:
    serial: str


@dataclass(frozen=True, slots=True)
class BoardInfo:
    """0xDC 01 06 answer; its layout is not publicly documented, so it is kept raw."""

    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("ascii", errors="replace")


@dataclass(frozen=True, slots=True)
class CounterValue:
    counter: Counter
    count: int
    extra: bytes = b""  # data bytes after the 32-bit count, if any


@dataclass(frozen=True, slots=True)
class StorageTime:
    which: str  # "start" | "end"
    when: datetime


@dataclass(frozen=True, slots=True)
class StorageValue:
    """Storage interval (0x10, or 0x09 on older firmware) or recording speed (0xE0)."""

    sub: StorageSub
    value: int


@dataclass(frozen=True, slots=True)
class RecordCount:
    count: int


RECORD_SIZE = 52
RECORD_CELLS = 16
RECORD_TEMPS = 6
MAX_RECORDS_PER_FRAME = (0xFF - 3) // RECORD_SIZE  # 4


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One 52-byte stored record (reference 3.A.4)."""

    event_code: int
    cell_count: int
    cell_voltages_v: tuple[float, ...]  # the 16 slots (cells beyond cell_count are whatever was stored)
    temperatures_c: tuple[float, ...]  # T1-T4, MOS, ambient
    current_a: float
    voltage_v: float
    soc_pct: int
    when: datetime
    pad: int = 0  # byte 51, meaning unknown

    @property
    def event(self) -> str:
        return event_name(self.event_code)

    @property
    def cells_v(self) -> tuple[float, ...]:
        return self.cell_voltages_v[: min(self.cell_count, RECORD_CELLS)]


@dataclass(frozen=True, slots=True)
class HistoryFrame:
    """A 0xD0 0x1A answer with 1..4 records. `marker` is DATA byte 1 (frame offset 5), undocumented."""

    records: tuple[HistoryEntry, ...]
    marker: int = 0


@dataclass(frozen=True, slots=True)
class HistoryEnd:
    """End of the stored data: LEN 0x0D and frame bytes 6-14 zero."""

    marker: int = 0
    tail: bytes = b"\x00\x00"  # DATA bytes 11-12, undocumented


@dataclass(frozen=True, slots=True)
class RawData:
    command: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BootloaderAnswer:
    """A pack's reply in bms-gateway's firmware-upgrade protocol (commands 0xA0-0xA4)."""

    command: int
    reply: bl.BootReply


Response = (
    Ack
    | RealtimeData
    | TextInfo
    | ParamTableData
    | ClockData
    | HeaterThreshold
    | SerialNumber
    | BoardInfo
    | CounterValue
    | StorageTime
    | StorageValue
    | RecordCount
    | HistoryFrame
    | HistoryEnd
    | RawData
    | BootloaderAnswer
)

# History event codes (reference 3.A.4). Codes 128.. are "released" events (code - 127 = original).
_EVENTS: dict[int, str] = {
    1: "Cell OV protection",
    2: "Cell UV protection",
    3: "Pack OV protection",
    4: "Pack UV protection",
    5: "Charge OC1 protection",
    6: "Charge OC2 protection",
    7: "Discharge OC1 protection",
    8: "Discharge OC2 protection",
    9: "Short circuit",
    10: "Charge high temperature",
    11: "Charge low temperature",
    12: "Discharge high temperature",
    13: "Discharge low temperature",
    14: "Start charging",
    15: "Start discharging",
    16: "Timing record",
    36: "Start system",
    37: "Exit system",
    38: "MOS failure",
    42: "Short-circuit lock",
    43: "Discharge OC lock",
    44: "Fire alarm",
    45: "MCB alarm",
}
# Ranges the public sources only summarise: named by their group, with the code.
_EVENT_GROUPS: tuple[tuple[range, str], ...] = (
    (range(17, 32), "Alarm event"),
    (range(32, 36), "MOS/ambient temperature or system event"),
    (range(39, 41), "MOS failure / reverse protection event"),
)
RELEASE_OFFSET = 127


def event_name(code: int) -> str:
    """Event name as the vendor tool shows it (it appends " occurs" to non-timing events)."""
    if code in _EVENTS:
        return _EVENTS[code]
    if code > RELEASE_OFFSET and code - RELEASE_OFFSET in _EVENTS:
        return f"{_EVENTS[code - RELEASE_OFFSET]} released"
    for rng, label in _EVENT_GROUPS:
        if code in rng:
            return f"{label} {code}"
        if code - RELEASE_OFFSET in rng:
            return f"{label} {code - RELEASE_OFFSET} released"
    return f"Event {code}"


def decode_record(rec: bytes) -> HistoryEntry:
    if len(rec) != RECORD_SIZE:
        raise RemoteProtocolError(f"history record must be {RECORD_SIZE} bytes, got {len(rec)}")
    cells = tuple((((rec[i] & 0x1F) << 8) | rec[i + 1]) / 1000.0 for i in range(2, 34, 2))
    temps = tuple(float(b - 50) for b in rec[34:40])
    return HistoryEntry(
        event_code=rec[0],
        cell_count=rec[1],
        cell_voltages_v=cells,
        temperatures_c=temps,
        current_a=round((30000 - _u16_at(rec, 40)) / 100.0, 2),
        voltage_v=_u16_at(rec, 42) / 1000.0,
        soc_pct=rec[44],
        when=decode_datetime(rec[45:51], "history record time"),
        pad=rec[51],
    )


def encode_record(e: HistoryEntry) -> bytes:
    if len(e.cell_voltages_v) != RECORD_CELLS or len(e.temperatures_c) != RECORD_TEMPS:
        raise LocalProtocolError(
            f"a history record has {RECORD_CELLS} cell slots and {RECORD_TEMPS} temperatures"
        )
    out = bytearray((e.event_code, e.cell_count))
    for v in e.cell_voltages_v:
        mv = round(v * 1000)
        if not 0 <= mv <= 0x1FFF:
            raise LocalProtocolError(f"cell voltage {v} V does not fit 13 bits of mV")
        out += mv.to_bytes(2, "big")
    for t in e.temperatures_c:
        raw = round(t) + 50
        if not 0 <= raw <= 0xFF:
            raise LocalProtocolError(f"temperature {t} degC does not fit")
        out.append(raw)
    out += _u16("record current", round(30000 - e.current_a * 100))
    out += _u16("record voltage", round(e.voltage_v * 1000))
    if not 0 <= e.soc_pct <= 0xFF:
        raise LocalProtocolError(f"SOC {e.soc_pct} does not fit a byte")
    out.append(e.soc_pct)
    out += encode_datetime(e.when)
    out.append(e.pad)
    return bytes(out)


def response_data(resp: Response) -> tuple[int, bytes]:
    """(command, DATA) of a response."""
    match resp:
        case Ack(command=cmd, code=code):
            if not 0 <= code <= 0xFF:
                raise LocalProtocolError(f"ACK code must be a byte, got {code}")
            return cmd, bytes((code,))
        case RealtimeData():
            return Cmd.REALTIME, encode_realtime_data(resp)
        case TextInfo(command=cmd, text=text):
            if not text or not text.isascii():
                raise LocalProtocolError(f"text must be non-empty ASCII, got {text!r}")
            if len(text) == 1:
                raise LocalProtocolError("a one-character text would read as an ACK")
            return cmd, text.encode("ascii")
        case ParamTableData(records=records):
            body = bytearray()
            for r in records:
                body += bytes((r.record, 0x02)) + _u16(f"record 0x{r.record:02X}", r.raw)
            return Cmd.READ_PARAMS, bytes(body)
        case ClockData(when=when):
            return Cmd.READ_CLOCK, encode_datetime(when)
        case HeaterThreshold(command=cmd, temperature_c=t, prefix=prefix):
            if len(prefix) != 2:
                raise LocalProtocolError("heater threshold prefix must be 2 bytes")
            return cmd, bytes(prefix) + _u16("heater temperature + 50", t + HEATER_TEMP_OFFSET_C)
        case SerialNumber(serial=sn):
            return Cmd.BOARD_SN, bytes((SN_READ_TAG,)) + encode_serial(sn) + bytes((SN_TERMINATOR,))
        case BoardInfo(data=data):
            if len(data) < 2 or (data[0] == SN_READ_TAG and data[-1] == SN_TERMINATOR):
                raise LocalProtocolError("board info must be at least 2 bytes and not look like an SN answer")
            return Cmd.BOARD_SN, bytes(data)
        case CounterValue(counter=counter, count=count, extra=extra):
            if not 0 <= count <= 0xFFFFFFFF:
                raise LocalProtocolError(f"counter value {count} does not fit 32 bits")
            return COUNTER_READ_CMD[counter], count.to_bytes(4, "big") + bytes(extra)
        case StorageTime(which=which, when=when):
            sub = StorageSub.READ_START_TIME if which == "start" else StorageSub.READ_END_TIME
            return Cmd.STORAGE, bytes((int(sub),)) + encode_datetime(when)
        case StorageValue(sub=sub, value=value):
            if sub not in (
                StorageSub.READ_INTERVAL,
                StorageSub.READ_INTERVAL_OLD,
                StorageSub.READ_RECORDING_SPEED,
            ):
                raise LocalProtocolError(f"0x{int(sub):02X} is not a storage value read")
            return Cmd.STORAGE, bytes((int(sub),)) + _u16("storage value", value)
        case RecordCount(count=count):
            if not 0 <= count <= 0xFFFFFFFF:
                raise LocalProtocolError(f"record count {count} does not fit 32 bits")
            return Cmd.STORAGE, bytes((StorageSub.READ_RECORD_COUNT,)) + count.to_bytes(4, "big")
        case HistoryFrame(records=records, marker=marker):
            if not 1 <= len(records) <= MAX_RECORDS_PER_FRAME:
                raise LocalProtocolError(f"a record frame holds 1..{MAX_RECORDS_PER_FRAME} records")
            head = bytes((StorageSub.READ_RECORDS, marker, len(records)))
            return Cmd.STORAGE, head + b"".join(encode_record(r) for r in records)
        case HistoryEnd(marker=marker, tail=tail):
            if len(tail) != 2:
                raise LocalProtocolError("end-of-data tail must be 2 bytes")
            return Cmd.STORAGE, bytes((StorageSub.READ_RECORDS, marker)) + bytes(9) + bytes(tail)
        case RawData(command=cmd, data=data):
            return cmd, bytes(data)
        case BootloaderAnswer(command=cmd, reply=reply):
            if cmd not in BOOTLOADER_COMMANDS:
                raise LocalProtocolError(f"0x{cmd:02X} is not a bootloader command")
            return cmd, reply.encode()
        case _:
            raise LocalProtocolError(f"cannot encode {resp!r}")


def encode_response(address: int, resp: Response, *, soi: int = SOI) -> bytes:
    """The bytes a pack at `address` sends for `resp` (the simulator's response builder)."""
    cmd, data = response_data(resp)
    return build_frame(address, int(cmd), data, soi=soi)


def encode_realtime(address: int, rt: RealtimeData, *, soi: int = SOI) -> bytes:
    return encode_response(address, rt, soi=soi)


def encode_ack(address: int, command: int, code: int = 0, *, soi: int = SOI) -> bytes:
    return encode_response(address, Ack(command, code), soi=soi)


def encode_param_table(address: int, records: tuple[ParamRecord, ...], *, soi: int = SOI) -> bytes:
    return encode_response(address, ParamTableData(records), soi=soi)


def encode_history_frame(
    address: int, entries: tuple[HistoryEntry, ...], *, marker: int = 0, soi: int = SOI
) -> bytes:
    """A 0xD0 0x1A answer carrying 1..4 records."""
    return encode_response(address, HistoryFrame(entries, marker), soi=soi)


def encode_history_end(address: int, *, soi: int = SOI) -> bytes:
    """The end-of-data answer (LEN 0x0D, frame bytes 6-14 zero)."""
    return encode_response(address, HistoryEnd(), soi=soi)


def _parse_storage(d: bytes) -> Response:
    sub = d[0]
    if sub == StorageSub.READ_RECORDS:
        if len(d) == 13 and not any(d[2:11]):
            return HistoryEnd(marker=d[1], tail=d[11:13])
        if len(d) < 3:
            raise RemoteProtocolError("record frame too short")
        n = d[2]
        if n == 0 or len(d) != 3 + n * RECORD_SIZE:
            raise RemoteProtocolError(
                f"record frame announces {n} records ({3 + n * RECORD_SIZE} data bytes), has {len(d)}"
            )
        recs = tuple(decode_record(d[3 + i * RECORD_SIZE : 3 + (i + 1) * RECORD_SIZE]) for i in range(n))
        return HistoryFrame(recs, marker=d[1])
    if sub in (StorageSub.READ_START_TIME, StorageSub.READ_END_TIME):
        return StorageTime(
            "start" if sub == StorageSub.READ_START_TIME else "end", decode_datetime(d[1:], "storage time")
        )
    if sub in (StorageSub.READ_INTERVAL, StorageSub.READ_INTERVAL_OLD, StorageSub.READ_RECORDING_SPEED):
        if len(d) != 3:
            raise RemoteProtocolError(f"storage value 0x{sub:02X}: expected 2 value bytes, got {len(d) - 1}")
        return StorageValue(StorageSub(sub), _u16_at(d, 1))
    if sub == StorageSub.READ_RECORD_COUNT:
        if len(d) != 5:
            raise RemoteProtocolError(f"record count: expected 4 value bytes, got {len(d) - 1}")
        return RecordCount(int.from_bytes(d[1:5], "big"))
    raise RemoteProtocolError(f"unknown storage sub-function 0x{sub:02X} in a response")


def parse_response(frame: TpFrame, request: Request | None = None) -> Response:
    """The typed response a validated frame carries. `request` (what was asked) settles the cases
    the bytes cannot: which parameter table, board info versus SN, and an ACK whose bytes have the
    shape of a request (the caller has already excluded the exact echo of what it sent)."""
    cmd, d = frame.command, frame.data
    if cmd not in COMMAND_TITLES:
        raise RemoteProtocolError(f"unknown command 0x{cmd:02X}")
    if frame.is_request and request is None:
        raise RemoteProtocolError(
            f"this is a request of command 0x{cmd:02X} ({COMMAND_TITLES[cmd]}), not a response"
        )
    if len(d) == 1:
        return Ack(cmd, d[0])
    if not d and cmd not in (Cmd.READ_PARAMS,):
        raise RemoteProtocolError(f"empty response to command 0x{cmd:02X}")
    if cmd == Cmd.REALTIME:
        return decode_realtime(d)
    if cmd in (Cmd.VERSION, Cmd.BARCODE):
        return TextInfo(cmd, d.decode("ascii", errors="replace").rstrip("\x00 "))
    if cmd == Cmd.READ_PARAMS:
        if len(d) % 4:
            raise RemoteProtocolError(f"parameter table: {len(d)} data bytes is not a multiple of 4")
        recs = []
        for i in range(0, len(d), 4):
            if d[i + 1] != 0x02:
                raise RemoteProtocolError(
                    f"parameter record 0x{d[i]:02X}: size byte 0x{d[i + 1]:02X}, expected 0x02"
                )
            recs.append(ParamRecord(d[i], _u16_at(d, i + 2)))
        table = request.table if isinstance(request, ReadParamTable) else None
        return ParamTableData(tuple(recs), table)
    if cmd == Cmd.READ_CLOCK:
        return ClockData(decode_datetime(d, "clock"))
    if cmd in (Cmd.READ_HEATER_ON, Cmd.READ_HEATER_OFF):
        if len(d) != 4:
            raise RemoteProtocolError(f"heater temperature: expected 4 data bytes, got {len(d)}")
        return HeaterThreshold(cmd, _u16_at(d, 2) - HEATER_TEMP_OFFSET_C, d[:2])
    if cmd == Cmd.BOARD_SN:
        if isinstance(request, ReadBoardInfo) or not (d[0] == SN_READ_TAG and d[-1] == SN_TERMINATOR):
            return BoardInfo(d)
        return SerialNumber(d[1:-1].decode("ascii", errors="replace"))
    if cmd in _READ_CMD_COUNTER:
        if len(d) < 4:
            raise RemoteProtocolError(f"protection counter: expected at least 4 data bytes, got {len(d)}")
        return CounterValue(_READ_CMD_COUNTER[Cmd(cmd)], int.from_bytes(d[:4], "big"), d[4:])
    if cmd == Cmd.STORAGE:
        return _parse_storage(d)
    if cmd == Cmd.REVOV_06:
        return RawData(cmd, d)
    if cmd in BOOTLOADER_COMMANDS:
        return BootloaderAnswer(cmd, bl.BootReply.decode(d))
    raise RemoteProtocolError(
        f"command 0x{cmd:02X} ({COMMAND_TITLES[cmd]}) is answered with a 1-byte ACK, got {len(d)} data bytes"
    )
