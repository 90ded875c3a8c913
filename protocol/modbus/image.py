"""Register images built from point tables: point types, scaling, "not implemented" sentinels.

A point table (SunSpec model or native map block, loaded from `mappings/modbus/`) lists points with
offset, type, size and scale. `encode_block` turns engineering values (SI floats, ints, strings,
sets of bit numbers) into registers; a missing value (None) becomes the type's "not implemented"
sentinel as SunSpec defines them (uint16 0xFFFF, int16 0x8000, uint32 0xFFFFFFFF, int32
0x80000000, acc 0, string all NUL, sunssf 0x8000). `RegisterImage` is an immutable set of register
blocks that a server reads from; a new image is built and swapped in whole, so a reader never sees a
half-updated one.

Scale: a scaled point carries an exponent `sf` (raw = round(value / 10**sf)); for SunSpec the
exponent is the value of the named scale-factor point.

This module must never perform I/O.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from protocol.errors import LocalProtocolError
from protocol.modbus.pdu import ExceptionCode, ModbusError


class PointType(enum.StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    UINT64 = "uint64"
    INT64 = "int64"
    ACC16 = "acc16"
    ACC32 = "acc32"
    ACC64 = "acc64"
    ENUM16 = "enum16"
    ENUM32 = "enum32"
    BITFIELD16 = "bitfield16"
    BITFIELD32 = "bitfield32"
    COUNT = "count"
    SUNSSF = "sunssf"
    PAD = "pad"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class TypeInfo:
    size: int | None  # registers; None = given by the point (strings)
    signed: bool
    sentinel: int | None  # raw "not implemented" value (strings: all NUL)


# One row per type: size in registers, signedness, not-implemented raw value.
TYPES: Mapping[PointType, TypeInfo] = {
    PointType.UINT16: TypeInfo(1, False, 0xFFFF),
    PointType.INT16: TypeInfo(1, True, 0x8000),
    PointType.UINT32: TypeInfo(2, False, 0xFFFFFFFF),
    PointType.INT32: TypeInfo(2, True, 0x80000000),
    PointType.UINT64: TypeInfo(4, False, 0xFFFFFFFFFFFFFFFF),
    PointType.INT64: TypeInfo(4, True, 0x8000000000000000),
    PointType.ACC16: TypeInfo(1, False, 0),
    PointType.ACC32: TypeInfo(2, False, 0),
    PointType.ACC64: TypeInfo(4, False, 0),
    PointType.ENUM16: TypeInfo(1, False, 0xFFFF),
    PointType.ENUM32: TypeInfo(2, False, 0xFFFFFFFF),
    PointType.BITFIELD16: TypeInfo(1, False, 0xFFFF),
    PointType.BITFIELD32: TypeInfo(2, False, 0xFFFFFFFF),
    PointType.COUNT: TypeInfo(1, False, 0xFFFF),
    PointType.SUNSSF: TypeInfo(1, True, 0x8000),
    PointType.PAD: TypeInfo(1, False, 0x8000),
    PointType.STRING: TypeInfo(None, False, None),
}

BITFIELDS = (PointType.BITFIELD16, PointType.BITFIELD32)


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a table. `offset` counts registers from the start of its block."""

    name: str
    offset: int
    type: PointType
    size: int
    sf: str | int | None = None  # SunSpec: scale-factor point name; native: exponent
    units: str = ""
    mandatory: bool = False
    writable: bool = False
    label: str = ""
    description: str = ""
    symbols: Mapping[str, int] = field(default_factory=dict)  # enum values / bit numbers by name

    def __post_init__(self) -> None:
        info = TYPES[self.type]
        if info.size is not None and info.size != self.size:
            raise LocalProtocolError(f"{self.name}: {self.type} has size {info.size}, not {self.size}")
        if self.size < 1 or self.offset < 0:
            raise LocalProtocolError(f"{self.name}: bad size or offset")


Value = int | float | str | frozenset[int] | None
"""An engineering value: number (scaled by the point's sf), string, set of bit numbers, or None."""


def _raw_range(info: TypeInfo, size: int) -> tuple[int, int]:
    bits = 16 * size
    if info.signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def encode_value(point: PointDef, value: Value, sf: int | None = None) -> list[int]:
    """Registers for one point. `sf` is the exponent for scaled points (None: unscaled).

    Raises `LocalProtocolError` when the value does not fit (the caller decides what to serve).
    The type's sentinel is never produced from a real value: a value that would encode to it is
    out of range.
    """
    info = TYPES[point.type]
    size = point.size
    if point.type is PointType.STRING:
        if value is None:
            return [0] * size
        if not isinstance(value, str):
            raise LocalProtocolError(f"{point.name}: expected a string, got {value!r}")
        data = value.encode("utf-8")[: 2 * size]
        data = data.ljust(2 * size, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * size, 2)]
    if value is None:
        raw = info.sentinel if info.sentinel is not None else 0
        return _split(raw, size)
    if isinstance(value, frozenset):
        if point.type not in BITFIELDS:
            raise LocalProtocolError(f"{point.name}: a set of bits for a {point.type} point")
        raw = 0
        for bit in value:
            if not 0 <= bit < 16 * size:
                raise LocalProtocolError(f"{point.name}: bit {bit} out of range")
            raw |= 1 << bit
        if raw == info.sentinel:
            raise LocalProtocolError(f"{point.name}: every bit set reads as 'not implemented'")
        return _split(raw, size)
    if isinstance(value, str):
        raise LocalProtocolError(f"{point.name}: expected a number, got a string")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise LocalProtocolError(f"{point.name}: {value} is not a finite number")
    if sf is not None:
        number = number / (10.0**sf)
    raw_int = round(number)
    lo, hi = _raw_range(info, size)
    sentinel = info.sentinel
    if info.signed and sentinel is not None:
        lo += 1  # the most negative value is the sentinel
    elif sentinel is not None and sentinel != 0:
        hi -= 1  # the all-ones value is the sentinel
    if not lo <= raw_int <= hi:
        raise LocalProtocolError(f"{point.name}: {value} (raw {raw_int}) outside {lo}..{hi}")
    if raw_int < 0:
        raw_int += 1 << (16 * size)
    return _split(raw_int, size)


def _split(raw: int, size: int) -> list[int]:
    return [(raw >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def decode_raw(point: PointDef, registers: Sequence[int]) -> int | str | None:
    """The raw value of a point from its registers (signed types as Python ints), None if sentinel."""
    if len(registers) != point.size:
        raise LocalProtocolError(f"{point.name}: expected {point.size} registers")
    if point.type is PointType.STRING:
        data = b"".join(r.to_bytes(2, "big") for r in registers).rstrip(b"\0")
        return data.decode("utf-8", errors="replace") or None
    raw = 0
    for r in registers:
        raw = (raw << 16) | r
    info = TYPES[point.type]
    if info.sentinel and raw == info.sentinel and point.type is not PointType.PAD:
        return None
    if info.signed and raw >= 1 << (16 * point.size - 1):
        raw -= 1 << (16 * point.size)
    return raw


def scaled(point: PointDef, raw: int, sf: int | None) -> float:
    """Engineering value of a raw number."""
    return raw * (10.0**sf) if sf is not None else float(raw)


@dataclass(frozen=True, slots=True)
class Block:
    """A list of points laid out from offset 0 with a fixed length (a model body or a map block)."""

    name: str
    length: int
    points: tuple[PointDef, ...]

    def point(self, name: str) -> PointDef:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"{self.name}: no point {name!r}")

    def validate(self) -> None:
        """Points must not overlap and must lie inside the block."""
        used = [False] * self.length
        for p in self.points:
            if p.offset + p.size > self.length:
                raise LocalProtocolError(f"{self.name}.{p.name}: beyond the block length {self.length}")
            for i in range(p.offset, p.offset + p.size):
                if used[i]:
                    raise LocalProtocolError(f"{self.name}.{p.name}: overlaps another point")
                used[i] = True


_INFINITIES = (math.inf, -math.inf)
_PlanRow = tuple[PointDef, str, int, int, tuple[int, int] | None, list[int]]
_PLANS: dict[int, tuple[Block, tuple[_PlanRow, ...]]] = {}


def _plan(block: Block) -> tuple[_PlanRow, ...]:
    """Per point, what `encode_block` needs on every build, worked out once per block:
    (point, name, offset, size, raw range of a plain number (None: not a number type), words of None).
    """
    cached = _PLANS.get(id(block))
    if cached is not None and cached[0] is block:
        return cached[1]
    rows: list[_PlanRow] = []
    for p in block.points:
        info = TYPES[p.type]
        number_range: tuple[int, int] | None = None
        if p.type is not PointType.STRING:
            lo, hi = _raw_range(info, p.size)
            if info.signed and info.sentinel is not None:
                lo += 1
            elif info.sentinel is not None and info.sentinel != 0:
                hi -= 1
            number_range = (lo, hi)
        rows.append((p, p.name, p.offset, p.size, number_range, encode_value(p, None)))
    plan = tuple(rows)
    _PLANS[id(block)] = (block, plan)
    return plan


@dataclass(frozen=True, slots=True)
class EncodeError:
    point: str
    message: str


def encode_block(
    block: Block,
    values: Mapping[str, Value],
    scale: Mapping[str, int] | None = None,
    errors: list[EncodeError] | None = None,
    fill: int = 0,
) -> list[int]:
    """Registers for a block. Missing points get their sentinel; `fill` covers unused registers.

    `scale` maps a scale-factor point name to its exponent (SunSpec); a point whose `sf` is an int
    uses that exponent directly (native map). A value that does not fit is served as the sentinel
    and reported in `errors` (so one bad value never takes the whole image down).
    """
    regs = [fill] * block.length
    scale = scale or {}
    for p, name, offset, size, number_range, none_words in _plan(block):
        value = values.get(name)
        if value is None:
            regs[offset : offset + size] = none_words
            continue
        psf = p.sf
        if number_range is not None and (type(value) is float or type(value) is int):
            # fast path for plain numbers; anything unusual goes the general way below
            exp = psf if type(psf) is int else (scale.get(psf) if isinstance(psf, str) and psf else None)
            if exp is not None or not psf:
                number = float(value)
                if exp is not None:
                    number = number / (10.0**exp)
                if number == number and number not in _INFINITIES:
                    raw = round(number)
                    lo, hi = number_range
                    if lo <= raw <= hi:
                        if raw < 0:
                            raw += 1 << (16 * size)
                        if size == 1:
                            regs[offset] = raw
                        else:
                            regs[offset : offset + size] = _split(raw, size)
                        continue
        sf: int | None
        if isinstance(p.sf, int):
            sf = p.sf
        elif p.sf:
            sf = scale.get(p.sf)
            if sf is None and value is not None:
                if errors is not None:
                    errors.append(EncodeError(p.name, f"scale factor {p.sf} has no value"))
                value = None
        else:
            sf = None
        try:
            words = encode_value(p, value, sf)
        except LocalProtocolError as err:
            if errors is not None:
                errors.append(EncodeError(p.name, str(err)))
            words = encode_value(p, None)
        regs[p.offset : p.offset + p.size] = words
    return regs


class RegisterImage:
    """Immutable register blocks (start address -> packed registers) served to readers.

    A read must lie inside one block (adjacent blocks are merged when the image is built);
    anything else is 0x02 ILLEGAL DATA ADDRESS.
    """

    __slots__ = ("_blocks", "_starts")

    def __init__(self, blocks: Iterable[tuple[int, Sequence[int]]]) -> None:
        merged: list[tuple[int, list[int]]] = []
        for start, regs in sorted(((s, list(r)) for s, r in blocks), key=lambda b: b[0]):
            if not regs:
                continue
            if start < 0 or start + len(regs) > 0x10000:
                raise LocalProtocolError(f"block at {start} runs outside the address space")
            if merged and start < merged[-1][0] + len(merged[-1][1]):
                raise LocalProtocolError(f"block at {start} overlaps the previous one")
            if merged and start == merged[-1][0] + len(merged[-1][1]):
                merged[-1][1].extend(regs)
            else:
                merged.append((start, regs))
        packed: list[tuple[int, bytes]] = []
        for start, regs in merged:
            try:
                packed.append((start, struct.pack(f">{len(regs)}H", *regs)))
            except struct.error:
                bad = next(r for r in regs if not (isinstance(r, int) and 0 <= r <= 0xFFFF))
                raise LocalProtocolError(f"register value {bad} out of 0..65535") from None
        self._blocks = tuple(packed)
        self._starts = tuple(start for start, _ in self._blocks)

    @property
    def blocks(self) -> tuple[tuple[int, bytes], ...]:
        return self._blocks

    def read(self, address: int, count: int) -> bytes:
        for start, data in self._blocks:
            if start <= address and address + count <= start + len(data) // 2:
                off = 2 * (address - start)
                return data[off : off + 2 * count]
        raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{address}..{address + count - 1} not mapped")

    def registers(self, address: int, count: int) -> list[int]:
        data = self.read(address, count)
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

    def contains(self, address: int, count: int = 1) -> bool:
        try:
            self.read(address, count)
        except ModbusError:
            return False
        return True

    @property
    def size(self) -> int:
        return sum(len(d) // 2 for _, d in self._blocks)
