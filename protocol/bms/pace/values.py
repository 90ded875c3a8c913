"""PACE payloads: typed results of every INFO the codec understands, with their encoders/decoders.

Layouts are tables (see `ANALOG_*`, `STATUS_*`, `PARAM_GROUPS`); the decoders walk INFO by the counts
the pack declares (cells M, temperatures N, user-defined items P, packs in a bank response) and never
by guessed offsets. Every decoder has a mirror encoder so that decode(encode(x)) == x: the simulator
builds its responses with them.

Units: V, A (positive = charging), °C, Ah, %. Wire scales (v25): cells and pack voltage in mV
(v20: pack voltage in 10 mV), current in 10 mA (signed), capacities in 10 mAh, temperatures in
0.1 K with a 2730 offset.

This module is sans-I/O: it must never import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from protocol.bms.base import Blocks, FlagInfo, Meaning
from protocol.bms.base import FlagKind as FlagKind
from protocol.errors import LocalProtocolError, RemoteProtocolError

TEMP_OFFSET_DK = 2730  # temperatures travel as 0.1 K with this offset: °C = (raw - 2730) / 10


class Variant(enum.StrEnum):
    """Payload dialect. v25 = PACE 0x25; v20 = PACE/Pylon-style 0x20; eg4 = EG4's 0x20 (CID1 0x4A)."""

    V25 = "v25"
    V20 = "v20"
    EG4 = "eg4"


B = TypeVar("B")  # a decoded block (analog or status)

# ------------------------------------------------------------------------------------------------
# byte reader / writer


class Reader:
    """Walks an INFO field; every shortfall is the peer's fault (RemoteProtocolError)."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise RemoteProtocolError(
                f"PACE {self.what}: INFO ends at byte {len(self.data)} while reading {field_name} "
                f"(needs {n} byte(s) at {self.pos})"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "big")

    def s16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "big", signed=True)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} {value} does not fit one byte")
    return bytes([value])


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{what} {value} does not fit 16 bits")
    return value.to_bytes(2, "big")


def _s16(value: int, what: str) -> bytes:
    if not -0x8000 <= value <= 0x7FFF:
        raise LocalProtocolError(f"{what} {value} does not fit a signed 16-bit field")
    return value.to_bytes(2, "big", signed=True)


def temp_from_wire(raw: int) -> float:
    return round((raw - TEMP_OFFSET_DK) / 10.0, 1)


def temp_to_wire(value_c: float) -> int:
    return round(value_c * 10) + TEMP_OFFSET_DK


def _count(n: int, what: str) -> bytes:
    return _u8(n, f"number of {what}")


# ------------------------------------------------------------------------------------------------
# analog values (CID2 0x42)


@dataclass(frozen=True, slots=True)
class AnalogBlock:
    """One pack's analog values.

    `user_defined` holds the P items the pack declares after the remaining capacity (raw 16-bit
    values): PACE sends P = 3 (full capacity, cycles, design capacity); more items are kept raw.
    EG4 sends no P byte: its items are (full capacity, cycles).
    """

    cell_voltages_v: tuple[float, ...]
    temperatures_c: tuple[float, ...]
    current_a: float
    voltage_v: float
    remaining_ah: float
    user_defined: tuple[int, ...] = ()

    @property
    def full_capacity_ah(self) -> float | None:
        return self.user_defined[0] / 100.0 if len(self.user_defined) > 0 else None

    @property
    def cycles(self) -> int | None:
        return self.user_defined[1] if len(self.user_defined) > 1 else None

    @property
    def design_capacity_ah(self) -> float | None:
        return self.user_defined[2] / 100.0 if len(self.user_defined) > 2 else None

    @property
    def soc_pct(self) -> float | None:
        full = self.full_capacity_ah
        if not full:
            return None
        return round(min(100.0, self.remaining_ah / full * 100.0), 2)

    @property
    def soh_pct(self) -> float | None:
        full, design = self.full_capacity_ah, self.design_capacity_ah
        if full is None or not design:
            return None
        return round(full / design * 100.0, 2)


@dataclass(frozen=True, slots=True)
class AnalogResponse:
    """INFO of an analog response: DATAFLAG, then the pack's address (single read) or the number of
    packs (INFO 0xFF bank read through the master), then one block per pack."""

    data_flag: int
    command_value: int  # responding address (single) or pack count (bank)
    packs: tuple[AnalogBlock, ...]
    trailing: bytes = b""  # bytes after the declared blocks (kept, never interpreted)
    pack_flags: tuple[int, ...] = ()  # bank answers of real masters: one byte after each block


def _voltage_scale(variant: Variant) -> int:
    return 1000 if variant is Variant.V25 else 100


def _decode_analog_block(r: Reader, variant: Variant) -> AnalogBlock:
    m = r.u8("cell count")
    cells = tuple(r.u16(f"cell {i + 1} voltage") / 1000.0 for i in range(m))
    n = r.u8("temperature count")
    if variant is Variant.EG4:
        n += 2  # EG4 declares the cell sensors only; MOSFET and environment follow uncounted
    temps = tuple(temp_from_wire(r.u16(f"temperature {i + 1}")) for i in range(n))
    current = r.s16("current") / 100.0
    voltage = r.u16("pack voltage") / _voltage_scale(variant)
    remaining = r.u16("remaining capacity") / 100.0
    user: tuple[int, ...]
    if variant is Variant.EG4:
        user = (r.u16("full capacity"), r.u16("cycles"))
    else:
        p = r.u8("user-defined item count")
        user = tuple(r.u16(f"user-defined item {i + 1}") for i in range(p))
    return AnalogBlock(cells, temps, current, voltage, remaining, user)


def _encode_analog_block(b: AnalogBlock, variant: Variant) -> bytes:
    out = bytearray(_count(len(b.cell_voltages_v), "cells"))
    for i, v in enumerate(b.cell_voltages_v):
        out += _u16(round(v * 1000), f"cell {i + 1} voltage")
    temps = b.temperatures_c
    if variant is Variant.EG4:
        if len(temps) < 2:
            raise LocalProtocolError("EG4 analog blocks carry at least the MOSFET and environment sensors")
        out += _count(len(temps) - 2, "temperatures")
    else:
        out += _count(len(temps), "temperatures")
    for i, t in enumerate(temps):
        out += _u16(temp_to_wire(t), f"temperature {i + 1}")
    out += _s16(round(b.current_a * 100), "current")
    out += _u16(round(b.voltage_v * _voltage_scale(variant)), "pack voltage")
    out += _u16(round(b.remaining_ah * 100), "remaining capacity")
    if variant is Variant.EG4:
        if len(b.user_defined) != 2:
            raise LocalProtocolError("EG4 analog blocks carry exactly (full capacity, cycles)")
    else:
        out += _count(len(b.user_defined), "user-defined items")
    for i, item in enumerate(b.user_defined):
        out += _u16(item, f"user-defined item {i + 1}")
    return bytes(out)


def decode_bank_blocks(
    info: bytes, what: str, decode_block: Callable[[Reader], B]
) -> tuple[int, int, tuple[B, ...], tuple[int, ...]]:
    """A whole-bank answer (INFO 0xFF through the master): DATAFLAG, pack count, then per pack its
    block by the counts it declares, followed on real masters by one more byte per pack (bmspace's
    two-pack status capture: 0x11 after pack 1, 0x00 after pack 2). Both layouts are tried; the answer
    is accepted only when exactly one of them ends exactly at the end of INFO, never guessed.

    Returns (DATAFLAG, pack count, blocks, per-pack bytes (empty for the layout without them))."""
    head = Reader(info, what)
    flag, count = head.u8("DATAFLAG"), head.u8("pack count")
    fits: list[tuple[tuple[B, ...], tuple[int, ...]]] = []
    errors: list[str] = []
    for per_pack in (True, False):
        r = Reader(info, what)
        r.pos = head.pos
        try:
            blocks: list[B] = []
            flags: list[int] = []
            for i in range(count):
                blocks.append(decode_block(r))
                if per_pack:
                    flags.append(r.u8(f"byte after pack {i + 1}'s block"))
        except RemoteProtocolError as err:
            errors.append(str(err))
            continue
        if r.pos == len(info):
            fits.append((tuple(blocks), tuple(flags)))
        else:
            errors.append(f"{len(info) - r.pos} byte(s) left after {count} blocks")
    if len(fits) != 1:
        why = "both layouts fit" if fits else "; ".join(errors)
        raise RemoteProtocolError(
            f"PACE {what}: {len(info)} bytes for {count} packs fit neither exactly one layout "
            f"(with or without one byte after each pack's block): {why}"
        )
    blocks_, flags_ = fits[0]
    return flag, count, blocks_, flags_


def decode_analog(info: bytes, *, bank: bool = False, variant: Variant = Variant.V25) -> AnalogResponse:
    """Decode an analog response INFO (single pack, or every pack of a bank with `bank=True`: see
    `decode_bank_blocks`)."""
    if bank:
        flag, count, blocks, flags = decode_bank_blocks(
            info, "bank analog response", lambda r: _decode_analog_block(r, variant)
        )
        return AnalogResponse(flag, count, blocks, b"", flags)
    r = Reader(info, "analog response")
    flag = r.u8("DATAFLAG")  # EG4 sends 0x10 here
    value = r.u8("address")
    packs = (_decode_analog_block(r, variant),)
    return AnalogResponse(flag, value, packs, r.rest())


def _pack_flag(flags: tuple[int, ...], i: int) -> bytes:
    return _u8(flags[i], "per-pack byte") if flags else b""


def encode_analog(resp: AnalogResponse, *, variant: Variant = Variant.V25) -> bytes:
    if resp.pack_flags and len(resp.pack_flags) != len(resp.packs):
        raise LocalProtocolError("one per-pack byte per block, or none")
    out = bytearray(_u8(resp.data_flag, "DATAFLAG") + _u8(resp.command_value, "command value"))
    for i, block in enumerate(resp.packs):
        out += _encode_analog_block(block, variant) + _pack_flag(resp.pack_flags, i)
    return bytes(out + resp.trailing)


def single_analog(address: int, block: AnalogBlock, data_flag: int = 0) -> AnalogResponse:
    return AnalogResponse(data_flag, address, (block,))


def bank_analog(
    blocks: Sequence[AnalogBlock], data_flag: int = 0, pack_flags: Sequence[int] = ()
) -> AnalogResponse:
    return AnalogResponse(data_flag, len(blocks), tuple(blocks), b"", tuple(pack_flags))


# ------------------------------------------------------------------------------------------------
# flags: every status bit by name, classified


@dataclass(frozen=True, slots=True)
class Flags:
    """The active flags of a status answer, with their meanings (`items`) and by severity."""

    protections: frozenset[str] = frozenset()
    alarms: frozenset[str] = frozenset()
    faults: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    items: tuple[FlagInfo, ...] = ()

    @classmethod
    def of(cls, items: Iterable[FlagInfo]) -> Flags:
        unique = tuple(dict.fromkeys(items))
        sets: dict[FlagKind, set[str]] = {k: set() for k in FlagKind}
        for f in unique:
            sets[f.kind].add(f.name)
        return cls(
            frozenset(sets[FlagKind.PROTECTION]),
            frozenset(sets[FlagKind.ALARM]),
            frozenset(sets[FlagKind.FAULT]),
            frozenset(sets[FlagKind.STATE]),
            unique,
        )

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "protections": sorted(self.protections),
            "alarms": sorted(self.alarms),
            "faults": sorted(self.faults),
            "states": sorted(self.states),
            "meanings": sorted({f.meaning.value for f in self.items if f.kind is not FlagKind.STATE}),
        }


P, A, F, S = FlagKind.PROTECTION, FlagKind.ALARM, FlagKind.FAULT, FlagKind.STATE
M = Meaning
CHG, DSG, BOTH, NONE = Blocks.CHARGE, Blocks.DISCHARGE, Blocks.BOTH, Blocks.NONE

# Where the meanings come from (cited by public name).
SRC_V25 = "PACE v25 status answer: nkinnan/esphome-pace-bms (PbmsTools) and Tertiush/bmspace constants"
SRC_V25_UNDEF = "PACE v25: bmspace lists this bit as 'undefined'; no source names it"
SRC_V20 = "Pylontech RS485 protocol 0x44 (the v20 layout PACE and Pylon share)"
SRC_EG4 = "EG4 v20 status events as decoded by nkinnan/esphome-pace-bms (EG4 variant)"
SRC_UNDOC = "no source names this bit"
_BLOCK = "; blocked direction: gateway's choice ({})"


def _f(kind: FlagKind, name: str, meaning: Meaning, blocks: Blocks = NONE, source: str = SRC_V25) -> FlagInfo:
    return FlagInfo(name, kind, meaning, blocks, source)


def _undoc(kind: FlagKind, name: str, source: str = SRC_UNDOC) -> FlagInfo:
    """An explicit entry for a bit no source names: a protection byte's bit blocks both (fail safe,
    as before), any other is kept without effect."""
    return FlagInfo(name, kind, M.UNDOCUMENTED, BOTH if kind is P else NONE, source)


# field -> bit -> flag. Names follow PbmsTools' realtime page wording; meanings from the sources.
V25_STATUS_BITS: dict[str, tuple[FlagInfo, ...]] = {
    "protection1": (
        _f(P, "Cell OV protection", M.CELL_OVERVOLTAGE, CHG),
        _f(P, "Cell UV protection", M.CELL_UNDERVOLTAGE, DSG),
        _f(P, "Pack OV protection", M.PACK_OVERVOLTAGE, CHG),
        _f(P, "Pack UV protection", M.PACK_UNDERVOLTAGE, DSG),
        _f(P, "Charge OC protection", M.CHARGE_OVERCURRENT, CHG),
        _f(P, "Discharge OC protection", M.DISCHARGE_OVERCURRENT, DSG),
        _f(P, "Short circuit protection", M.SHORT_CIRCUIT, BOTH),
        _undoc(P, "Protection 1 bit 7", SRC_V25_UNDEF),
    ),
    "protection2": (
        _f(P, "Charge OT protection", M.CHARGE_OVERTEMPERATURE, CHG),
        _f(P, "Discharge OT protection", M.DISCHARGE_OVERTEMPERATURE, DSG),
        _f(P, "Charge UT protection", M.CHARGE_UNDERTEMPERATURE, CHG),
        _f(P, "Discharge UT protection", M.DISCHARGE_UNDERTEMPERATURE, DSG),
        _f(P, "MOS OT protection", M.MOS_OVERTEMPERATURE, BOTH),
        _f(P, "Environment OT protection", M.AMBIENT_OVERTEMPERATURE, BOTH),
        _f(P, "Environment UT protection", M.AMBIENT_UNDERTEMPERATURE, BOTH),
        _f(S, "Fully charged", M.FULL),
    ),
    "system": (
        _f(
            S,
            "Current limiter off",
            M.CURRENT_LIMITER,
            source=SRC_V25 + " (bmspace words it 'Current limit indicate ON')",
        ),
        _f(S, "Charge MOS on", M.CHARGE_MOS),
        _f(S, "Discharge MOS on", M.DISCHARGE_MOS),
        _f(S, "Discharging", M.DISCHARGING, source=SRC_V25 + " (bmspace: 'Pack indicate ON')"),
        _f(
            F,
            "Terminals reversed",
            M.REVERSE_POLARITY,
            BOTH,
            SRC_V25 + " (bmspace: 'Reverse indicate ON')" + _BLOCK.format("wiring fault"),
        ),
        _f(S, "Charging", M.CHARGING, source=SRC_V25 + " (bmspace: 'ACin ON')"),
        _undoc(S, "System bit 6", SRC_V25_UNDEF),
        _f(S, "Heartbeat", M.HEARTBEAT),
    ),
    "configuration": (
        _f(S, "Buzzer enabled", M.SETTING),
        _f(S, "Charge MOS turned off", M.MANUAL_MOS, source=SRC_V25 + " (bmspace: 'undefined')"),
        _f(S, "Discharge MOS turned off", M.MANUAL_MOS, source=SRC_V25 + " (bmspace: 'undefined')"),
        _f(S, "Current limiter low gear", M.CURRENT_LIMITER),
        _f(
            S,
            "Current limiter enabled",
            M.CURRENT_LIMITER,
            source=SRC_V25 + " (bmspace words it 'Current limit function disabled')",
        ),
        _f(S, "LED alarm enabled", M.SETTING, source=SRC_V25 + " (bmspace: 'LED warn function disabled')"),
        _undoc(S, "Configuration bit 6", SRC_V25_UNDEF),
        _undoc(S, "Configuration bit 7", SRC_V25_UNDEF),
    ),
    "fault": (
        _f(
            F,
            "Charge MOS fault",
            M.CHARGE_MOS_FAULT,
            CHG,
            SRC_V25 + _BLOCK.format("the pack cannot stop a charge"),
        ),
        _f(
            F,
            "Discharge MOS fault",
            M.DISCHARGE_MOS_FAULT,
            DSG,
            SRC_V25 + _BLOCK.format("the pack cannot stop a discharge"),
        ),
        _f(F, "NTC fault", M.NTC_FAULT, source=SRC_V25 + " (a temperature sensor fault)"),
        _undoc(F, "Fault bit 3", SRC_V25_UNDEF),
        _f(F, "Cell fault", M.CELL_FAULT, BOTH, SRC_V25 + _BLOCK.format("a failed cell")),
        _f(
            F,
            "Sampling fault",
            M.MEASUREMENT_FAULT,
            BOTH,
            SRC_V25 + " (bmspace: 'Sample fault')" + _BLOCK.format("measurements unreliable"),
        ),
        _undoc(F, "Fault bit 6", SRC_V25_UNDEF),
        _undoc(F, "Fault bit 7", SRC_V25_UNDEF),
    ),
    "warning1": (
        _f(A, "Cell OV alarm", M.CELL_OVERVOLTAGE),
        _f(A, "Cell UV alarm", M.CELL_UNDERVOLTAGE),
        _f(A, "Pack OV alarm", M.PACK_OVERVOLTAGE),
        _f(A, "Pack UV alarm", M.PACK_UNDERVOLTAGE),
        _f(A, "Charge OC alarm", M.CHARGE_OVERCURRENT),
        _f(A, "Discharge OC alarm", M.DISCHARGE_OVERCURRENT),
        _undoc(A, "Warning 1 bit 6", SRC_V25_UNDEF),
        _undoc(A, "Warning 1 bit 7", SRC_V25_UNDEF),
    ),
    "warning2": (
        _f(A, "Charge OT alarm", M.CHARGE_OVERTEMPERATURE),
        _f(A, "Discharge OT alarm", M.DISCHARGE_OVERTEMPERATURE),
        _f(A, "Charge UT alarm", M.CHARGE_UNDERTEMPERATURE),
        _f(A, "Discharge UT alarm", M.DISCHARGE_UNDERTEMPERATURE),
        _f(A, "Environment OT alarm", M.AMBIENT_OVERTEMPERATURE),
        _f(A, "Environment UT alarm", M.AMBIENT_UNDERTEMPERATURE),
        _f(A, "MOS OT alarm", M.MOS_OVERTEMPERATURE),
        _f(A, "Low SOC alarm", M.SOC_LOW, source=SRC_V25 + " (bmspace: 'Low power warn')"),
    ),
}
BALANCING_FLAG = _f(S, "Balancing", M.BALANCING)


def _bits(table: Sequence[FlagInfo], value: int) -> list[FlagInfo]:
    return [entry for bit, entry in enumerate(table) if value >> bit & 1]


# The subjects of the per-item warning values: what "below lower limit" / "above upper limit"
# means for each (PACE v25 document, bmspace `warningStates`).
WARNING_SUBJECTS: dict[str, tuple[Meaning, Meaning]] = {
    "Cell": (M.CELL_UNDERVOLTAGE, M.CELL_OVERVOLTAGE),
    "Temperature": (M.SENSOR_UNDERTEMPERATURE, M.SENSOR_OVERTEMPERATURE),
    "Charge current": (M.CHARGE_OVERCURRENT, M.CHARGE_OVERCURRENT),
    "Discharge current": (M.DISCHARGE_OVERCURRENT, M.DISCHARGE_OVERCURRENT),
    "Current": (M.OVERCURRENT, M.OVERCURRENT),
    "Total voltage": (M.PACK_UNDERVOLTAGE, M.PACK_OVERVOLTAGE),
}
SRC_WARNING = "PACE v25 document / bmspace warningStates: 01 below lower limit, 02 above upper limit"
SRC_WARNING_CURRENT = (
    SRC_WARNING + "; on a current the source says no more than 'limit': read as over-current either way"
)
SRC_WARNING_FAULT = (
    "PACE v25 document: 0x80-0xEF user-defined fault, 0xF0 other fault; the kind is *inferred* from "
    "the subject (a cell: cell fault, a temperature: sensor fault, else other fault)"
)


def _subject_kind(subject: str) -> str:
    for prefix in ("Cell ", "Temperature "):
        if subject.startswith(prefix):
            return prefix.strip()
    return subject


def warning_value_flag(subject: str, value: int) -> FlagInfo | None:
    """The per-cell / per-sensor / current / voltage warning values of the status response."""
    if value == 0:
        return None
    kind = _subject_kind(subject)
    low, high = WARNING_SUBJECTS[kind]
    source = SRC_WARNING_CURRENT if "urrent" in kind else SRC_WARNING
    if value == 1:
        return FlagInfo(f"{subject} below lower limit", A, low, NONE, source)
    if value == 2:
        return FlagInfo(f"{subject} above upper limit", A, high, NONE, source)
    meaning = M.CELL_FAULT if kind == "Cell" else M.NTC_FAULT if kind == "Temperature" else M.OTHER_FAULT
    if 0x80 <= value <= 0xEF:
        return FlagInfo(f"{subject} user-defined fault 0x{value:02X}", F, meaning, NONE, SRC_WARNING_FAULT)
    return FlagInfo(f"{subject} other fault 0x{value:02X}", F, meaning, NONE, SRC_WARNING_FAULT)


@dataclass(frozen=True, slots=True)
class StatusBlock:
    """One pack's v25 status/alarm information (CID2 0x44), every field raw plus decoded flags."""

    cell_warnings: tuple[int, ...]
    temp_warnings: tuple[int, ...]
    charge_current_warning: int = 0
    total_voltage_warning: int = 0
    discharge_current_warning: int = 0
    protection1: int = 0
    protection2: int = 0
    system: int = 0
    configuration: int = 0
    fault: int = 0
    balancing: int = 0  # bit n = cell n + 1
    warning1: int = 0
    warning2: int = 0

    @property
    def balancing_cells(self) -> tuple[int, ...]:
        return tuple(i + 1 for i in range(16) if self.balancing >> i & 1)

    @property
    def charge_mos_on(self) -> bool:
        return bool(self.system & 0x02)

    @property
    def discharge_mos_on(self) -> bool:
        return bool(self.system & 0x04)

    def flags(self) -> Flags:
        items = _status_items(self, V25_STATUS_BITS, PACK_WARNINGS)
        if self.balancing:
            items.append(BALANCING_FLAG)
        return Flags.of(items)


# The pack-level warning values of a status answer: (subject as PbmsTools words it, field).
PACK_WARNINGS = (
    ("Charge current", "charge_current_warning"),
    ("Total voltage", "total_voltage_warning"),
    ("Discharge current", "discharge_current_warning"),
)
EG4_PACK_WARNINGS = (("Current", "current_warning"), ("Total voltage", "total_voltage_warning"))


def _status_items(
    status: StatusBlock | StatusV20 | StatusEg4,
    bit_tables: Mapping[str, Sequence[FlagInfo]],
    pack_warnings: Sequence[tuple[str, str]],
) -> list[FlagInfo]:
    """The flags of a status answer: every status field through its bit table (fields named by the
    table's keys), then the warning values of each cell, each sensor and the pack-level fields."""
    items = [item for name, table in bit_tables.items() for item in _bits(table, getattr(status, name))]
    subjects = [(f"Cell {i + 1}", w) for i, w in enumerate(status.cell_warnings)]
    subjects += [(f"Temperature {i + 1}", w) for i, w in enumerate(status.temp_warnings)]
    subjects += [(subject, getattr(status, name)) for subject, name in pack_warnings]
    items += [f for subject, w in subjects if (f := warning_value_flag(subject, w)) is not None]
    return items


STATUS_V25_TAIL = (
    "charge_current_warning",
    "total_voltage_warning",
    "discharge_current_warning",
    "protection1",
    "protection2",
    "system",
    "configuration",
    "fault",
)


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """INFO of a v25 status response: DATAFLAG, address (or pack count for INFO 0xFF), blocks."""

    data_flag: int
    command_value: int
    packs: tuple[StatusBlock, ...]
    trailing: bytes = b""
    pack_flags: tuple[int, ...] = ()  # bank answers of real masters: one byte after each block


def _read_warnings(r: Reader, what: str, uncounted: int = 0) -> tuple[int, ...]:
    """A count byte, then that many warning values (plus `uncounted` ones the count leaves out)."""
    n = r.u8(f"{what} count") + uncounted
    return tuple(r.u8(f"{what} {i + 1} warning") for i in range(n))


def _decode_status_block(r: Reader) -> StatusBlock:
    cells = _read_warnings(r, "cell")
    temps = _read_warnings(r, "temperature")
    tail = {name: r.u8(name) for name in STATUS_V25_TAIL}
    balancing = r.u16("balancing")
    w1 = r.u8("warning1")
    w2 = r.u8("warning2")
    return StatusBlock(cells, temps, balancing=balancing, warning1=w1, warning2=w2, **tail)


def _encode_status_block(b: StatusBlock) -> bytes:
    out = bytearray(_count(len(b.cell_warnings), "cells"))
    out += bytes(_u8(w, "cell warning")[0] for w in b.cell_warnings)
    out += _count(len(b.temp_warnings), "temperatures")
    out += bytes(_u8(w, "temperature warning")[0] for w in b.temp_warnings)
    for name in STATUS_V25_TAIL:
        out += _u8(getattr(b, name), name)
    out += _u16(b.balancing, "balancing")
    out += _u8(b.warning1, "warning1") + _u8(b.warning2, "warning2")
    return bytes(out)


def decode_status(info: bytes, *, bank: bool = False) -> StatusResponse:
    """Decode a v25 status INFO (single pack, or a bank answer with `bank=True`: see
    `decode_bank_blocks`; a real two-pack answer carries a byte after each block)."""
    if bank:
        flag, count, blocks, flags = decode_bank_blocks(info, "bank status response", _decode_status_block)
        return StatusResponse(flag, count, blocks, b"", flags)
    r = Reader(info, "status response")
    flag = r.u8("DATAFLAG")
    value = r.u8("address")
    packs = (_decode_status_block(r),)
    return StatusResponse(flag, value, packs, r.rest())


def encode_status(resp: StatusResponse) -> bytes:
    if resp.pack_flags and len(resp.pack_flags) != len(resp.packs):
        raise LocalProtocolError("one per-pack byte per block, or none")
    out = bytearray(_u8(resp.data_flag, "DATAFLAG") + _u8(resp.command_value, "command value"))
    for i, b in enumerate(resp.packs):
        out += _encode_status_block(b) + _pack_flag(resp.pack_flags, i)
    return bytes(out + resp.trailing)


# ---- v20 status: the PACE/Pylon-style layout and the EG4 layout

V20_STATUS_BITS: dict[str, tuple[FlagInfo, ...]] = {
    "status1": (
        _f(P, "Pack OV protection", M.PACK_OVERVOLTAGE, CHG, SRC_V20),
        _f(P, "Cell UV protection", M.CELL_UNDERVOLTAGE, DSG, SRC_V20),
        _f(P, "Charge OC protection", M.CHARGE_OVERCURRENT, CHG, SRC_V20),
        _undoc(P, "Status 1 bit 3", SRC_V20 + ": bit 3 undefined"),
        _f(P, "Discharge OC protection", M.DISCHARGE_OVERCURRENT, DSG, SRC_V20),
        _f(
            P,
            "Discharge temperature protection",
            M.DISCHARGE_OVERTEMPERATURE,
            DSG,
            SRC_V20 + ": b5 discharge over-temperature",
        ),
        _f(
            P,
            "Charge temperature protection",
            M.CHARGE_OVERTEMPERATURE,
            CHG,
            SRC_V20 + ": b6 charge over-temperature",
        ),
        _f(P, "Pack UV protection", M.PACK_UNDERVOLTAGE, DSG, SRC_V20),
    ),
    "status2": (
        _f(S, "Precharge MOS on", M.PRECHARGE_MOS, source=SRC_V20),
        _f(S, "Charge MOS on", M.CHARGE_MOS, source=SRC_V20),
        _f(S, "Discharge MOS on", M.DISCHARGE_MOS, source=SRC_V20),
        _f(S, "Using battery power", M.DISCHARGING, source=SRC_V20 + ": b3 using pack power"),
        *(_undoc(S, f"Status 2 bit {i}", SRC_V20 + f": bit {i} undefined") for i in range(4, 8)),
    ),
    "status3": (
        _f(S, "Buzzer enabled", M.SETTING, source=SRC_V20),
        _undoc(S, "Status 3 bit 1", SRC_V20 + ": bit 1 undefined"),
        _undoc(S, "Status 3 bit 2", SRC_V20 + ": bit 2 undefined"),
        _f(S, "Fully charged", M.FULL, source=SRC_V20),
        _undoc(S, "Status 3 bit 4", SRC_V20 + ": bit 4 undefined"),
        _f(S, "Heater on", M.HEATER, source=SRC_V20),
        _f(S, "Discharging", M.DISCHARGING, source=SRC_V20 + ": b6 effective discharge current"),
        _f(S, "Charging", M.CHARGING, source=SRC_V20 + ": b7 effective charge current"),
    ),
    # Status 4/5: per-cell fault bits (Pylontech sets one for a cell outside its normal range).
    "status4": tuple(
        _f(F, f"Cell {i + 1} fault", M.CELL_FAULT, source=SRC_V20 + ": status 4/5 per-cell fault bits")
        for i in range(8)
    ),
    "status5": tuple(
        _f(F, f"Cell {i + 9} fault", M.CELL_FAULT, source=SRC_V20 + ": status 4/5 per-cell fault bits")
        for i in range(8)
    ),
}

EG4_STATUS_BITS: dict[str, tuple[FlagInfo, ...]] = {
    "balance_event": (
        _f(S, "Balancing", M.BALANCING, source=SRC_EG4),
        *(_undoc(A, f"Balance event bit {i}") for i in (1, 2, 3)),
        _f(A, "Cell voltage difference alarm", M.CELL_IMBALANCE, source=SRC_EG4),
        _f(
            F,
            "Charge MOS fault",
            M.CHARGE_MOS_FAULT,
            CHG,
            SRC_EG4 + _BLOCK.format("the pack cannot stop a charge"),
        ),
        _f(
            F,
            "Discharge MOS fault",
            M.DISCHARGE_MOS_FAULT,
            DSG,
            SRC_EG4 + _BLOCK.format("the pack cannot stop a discharge"),
        ),
        _undoc(A, "Balance event bit 7"),
    ),
    "voltage_event": (
        _f(A, "Cell OV alarm", M.CELL_OVERVOLTAGE, source=SRC_EG4),
        _f(P, "Cell OV protection", M.CELL_OVERVOLTAGE, CHG, SRC_EG4),
        _f(A, "Cell UV alarm", M.CELL_UNDERVOLTAGE, source=SRC_EG4),
        _f(P, "Cell UV protection", M.CELL_UNDERVOLTAGE, DSG, SRC_EG4),
        _f(A, "Pack OV alarm", M.PACK_OVERVOLTAGE, source=SRC_EG4),
        _f(P, "Pack OV protection", M.PACK_OVERVOLTAGE, CHG, SRC_EG4),
        _f(A, "Pack UV alarm", M.PACK_UNDERVOLTAGE, source=SRC_EG4),
        _f(P, "Pack UV protection", M.PACK_UNDERVOLTAGE, DSG, SRC_EG4),
    ),
    "temperature_event": (
        _f(A, "Charge OT alarm", M.CHARGE_OVERTEMPERATURE, source=SRC_EG4),
        _f(P, "Charge OT protection", M.CHARGE_OVERTEMPERATURE, CHG, SRC_EG4),
        _f(A, "Charge UT alarm", M.CHARGE_UNDERTEMPERATURE, source=SRC_EG4),
        _f(P, "Charge UT protection", M.CHARGE_UNDERTEMPERATURE, CHG, SRC_EG4),
        _f(A, "Discharge OT alarm", M.DISCHARGE_OVERTEMPERATURE, source=SRC_EG4),
        _f(P, "Discharge OT protection", M.DISCHARGE_OVERTEMPERATURE, DSG, SRC_EG4),
        _f(A, "Discharge UT alarm", M.DISCHARGE_UNDERTEMPERATURE, source=SRC_EG4),
        _f(P, "Discharge UT protection", M.DISCHARGE_UNDERTEMPERATURE, DSG, SRC_EG4),
        _f(A, "Environment OT alarm", M.AMBIENT_OVERTEMPERATURE, source=SRC_EG4),
        _f(P, "Environment OT protection", M.AMBIENT_OVERTEMPERATURE, BOTH, SRC_EG4),
        _f(A, "Environment UT alarm", M.AMBIENT_UNDERTEMPERATURE, source=SRC_EG4),
        _f(P, "Environment UT protection", M.AMBIENT_UNDERTEMPERATURE, BOTH, SRC_EG4),
        _f(P, "MOS OT protection", M.MOS_OVERTEMPERATURE, BOTH, SRC_EG4),
        _f(F, "Fire alarm", M.FIRE, BOTH, SRC_EG4 + _BLOCK.format("fire alarm: stop")),
        _undoc(A, "Temperature event bit 14"),
        _undoc(A, "Temperature event bit 15"),
    ),
    "current_event": (
        _f(A, "Charge OC alarm", M.CHARGE_OVERCURRENT, source=SRC_EG4),
        _f(P, "Charge OC protection", M.CHARGE_OVERCURRENT, CHG, SRC_EG4),
        _f(A, "Discharge OC alarm", M.DISCHARGE_OVERCURRENT, source=SRC_EG4),
        _f(P, "Discharge OC protection", M.DISCHARGE_OVERCURRENT, DSG, SRC_EG4),
        _f(P, "Discharge OC2 protection", M.DISCHARGE_OVERCURRENT, DSG, SRC_EG4),
        _f(P, "Short circuit protection", M.SHORT_CIRCUIT, BOTH, SRC_EG4),
        _f(
            F,
            "Discharge OC2 lockout",
            M.DISCHARGE_OVERCURRENT,
            DSG,
            SRC_EG4 + " (a latched discharge over-current protection)",
        ),
        _f(
            F,
            "Short circuit lockout",
            M.SHORT_CIRCUIT,
            BOTH,
            SRC_EG4 + " (a latched short-circuit protection)",
        ),
    ),
    "remaining_capacity": (
        _f(A, "Low SOC alarm", M.SOC_LOW, source=SRC_EG4),
        *(_undoc(A, f"Capacity event bit {i}") for i in range(1, 8)),
    ),
    "fet_status": (
        _f(S, "Discharge MOS on", M.DISCHARGE_MOS, source=SRC_EG4),
        _f(S, "Charge MOS on", M.CHARGE_MOS, source=SRC_EG4),
        _f(S, "Current limiter on", M.CURRENT_LIMITER, source=SRC_EG4),
        _f(S, "Heater on", M.HEATER, source=SRC_EG4),
        *(_undoc(S, f"FET status bit {i}") for i in range(4, 8)),
    ),
    "system": (
        _f(S, "Discharging", M.DISCHARGING, source=SRC_EG4),
        _f(S, "Charging", M.CHARGING, source=SRC_EG4),
        _undoc(S, "System bit 2"),
        _f(S, "Standby", M.IDLE, source=SRC_EG4),
        *(_undoc(S, f"System bit {i}") for i in range(4, 8)),
    ),
}


def status_flag_tables() -> dict[str, Mapping[str, Sequence[FlagInfo]]]:
    """Every PACE status bit table by variant (for the contract tests and the docs)."""
    return {"v25": V25_STATUS_BITS, "v20": V20_STATUS_BITS, "eg4": EG4_STATUS_BITS}


def warning_value_flags() -> tuple[FlagInfo, ...]:
    """One example of every kind of warning-value flag (subject x value class)."""
    subjects = ("Cell 1", "Temperature 1", *(s for s in WARNING_SUBJECTS if s not in ("Cell", "Temperature")))
    out: list[FlagInfo] = []
    for subject in subjects:
        for value in (1, 2, 0x80, 0xF0):
            f = warning_value_flag(subject, value)
            assert f is not None
            out.append(f)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class StatusV20:
    """v20 status (CID2 0x44), PACE/Pylon layout: warnings, then status bytes 1..5."""

    data_flag: int
    command_value: int
    cell_warnings: tuple[int, ...]
    temp_warnings: tuple[int, ...]
    charge_current_warning: int = 0
    total_voltage_warning: int = 0
    discharge_current_warning: int = 0
    status1: int = 0
    status2: int = 0
    status3: int = 0
    status4: int = 0
    status5: int = 0
    trailing: bytes = b""

    @property
    def charge_mos_on(self) -> bool:
        return bool(self.status2 & 0x02)

    @property
    def discharge_mos_on(self) -> bool:
        return bool(self.status2 & 0x04)

    @property
    def heater_on(self) -> bool:
        return bool(self.status3 & 0x20)

    @property
    def balancing_cells(self) -> tuple[int, ...]:
        return ()

    def flags(self) -> Flags:
        return Flags.of(_status_items(self, V20_STATUS_BITS, PACK_WARNINGS))


_V20_TAIL = (
    "charge_current_warning",
    "total_voltage_warning",
    "discharge_current_warning",
    "status1",
    "status2",
    "status3",
    "status4",
    "status5",
)


def decode_status_v20(info: bytes) -> StatusV20:
    r = Reader(info, "v20 status response")
    flag = r.u8("DATAFLAG")
    value = r.u8("address")
    cells = _read_warnings(r, "cell")
    temps = _read_warnings(r, "temperature")
    tail = {name: r.u8(name) for name in _V20_TAIL}
    return StatusV20(flag, value, cells, temps, trailing=r.rest(), **tail)


def encode_status_v20(s: StatusV20) -> bytes:
    out = bytearray(_u8(s.data_flag, "DATAFLAG") + _u8(s.command_value, "address"))
    out += _count(len(s.cell_warnings), "cells") + bytes(s.cell_warnings)
    out += _count(len(s.temp_warnings), "temperatures") + bytes(s.temp_warnings)
    for name in _V20_TAIL:
        out += _u8(getattr(s, name), name)
    return bytes(out + s.trailing)


@dataclass(frozen=True, slots=True)
class StatusEg4:
    """EG4 v20 status (CID1 0x4A, CID2 0x44). EG4 declares 4 temperatures and sends 6 (MOSFET and
    environment uncounted), one combined current warning, a constant 9, then its event bytes."""

    data_flag: int  # EG4 sends 0x10 here
    command_value: int
    cell_warnings: tuple[int, ...]
    temp_warnings: tuple[int, ...]
    current_warning: int = 0
    total_voltage_warning: int = 0
    constant: int = 9
    balance_event: int = 0
    voltage_event: int = 0
    temperature_event: int = 0  # 16 bits
    current_event: int = 0
    remaining_capacity: int = 0
    fet_status: int = 0
    system: int = 0
    balancing: int = 0  # 16 bits, bit n = cell n + 1
    trailing: bytes = b""  # EG4's reserved bytes

    @property
    def charge_mos_on(self) -> bool:
        return bool(self.fet_status & 0x02)

    @property
    def discharge_mos_on(self) -> bool:
        return bool(self.fet_status & 0x01)

    @property
    def heater_on(self) -> bool:
        return bool(self.fet_status & 0x08)

    @property
    def balancing_cells(self) -> tuple[int, ...]:
        return tuple(i + 1 for i in range(16) if self.balancing >> i & 1)

    def flags(self) -> Flags:
        return Flags.of(_status_items(self, EG4_STATUS_BITS, EG4_PACK_WARNINGS))


_EG4_TAIL8 = ("balance_event", "voltage_event")
_EG4_TAIL8B = ("current_event", "remaining_capacity", "fet_status", "system")


def decode_status_eg4(info: bytes) -> StatusEg4:
    r = Reader(info, "EG4 status response")
    flag = r.u8("DATAFLAG")
    value = r.u8("address")
    cells = _read_warnings(r, "cell")
    temps = _read_warnings(r, "temperature", uncounted=2)  # MOSFET and environment
    cw = r.u8("current warning")
    vw = r.u8("total voltage warning")
    const = r.u8("constant")
    a = {name: r.u8(name) for name in _EG4_TAIL8}
    te = r.u16("temperature event")
    b = {name: r.u8(name) for name in _EG4_TAIL8B}
    bal = r.u16("balancing")
    return StatusEg4(
        flag,
        value,
        cells,
        temps,
        cw,
        vw,
        const,
        temperature_event=te,
        balancing=bal,
        trailing=r.rest(),
        **a,
        **b,
    )


def encode_status_eg4(s: StatusEg4) -> bytes:
    if len(s.temp_warnings) < 2:
        raise LocalProtocolError("EG4 status carries at least the MOSFET and environment sensors")
    out = bytearray(_u8(s.data_flag, "DATAFLAG") + _u8(s.command_value, "address"))
    out += _count(len(s.cell_warnings), "cells") + bytes(s.cell_warnings)
    out += _count(len(s.temp_warnings) - 2, "temperatures") + bytes(s.temp_warnings)
    out += _u8(s.current_warning, "current warning") + _u8(s.total_voltage_warning, "voltage warning")
    out += _u8(s.constant, "constant")
    for name in _EG4_TAIL8:
        out += _u8(getattr(s, name), name)
    out += _u16(s.temperature_event, "temperature event")
    for name in _EG4_TAIL8B:
        out += _u8(getattr(s, name), name)
    out += _u16(s.balancing, "balancing")
    return bytes(out + s.trailing)
