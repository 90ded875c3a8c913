"""Pylontech LV RS485 battery emulation: a sans-I/O responder (request bytes in, response bytes out).

The inverter is the master and polls; the gateway answers as a Pylontech stack whose modules are the
bank's packs (position 1 = master at ADR 2, position k at ADR 1 + k, group g adds 0x10·g). Frames are
the YD/T1363-style ASCII frames `~ VER ADR CID1 CID2 LENGTH INFO CHKSUM \\r` (Pylontech "RS485
protocol" V2.8/V3.3 for the module commands; the system commands as public emulators implement
them). In a response CID2 carries the return code (RTN), never the command; VER is the one the
inverter used.

The framing itself (LENGTH/LCHKSUM, CHKSUM, the encoder, the return codes) is `protocol.ydt1363`,
shared with the PACE BMS protocol; this module keeps its own tolerant reader (`parse_frame` reports
the checks so that the responder can answer them).

Commands: module level 0x4F, 0x51, 0x42 (INFO = ADR, or 0xFF for the whole stack), 0x44 (same), 0x47,
0x92, 0x93, 0x94 (set by the inverter, kept 10 s), 0x95, 0x96; system level 0x60–0x64 (master only).
The gateway never switches a pack off on 0x95/0x64: the request is acknowledged and reported.

Answers have the layout of real Pylontech packs (public captures of US2000/US3000/UP2500 answers, see
docs/inverter-rs485.md and tests/captures/): 0x42, 0x44 and 0x47 start with an INFOFLAG byte; the
0x44 module block carries six bytes after the three current/voltage states (Status1–5 and one more,
sent as 0x00 as the captures show); the discharge current limit of 0x92 and 0x47 is negative
(real packs send `FE8E` = -37.0 A). Requests are read as tolerantly as real packs read them: INFO of
0x42/0x44/0x92/0x93 may carry a second byte after the address (the `pylontech` client sends
`0201`); a second byte 0xFF asks 0x42/0x44 for the whole stack.

Layouts no source states are *inferred* and answered only when `PylonOptions` opts in (all off by
default): the whole-stack (INFO 0xFF) answer of 0x44 (off: RTN 90, the INFO address is not served;
the 0x42 whole-stack answer is captured from real packs and always served), the 2-byte software
version of 0x60, the field order of 0x94 and the 1-based pack/cell numbering of the 0x61 location
words (off: RTN 04, command not supported).

Requests that fail a check are answered with the matching RTN when they are addressed to us: CHKSUM
→ 02, LCHKSUM → 03, VER → 01, CID1/CID2 → 04, INFO shape → 05, values → 06, INFO address → 90,
module without fresh data → 91. Frames that are not for us, unreadable or responses (CID2 is an RTN)
are ignored. Time is passed in (monotonic seconds); nothing here performs I/O or keeps global state.

The inverter's side (building requests, decoding answers, ours or a real pack's, by the counts
they declare) is `protocol.inverter.rs485.pylon_peer`: the capture tests hold our answers against
real ones with it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from protocol.bms.base import Meaning
from protocol.buffer import BoundedBuffer
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.inverter.bank import BankValues, PackValue
from protocol.inverter.flags import PROTECTION, WARNING, FlagOutput, require
from protocol.inverter.rs485.base import (
    BankView,
    Exchange,
    Limits,
    ModuleView,
    ResponderSettings,
    Rs485Responder,
)
from protocol.ydt1363 import EOI, SOI, Rtn
from protocol.ydt1363 import MAX_LENID as MAX_INFO_CHARS
from protocol.ydt1363 import chksum as checksum
from protocol.ydt1363 import encode_frame as encode_frame
from protocol.ydt1363 import length_field as length_field

CID1_BATTERY = 0x46
MASTER_POSITION_ADR = 2  # ADR of module position 1
MAX_MODULES = 14  # ADR low nibble 2..15
SET_MANAGEMENT_HOLD_S = 10.0  # 0x94 values revert to the battery's own after this long
ALL_MODULES = 0xFF


RTN_CODES = frozenset(int(r) for r in Rtn)


class Command(enum.IntEnum):
    PROTOCOL_VERSION = 0x4F
    MANUFACTURER_INFO = 0x51
    ANALOG = 0x42
    ALARM = 0x44
    SYSTEM_PARAMETERS = 0x47
    MANAGEMENT = 0x92
    SERIAL_NUMBER = 0x93
    SET_MANAGEMENT = 0x94
    TURN_OFF = 0x95
    SOFTWARE_VERSION = 0x96
    SYSTEM_BASIC = 0x60
    SYSTEM_ANALOG = 0x61
    SYSTEM_ALARM = 0x62
    SYSTEM_MANAGEMENT = 0x63
    SYSTEM_TURN_OFF = 0x64


SYSTEM_COMMANDS = frozenset(
    {
        Command.SYSTEM_BASIC,
        Command.SYSTEM_ANALOG,
        Command.SYSTEM_ALARM,
        Command.SYSTEM_MANAGEMENT,
        Command.SYSTEM_TURN_OFF,
    }
)
INFOFLAG = 0x00  # first byte of the 0x42/0x44/0x47 answers (real packs send 0x00, 0x10 or 0x11)
# Commands whose INFO is one byte naming the module (must equal ADR; 0xFF where allowed).
ADDRESSED = {
    Command.ANALOG: True,  # value: 0xFF (whole stack) accepted
    Command.ALARM: True,  # 0xFF only when the *inferred* whole-stack replies are opted in
    Command.MANAGEMENT: False,
    Command.SERIAL_NUMBER: False,
    Command.SET_MANAGEMENT: False,
    Command.TURN_OFF: False,
    Command.SOFTWARE_VERSION: False,
}
# Commands real packs also answer with a second INFO byte after the address (`pylontech` 0.1.x sends
# [ADR, module number] and [ADR, 0xFF] for the whole stack).
TWO_BYTE_INFO = frozenset({Command.ANALOG, Command.ALARM, Command.MANAGEMENT, Command.SERIAL_NUMBER})
ALARM_TAIL_BYTES = 1  # 0x44: real answers carry one byte after Status5 (0x00 in every capture)
SET_MANAGEMENT_INFO_LEN = 9  # addr + 4 x u16


# --------------------------------------------------------------------------------------------
# Framing


@dataclass(frozen=True, slots=True)
class PylonFrame:
    """A frame read from the line (fields decoded, checks reported rather than raised)."""

    raw: bytes
    ver: int
    adr: int
    cid1: int
    cid2: int
    length: int
    info: bytes
    chksum_ok: bool
    lchksum_ok: bool
    lenid_ok: bool

    @property
    def lenid(self) -> int:
        return self.length & 0xFFF


def _hexbyte(text: bytes, pos: int) -> int:
    return int(text[pos : pos + 2], 16)


def parse_frame(raw: bytes) -> PylonFrame:
    """Read one complete frame (`~` … `\\r`).

    Raises `RemoteProtocolError` when the header cannot even be read (bad characters, too short);
    checksum, LCHKSUM and LENID mismatches are reported in the frame so a responder can answer them.
    """
    if len(raw) < 18 or raw[0] != SOI or raw[-1] != EOI:
        raise RemoteProtocolError(f"not a complete frame ({len(raw)} bytes)")
    text = raw[1:-1]
    if len(text) % 2:
        raise RemoteProtocolError("odd number of characters between SOI and EOI")
    try:
        text.decode("ascii")
        int(text, 16)
    except (UnicodeDecodeError, ValueError):
        raise RemoteProtocolError("characters other than hexadecimal digits in the frame") from None
    ver, adr, cid1, cid2 = (_hexbyte(text, i) for i in (0, 2, 4, 6))
    length = int(text[8:12], 16)
    info_hex = text[12:-4]
    info = bytes.fromhex(info_hex.decode("ascii"))
    lenid = length & 0xFFF
    return PylonFrame(
        raw=bytes(raw),
        ver=ver,
        adr=adr,
        cid1=cid1,
        cid2=cid2,
        length=length,
        info=info,
        chksum_ok=checksum(text[:-4]) == int(text[-4:], 16),
        lchksum_ok=length_field(lenid) == length,
        lenid_ok=lenid == len(info_hex),
    )


class FrameSplitter(BoundedBuffer):
    """Cuts the incoming byte stream into `~ … \\r` candidates (bounded, resynchronising)."""

    max_buffer = 8 + 12 + MAX_INFO_CHARS + 8

    def gap(self) -> None:
        """Drop whatever is buffered (an incomplete frame after the line went quiet)."""
        self.clear()

    def next_candidate(self) -> bytes | None:
        while True:
            if not self._skip_to(b"~"):
                return None
            end = self._buf.find(b"\r")
            if end < 0:
                return None
            # a second SOI before the EOI: the first frame was truncated; restart at the new SOI
            restart = self._buf.find(b"~", 1, end)
            if restart > 0:
                self._discard(restart)
                continue
            candidate = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            return candidate


# --------------------------------------------------------------------------------------------
# Wire value helpers (saturating: a measurement never makes an answer impossible)


def _sat(value: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(value)))


def u8(value: float) -> bytes:
    return _sat(value, 0, 0xFF).to_bytes(1, "big")


def u16(value: float) -> bytes:
    return _sat(value, 0, 0xFFFF).to_bytes(2, "big")


def s16(value: float) -> bytes:
    return _sat(value, -0x8000, 0x7FFF).to_bytes(2, "big", signed=True)


def u24(value: float) -> bytes:
    return _sat(value, 0, 0xFFFFFF).to_bytes(3, "big")


def mv(volts: float) -> bytes:
    return u16(volts * 1000)


def deci_kelvin(celsius: float) -> bytes:
    """Temperatures in 0.1 K: °C × 10 + 2731."""
    return u16(celsius * 10 + 2731)


def deci_amp(amps: float) -> bytes:
    return s16(amps * 10)


def ascii_field(text: str, size: int, pad: bytes = b" ") -> bytes:
    return text.encode("ascii", "replace")[:size].ljust(size, pad)


# --------------------------------------------------------------------------------------------
# INFO layouts (tables: field name, encoder)

U24_CAPACITY_THRESHOLD_AH = 65.0  # above this the u24 capacity fields are used (user-defined = 4)


def module_analog_block(m: ModuleView) -> bytes:
    """The 0x42 module block after the address/count byte."""
    cells = m.cell_voltages_v[:0xFF]
    temps = m.temperatures_c[:0xFF]
    remaining = (m.remaining_capacity_ah or 0.0) * 1000
    full = (m.full_capacity_ah or 0.0) * 1000
    big = max(m.remaining_capacity_ah or 0.0, m.full_capacity_ah or 0.0) > U24_CAPACITY_THRESHOLD_AH
    fields: list[bytes] = [u8(len(cells))]
    fields += [mv(v) for v in cells]
    fields.append(u8(len(temps)))
    fields += [deci_kelvin(t) for t in temps]
    fields += [deci_amp(m.current_a), mv(m.voltage_v)]
    if big:
        fields += [u16(0xFFFF), u8(4), u16(0xFFFF), u16(m.cycles or 0), u24(remaining), u24(full)]
    else:
        fields += [u16(remaining), u8(2), u16(full), u16(m.cycles or 0)]
    return b"".join(fields)


# Status values for 0x44 per cell / sensor / current / voltage.
ST_NORMAL, ST_BELOW, ST_ABOVE, ST_OTHER = 0x00, 0x01, 0x02, 0xF0

# 0x44 Status1 bits: (bit, neutral flag).
COMMUNICATION = Meaning.COMMUNICATION.value  # a stale bank raises it at both levels
STATUS1_OUTPUT = "rs485.pylon.0x44"  # Status1 bits per meaning (mappings/flags/outputs.toml)
SYSTEM_ALARM_OUTPUT = "rs485.pylon.0x62"  # byte.bit per meaning


def _level(value: float, low: float, high: float) -> int:
    if value < low:
        return ST_BELOW
    if value > high:
        return ST_ABOVE
    return ST_NORMAL


def module_alarm_block(m: ModuleView, view: BankView) -> bytes:
    """The 0x44 module block after the address/count byte."""
    p = view.parameters
    cell_states = [_level(v, p.cell_low_voltage_v, p.cell_high_voltage_v) for v in m.cell_voltages_v[:0xFF]]
    temp_states = [
        _level(t, p.discharge_low_temperature_c, p.discharge_high_temperature_c)
        for t in m.temperatures_c[:0xFF]
    ]
    charge_state = ST_ABOVE if m.current_a > p.charge_current_limit_a else ST_NORMAL
    discharge_state = ST_ABOVE if -m.current_a > p.discharge_current_limit_a else ST_NORMAL
    voltage_state = _level(m.voltage_v, p.module_low_voltage_v, p.module_high_voltage_v)
    out = require(view.flag_outputs, STATUS1_OUTPUT)
    status1 = out.bits(PROTECTION, m.protections) | out.bits(WARNING, m.alarms)
    status2 = (
        (0x08 if m.current_a < -0.1 else 0)
        | (0x04 if m.discharge_mos_on else 0)
        | (0x02 if m.charge_mos_on else 0)
    )
    status3 = (
        (0x80 if m.current_a > 0.1 else 0)
        | (0x40 if m.current_a < -0.1 else 0)
        | (0x20 if m.heater_on else 0)
        | (0x08 if m.soc_pct >= 100.0 else 0)
    )
    cell_fault = 0
    for i, st in enumerate(cell_states[:16]):
        if st != ST_NORMAL:
            cell_fault |= 1 << i
    fields = [u8(len(cell_states)), bytes(cell_states), u8(len(temp_states)), bytes(temp_states)]
    fields += [u8(charge_state), u8(voltage_state), u8(discharge_state)]
    fields += [u8(status1), u8(status2), u8(status3), u8(cell_fault & 0xFF), u8(cell_fault >> 8)]
    fields.append(bytes(ALARM_TAIL_BYTES))
    return b"".join(fields)


def management_status(limits: Limits) -> int:
    """0x92/0x63 status byte: b7 charge enable, b6 discharge enable, b5/b4 force charge, b3 full."""
    return (
        (0x80 if limits.charge_enabled else 0)
        | (0x40 if limits.discharge_enabled else 0)
        | (0x20 if limits.force_charge_1 else 0)
        | (0x10 if limits.force_charge_2 else 0)
        | (0x08 if limits.full_charge_request else 0)
    )


def management_block(limits: Limits, *, negative_discharge: bool = True) -> bytes:
    """0x92 (and 0x63) values. Real packs send the discharge current limit negative in 0x92
    (captures: `FE8E` = -37.0 A, `FDD5` = -55.5 A); `negative_discharge=False` sends the magnitude
    (0x63, whose only public sources, emulators, send it positive)."""
    discharge_a = -limits.discharge_current_a if negative_discharge else limits.discharge_current_a
    return b"".join(
        [
            mv(limits.charge_voltage_v),
            mv(limits.discharge_voltage_v),
            deci_amp(limits.charge_current_a),
            deci_amp(discharge_a),
            u8(management_status(limits)),
        ]
    )


def system_parameters_info(view: BankView) -> bytes:
    """0x47: INFOFLAG, then the limits; the discharge current limit negative, as real packs send it
    (capture `FC7C` = -90.0 A)."""
    p = view.parameters
    return b"".join(
        [
            u8(INFOFLAG),
            mv(p.cell_high_voltage_v),
            mv(p.cell_low_voltage_v),
            mv(p.cell_under_voltage_v),
            deci_kelvin(p.charge_high_temperature_c),
            deci_kelvin(p.charge_low_temperature_c),
            deci_amp(p.charge_current_limit_a),
            mv(p.module_high_voltage_v),
            mv(p.module_low_voltage_v),
            mv(p.module_under_voltage_v),
            deci_kelvin(p.discharge_high_temperature_c),
            deci_kelvin(p.discharge_low_temperature_c),
            deci_amp(-p.discharge_current_limit_a),
        ]
    )


def _location(view: BankView, e: PackValue | None) -> bytes:
    """High byte = pack (its module position), low byte = cell/sensor; both numbered from 1 (*inferred*)."""
    position = view.position_of(e)
    if e is None or position is None:
        return bytes([0, 0])
    return bytes([min(position, 0xFF), min(e.index, 0xFF)])


def _temp_or_zero(value: float | None) -> bytes:
    return u16(0) if value is None else deci_kelvin(value)


def system_analog_info(view: BankView, s: BankValues) -> bytes:
    """0x61: 49 bytes, big-endian (layout: as public emulators answer it), from the bank `s`."""

    def ext_mv(e: PackValue | None) -> bytes:
        return (u16(0) if e is None else mv(e.value)) + _location(view, e)

    def ext_temp(e: PackValue | None) -> bytes:
        return _temp_or_zero(None if e is None else e.value) + _location(view, e)

    info = b"".join(
        [
            mv(s.voltage_v or 0.0),
            s16((s.current_a or 0.0) * 100),  # 10 mA
            u8(s.soc_pct or 0.0),
            u16(s.cycles_mean or 0),
            u16(s.cycles_max or 0),
            u8(s.soh_pct if s.soh_pct is not None else 100),
            u8(s.soh_min_pct if s.soh_min_pct is not None else 100),
            ext_mv(s.cell_max),
            ext_mv(s.cell_min),
            _temp_or_zero(s.temp_mean_c),
            ext_temp(s.temp_max),
            ext_temp(s.temp_min),
            _temp_or_zero(s.mos_temp_mean_c),
            ext_temp(s.mos_temp_max),
            ext_temp(s.mos_temp_min),
            _temp_or_zero(s.board_temp_mean_c),
            ext_temp(s.board_temp_max),
            ext_temp(s.board_temp_min),
        ]
    )
    if len(info) != 49:  # pragma: no cover - layout invariant
        raise LocalProtocolError(f"system analog block is {len(info)} bytes, expected 49")
    return info


def _alarm_bytes(out: FlagOutput, level: str, meanings: frozenset[str]) -> tuple[int, int]:
    """Bytes 1 and 2 of a 0x62 pair (targets "byte.bit")."""
    values = [0, 0]
    for target in out.raised(level, meanings):
        byte, bit = target.split(".")
        values[int(byte) - 1] |= 1 << int(bit)
    return values[0], values[1]


def system_alarm_info(view: BankView) -> bytes:
    """0x62: warning byte 1, warning byte 2, protection byte 1, protection byte 2."""
    warnings = set(view.alarms)
    protections = set(view.protections)
    for m in view.modules:
        if m.fresh:
            warnings |= m.alarms
            protections |= m.protections
    if view.stale:
        warnings.add(COMMUNICATION)
        protections.add(COMMUNICATION)
    out = require(view.flag_outputs, SYSTEM_ALARM_OUTPUT)
    return bytes(
        [
            *_alarm_bytes(out, WARNING, frozenset(warnings)),
            *_alarm_bytes(out, PROTECTION, frozenset(protections)),
        ]
    )


# --------------------------------------------------------------------------------------------
# The responder


@dataclass(frozen=True, slots=True)
class PylonOptions:
    group: int = 0  # master DIP 2-4: ADR = position + 1 + 0x10 * group
    accepted_versions: frozenset[int] | None = None  # None: answer any VER (echoed back)
    share_module_limits: bool = True  # 0x92 per module: the bank decision split over fresh modules
    # *inferred* layouts, each answered only when opted in (see the module docstring)
    inferred_stack_replies: bool = False  # 0x44 INFO 0xFF: INFOFLAG, module count, module blocks
    inferred_system_basic: bool = False  # 0x60: software version as 2 bytes (major, minor)
    inferred_set_management: bool = False  # 0x94: values in the 0x92 order
    inferred_system_analog: bool = False  # 0x61: location words number packs and cells from 1


@dataclass(frozen=True, slots=True)
class ManagementRequest:
    """Values the inverter set with 0x94 for one module (kept `SET_MANAGEMENT_HOLD_S`)."""

    position: int
    charge_voltage_v: float
    discharge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float
    at: float  # monotonic seconds


class _Answer(Exception):
    """Internal: stop handling a request and answer it with this RTN."""

    def __init__(self, rtn: Rtn, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.rtn = rtn
        self.outcome = outcome
        self.detail = detail


class PylonResponder(Rs485Responder):
    """Answers Pylontech RS485 polls from a `BankView` (see the module docstring)."""

    name = "pylon-rs485"

    def command_label(self, command: int) -> str:
        return f"0x{command:02X}"  # CID2

    @classmethod
    def from_settings(cls, settings: ResponderSettings) -> PylonResponder:
        return cls(
            PylonOptions(
                group=settings.pylon_group,
                share_module_limits=settings.pylon_share_module_limits,
                inferred_stack_replies=settings.pylon_inferred_stack_replies,
                inferred_system_basic=settings.pylon_inferred_system_basic,
                inferred_set_management=settings.pylon_inferred_set_management,
                inferred_system_analog=settings.pylon_inferred_system_analog,
            )
        )

    def __init__(self, options: PylonOptions | None = None) -> None:
        self.options = options or PylonOptions()
        if not 0 <= self.options.group <= 0xF:
            raise LocalProtocolError(f"group {self.options.group} out of range 0-15")
        self._splitter = FrameSplitter()
        self._set: dict[int, ManagementRequest] = {}
        self.turn_off_requests = 0
        self.last_turn_off_at: float | None = None
        self._handlers: dict[int, Callable[[PylonFrame, int, BankView, float], bytes]] = {
            Command.PROTOCOL_VERSION: self._protocol_version,
            Command.MANUFACTURER_INFO: self._manufacturer,
            Command.ANALOG: self._analog,
            Command.ALARM: self._alarm,
            Command.SYSTEM_PARAMETERS: self._system_parameters,
            Command.MANAGEMENT: self._management,
            Command.SERIAL_NUMBER: self._serial,
            Command.SET_MANAGEMENT: self._set_management,
            Command.TURN_OFF: self._turn_off,
            Command.SOFTWARE_VERSION: self._software_version,
            Command.SYSTEM_BASIC: self._system_basic,
            Command.SYSTEM_ANALOG: self._system_analog,
            Command.SYSTEM_ALARM: self._system_alarm,
            Command.SYSTEM_MANAGEMENT: self._system_management,
            Command.SYSTEM_TURN_OFF: self._turn_off,
        }

    # --- addressing -------------------------------------------------------------------------

    def adr_of(self, position: int) -> int:
        return 0x10 * self.options.group + MASTER_POSITION_ADR + position - 1

    def position_of(self, adr: int, view: BankView) -> int | None:
        """The module position an ADR selects, or None when no emulated module has it."""
        if adr >> 4 != self.options.group:
            return None
        position = (adr & 0xF) - MASTER_POSITION_ADR + 1
        if 1 <= position <= min(len(view.modules), MAX_MODULES) and view.module(position) is not None:
            return position
        return None

    # --- stream API -------------------------------------------------------------------------

    @property
    def discarded_bytes(self) -> int:
        return self._splitter.discarded_bytes

    def feed(self, data: bytes) -> None:
        self._splitter.feed(data)

    def line_idle(self) -> None:
        self._splitter.gap()

    def process(self, view: BankView, now: float) -> list[Exchange]:
        out: list[Exchange] = []
        while (candidate := self._splitter.next_candidate()) is not None:
            out.append(self.handle(candidate, view, now))
        return out

    def active_requests(self, now: float) -> dict[int, ManagementRequest]:
        """0x94 values still in force (set less than `SET_MANAGEMENT_HOLD_S` ago), by position."""
        return {p: r for p, r in self._set.items() if now - r.at < SET_MANAGEMENT_HOLD_S}

    def handle(self, raw: bytes, view: BankView, now: float) -> Exchange:
        """Answer one complete frame (`~` … `\\r`)."""
        try:
            frame = parse_frame(raw)
        except RemoteProtocolError as err:
            return Exchange(None, None, False, "ignored", f"unreadable frame: {err}")
        position = self.position_of(frame.adr, view)
        if position is None:
            return Exchange(frame.cid2, None, False, "ignored", f"ADR 0x{frame.adr:02X} is not ours")
        if frame.cid2 in RTN_CODES:
            return Exchange(frame.cid2, None, False, "ignored", "a response (CID2 is a return code)")
        try:
            self._check(frame)
            handler = self._handlers[frame.cid2]
            response_info = handler(frame, position, view, now)
            response = encode_frame(frame.ver, frame.adr, CID1_BATTERY, Rtn.NORMAL, response_info)
        except _Answer as answer:
            return Exchange(
                frame.cid2,
                encode_frame(frame.ver, frame.adr, CID1_BATTERY, answer.rtn),
                False,
                answer.outcome,
                answer.detail,
            )
        except LocalProtocolError as err:  # an answer the frame cannot carry (INFO too long)
            return Exchange(
                frame.cid2,
                encode_frame(frame.ver, frame.adr, CID1_BATTERY, Rtn.INTERNAL_COMM_ERROR),
                False,
                "internal",
                str(err),
            )
        return Exchange(frame.cid2, response, True, "ok")

    def _check(self, frame: PylonFrame) -> None:
        if not frame.chksum_ok:
            raise _Answer(Rtn.CHKSUM_ERROR, "checksum", "CHKSUM mismatch")
        if not frame.lchksum_ok:
            raise _Answer(Rtn.LCHKSUM_ERROR, "lchksum", "LCHKSUM mismatch")
        if not frame.lenid_ok:
            raise _Answer(Rtn.FORMAT_ERROR, "length", f"LENID {frame.lenid} != INFO length")
        accepted = self.options.accepted_versions
        if accepted is not None and frame.ver not in accepted:
            raise _Answer(Rtn.VER_ERROR, "version", f"VER 0x{frame.ver:02X} not accepted")
        if frame.cid1 != CID1_BATTERY:
            raise _Answer(Rtn.CID2_INVALID, "command", f"CID1 0x{frame.cid1:02X} is not 0x46")
        if frame.cid2 not in self._handlers:
            raise _Answer(Rtn.CID2_INVALID, "command", f"CID2 0x{frame.cid2:02X} not supported")

    # --- helpers ----------------------------------------------------------------------------

    def _addressed(self, frame: PylonFrame, command: Command, expected_len: int = 1) -> int:
        """Check the INFO command byte; returns it (the ADR, or 0xFF for the whole stack).

        Tolerant like real packs: for `TWO_BYTE_INFO` commands a second byte after the address is
        accepted (the `pylontech` client's [ADR, module number]); a second byte 0xFF asks for the
        whole stack."""
        info = frame.info
        two_byte = command in TWO_BYTE_INFO and expected_len == 1 and len(info) == 2
        if len(info) != expected_len and not two_byte:
            raise _Answer(Rtn.FORMAT_ERROR, "format", f"INFO of {len(info)} bytes, expected {expected_len}")
        value = info[0]
        if two_byte and value == frame.adr and info[1] == ALL_MODULES:
            value = ALL_MODULES
        whole_stack = ADDRESSED.get(command, False) and (
            command == Command.ANALOG or self.options.inferred_stack_replies
        )
        if value == frame.adr or (value == ALL_MODULES and whole_stack):
            return value
        raise _Answer(Rtn.ADR_ERROR, "address", f"INFO address 0x{value:02X} does not match ADR")

    def _fresh_module(self, view: BankView, position: int) -> ModuleView:
        m = view.module(position)
        if m is None or not m.fresh or not m.cell_voltages_v:
            raise _Answer(Rtn.INTERNAL_COMM_ERROR, "no_data", f"module {position} has no fresh data")
        return m

    @staticmethod
    def _require_opt_in(enabled: bool, command: int, option: str) -> None:
        """An *inferred* layout not opted into: answered as an unsupported command (RTN 04)."""
        if not enabled:
            raise _Answer(
                Rtn.CID2_INVALID, "command", f"0x{command:02X} has an inferred layout; enable {option}"
            )

    def _require_master(self, position: int, command: int) -> None:
        """System commands are the master's (*inferred*: a slave answers RTN 04)."""
        if position != 1:
            raise _Answer(Rtn.CID2_INVALID, "command", f"system command 0x{command:02X} only at the master")

    def module_limits(self, view: BankView, position: int, now: float) -> Limits:
        """0x92 answer for one module: the bank decision shared over the fresh modules, blocked when
        the module or the bank is stale, tightened by the inverter's own 0x94 values while held."""
        limits = view.effective_limits
        m = view.module(position)
        if m is None or not m.fresh:
            limits = limits.blocked
        fresh = sum(1 for mod in view.modules if mod.fresh) or 1
        share = 1.0 / fresh if self.options.share_module_limits else 1.0
        charge_a = limits.charge_current_a * share
        discharge_a = limits.discharge_current_a * share
        charge_v, discharge_v = limits.charge_voltage_v, limits.discharge_voltage_v
        req = self.active_requests(now).get(position)
        if req is not None:
            charge_a = min(charge_a, req.charge_current_a)
            discharge_a = min(discharge_a, req.discharge_current_a)
            charge_v = min(charge_v, req.charge_voltage_v)
            discharge_v = max(discharge_v, req.discharge_voltage_v)
        return replace(
            limits,
            charge_voltage_v=charge_v,
            discharge_voltage_v=discharge_v,
            charge_current_a=charge_a,
            discharge_current_a=discharge_a,
        )

    def system_limits(self, view: BankView, now: float) -> Limits:
        """0x63 answer: the bank decision, tightened by any 0x94 values still held."""
        limits = view.effective_limits
        held = self.active_requests(now)
        if not held:
            return limits
        positions = [m.position for m in view.modules if m.fresh]
        per_module = [self.module_limits(view, p, now) for p in positions]
        charge_a = min(limits.charge_current_a, sum(x.charge_current_a for x in per_module))
        discharge_a = min(limits.discharge_current_a, sum(x.discharge_current_a for x in per_module))
        return replace(
            limits,
            charge_voltage_v=min([limits.charge_voltage_v, *(r.charge_voltage_v for r in held.values())]),
            discharge_voltage_v=max(
                [limits.discharge_voltage_v, *(r.discharge_voltage_v for r in held.values())]
            ),
            charge_current_a=charge_a,
            discharge_current_a=discharge_a,
        )

    # --- command handlers (return the response INFO, or raise _Answer) ----------------------

    def _protocol_version(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        return b""  # the version travels in VER, which is echoed

    def _manufacturer(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        ident = view.identity
        major, minor = ident.software_version
        # padded as real packs pad them (captures: "US3000C" + NULs, "Pylon" + '-')
        return (
            ascii_field(ident.battery_name, 10, b"\x00")
            + bytes([major & 0xFF, minor & 0xFF])
            + ascii_field(ident.manufacturer, 20, b"-")
        )

    def _analog(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        target = self._addressed(frame, Command.ANALOG)
        if target == ALL_MODULES:
            # *inferred* layout: INFOFLAG, module count, then the module blocks by declared count
            self._require_master(position, frame.cid2)
            mods = [m for m in view.modules if m.fresh and m.cell_voltages_v][:MAX_MODULES]
            if not mods:
                raise _Answer(Rtn.INTERNAL_COMM_ERROR, "no_data", "no module has fresh data")
            return bytes([INFOFLAG, len(mods)]) + b"".join(module_analog_block(m) for m in mods)
        m = self._fresh_module(view, position)
        return bytes([INFOFLAG, frame.adr]) + module_analog_block(m)

    def _alarm(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        target = self._addressed(frame, Command.ALARM)
        if target == ALL_MODULES:
            # *inferred* layout: INFOFLAG, module count, then the module blocks by declared count
            self._require_master(position, frame.cid2)
            mods = [m for m in view.modules if m.fresh and m.cell_voltages_v][:MAX_MODULES]
            if not mods:
                raise _Answer(Rtn.INTERNAL_COMM_ERROR, "no_data", "no module has fresh data")
            return bytes([INFOFLAG, len(mods)]) + b"".join(module_alarm_block(m, view) for m in mods)
        m = self._fresh_module(view, position)
        return bytes([INFOFLAG, frame.adr]) + module_alarm_block(m, view)

    def _system_parameters(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        return system_parameters_info(view)

    def _management(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._addressed(frame, Command.MANAGEMENT)
        return bytes([frame.adr]) + management_block(self.module_limits(view, position, now))

    def _serial(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._addressed(frame, Command.SERIAL_NUMBER)
        m = view.module(position)
        serial = m.serial if m is not None else ""
        return bytes([frame.adr]) + ascii_field(serial, 16)

    def _set_management(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._require_opt_in(self.options.inferred_set_management, frame.cid2, "inferred_set_management")
        self._addressed(frame, Command.SET_MANAGEMENT, SET_MANAGEMENT_INFO_LEN)
        info = frame.info  # *inferred* order: the 0x92 one (charge V, discharge V, charge A, discharge A)
        charge_mv = int.from_bytes(info[1:3], "big")
        discharge_mv = int.from_bytes(info[3:5], "big")
        charge_da = int.from_bytes(info[5:7], "big", signed=True)
        # the discharge limit travels negative in real 0x92 answers; either sign is read as a magnitude
        discharge_da = abs(int.from_bytes(info[7:9], "big", signed=True))
        if charge_mv < discharge_mv or charge_da < 0:
            raise _Answer(
                Rtn.INVALID_DATA,
                "invalid_data",
                "charge voltage below discharge voltage or negative charge current",
            )
        self._set[position] = ManagementRequest(
            position, charge_mv / 1000, discharge_mv / 1000, charge_da / 10, discharge_da / 10, now
        )
        return b""

    def _turn_off(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        if frame.cid2 == Command.SYSTEM_TURN_OFF:
            self._require_master(position, frame.cid2)
        else:
            self._addressed(frame, Command.TURN_OFF)
        self.turn_off_requests += 1
        self.last_turn_off_at = now
        return b""

    def _software_version(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._addressed(frame, Command.SOFTWARE_VERSION)
        m = view.module(position)
        numbers = list(m.software_version if m is not None else ())[:5]
        if not numbers:
            numbers = [*view.identity.software_version, 0, 0, 0]
        numbers = (numbers + [0] * 5)[:5]
        return bytes([frame.adr]) + bytes(n & 0xFF for n in numbers)

    def _system_basic(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._require_master(position, frame.cid2)
        self._require_opt_in(self.options.inferred_system_basic, frame.cid2, "inferred_system_basic")
        ident = view.identity
        major, minor = ident.software_version  # *inferred*: 2 bytes, as in 0x51
        mods = view.modules[:MAX_MODULES]
        return b"".join(
            [
                ascii_field(ident.battery_name, 10),
                ascii_field(ident.manufacturer, 20),
                bytes([major & 0xFF, minor & 0xFF, len(mods)]),
                *(ascii_field(m.serial, 16) for m in mods),
            ]
        )

    def _system_analog(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._require_master(position, frame.cid2)
        self._require_opt_in(self.options.inferred_system_analog, frame.cid2, "inferred_system_analog")
        system = view.system
        if system is None:
            raise _Answer(Rtn.INTERNAL_COMM_ERROR, "no_data", "no module has fresh data")
        return system_analog_info(view, system)

    def _system_alarm(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._require_master(position, frame.cid2)
        return system_alarm_info(view)

    def _system_management(self, frame: PylonFrame, position: int, view: BankView, now: float) -> bytes:
        self._require_master(position, frame.cid2)
        return management_block(self.system_limits(view, now), negative_discharge=False)
