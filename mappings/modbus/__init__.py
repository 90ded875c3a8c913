"""Modbus register maps as data: SunSpec model tables, how we serve them, and the native map.

`load_sunspec_models()` reads `sunspec_models.toml` (the SunSpec point tables), `load_sunspec_map()`
reads `sunspec_map.toml` (scale factors, writable points), `load_native_map()` reads
`native.toml`. Each validates what it loads (contiguous offsets, declared lengths, scale-factor
references, non-overlapping blocks, write ranges) and raises `MappingError` naming the row.
Files are read through importlib.resources, so they ship inside a wheel.

Nothing is read at import time; this package never performs network or serial I/O.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from protocol.errors import LocalProtocolError
from protocol.modbus.image import TYPES, Block, PointDef, PointType


class MappingError(ValueError):
    """A map file is invalid; the message names the file and row."""


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MappingError(f"{name}: not valid TOML: {err}") from None


# ------------------------------------------------------------------------------------ SunSpec


@dataclass(frozen=True, slots=True)
class SunSpecGroup:
    name: str
    count: str | int  # name of the count point, or 0 (derived from L)
    block: Block  # offsets relative to the start of one instance


@dataclass(frozen=True, slots=True)
class SunSpecModel:
    id: int
    name: str  # pysunspec2 group name
    label: str
    fixed: Block  # offsets from the model start (ID at 0); length = 2 + fixed_length
    group: SunSpecGroup | None
    symbols: Mapping[str, Mapping[str, int]]

    @property
    def fixed_length(self) -> int:
        """L without repeating groups."""
        return self.fixed.length - 2

    def length(self, repeats: int = 0) -> int:
        """The model's L for `repeats` instances of its repeating group."""
        block = 0 if self.group is None else self.group.block.length
        return self.fixed_length + repeats * block

    def point(self, name: str) -> PointDef:
        try:
            return self.fixed.point(name)
        except KeyError:
            if self.group is not None:
                return self.group.block.point(name)
            raise


def _point_rows(
    where: str, rows: list[list[Any]], start: int, symbols: Mapping[str, Mapping[str, int]]
) -> tuple[PointDef, ...]:
    points: list[PointDef] = []
    expected = start
    for row in rows:
        if len(row) != 9:
            raise MappingError(f"{where}: row {row!r} must have 9 columns")
        offset, name, typ, size, sf, units, mo, access, label = row
        if offset != expected:
            raise MappingError(
                f"{where}.{name}: offset {offset}, expected {expected} (rows must be contiguous)"
            )
        try:
            ptype = PointType(typ)
            point = PointDef(
                name=name,
                offset=offset - start,
                type=ptype,
                size=size,
                sf=sf or None,
                units=units,
                mandatory=mo == "M",
                writable=access == "RW",
                label=label,
                symbols=symbols.get(name, {}),
            )
        except (ValueError, LocalProtocolError) as err:
            raise MappingError(f"{where}.{name}: {err}") from None
        points.append(point)
        expected += size
    return tuple(points)


def load_sunspec_models() -> Mapping[int, SunSpecModel]:
    """The SunSpec models the gateway serves, by model id, validated."""
    data = _read("sunspec_models.toml")
    models: dict[int, SunSpecModel] = {}
    for m in data.get("model", []):
        mid = int(m["id"])
        where = f"sunspec_models.toml model {mid}"
        symbols = {k: MappingProxyType(dict(v)) for k, v in m.get("symbols", {}).items()}
        points = _point_rows(where, m["points"], 0, symbols)
        fixed_len = int(m["fixed_length"])
        end = points[-1].offset + points[-1].size
        if end != fixed_len + 2:
            raise MappingError(f"{where}: points end at {end}, fixed_length says {fixed_len + 2}")
        if points[0].name != "ID" or points[1].name != "L":
            raise MappingError(f"{where}: a model starts with ID and L")
        fixed = Block(m["name"], fixed_len + 2, points)
        group = None
        if "group" in m:
            g = m["group"]
            gpoints = _point_rows(f"{where} group {g['name']}", g["points"], end, symbols)
            glen = int(g["block_length"])
            gend = gpoints[-1].offset + gpoints[-1].size
            if gend != glen:
                raise MappingError(f"{where} group {g['name']}: points span {gend}, block_length {glen}")
            count = g["count"]
            if isinstance(count, str) and count not in {p.name for p in points}:
                raise MappingError(f"{where}: group count point {count!r} not in the model")
            group = SunSpecGroup(g["name"], count, Block(g["name"], glen, gpoints))
        sf_names = {p.name for p in points if p.type is PointType.SUNSSF}
        all_points = points + (group.block.points if group else ())
        for p in all_points:
            if isinstance(p.sf, str) and p.sf not in sf_names:
                raise MappingError(
                    f"{where}.{p.name}: scale factor {p.sf!r} is not a sunssf point of the model"
                )
        if mid in models:
            raise MappingError(f"{where}: duplicate model id")
        models[mid] = SunSpecModel(
            mid, m["name"], m.get("label", ""), fixed, group, MappingProxyType(symbols)
        )
    return MappingProxyType(models)


@dataclass(frozen=True, slots=True)
class WriteRange:
    minimum: float
    maximum: float


@dataclass(frozen=True, slots=True)
class SunSpecMap:
    base_address: int
    bank_chain: tuple[str, ...]  # "1", "802", "804*", ...
    pack_chain: tuple[str, ...]
    scale: Mapping[int, Mapping[str, int]]  # model id -> SF point name -> exponent
    writable: Mapping[int, Mapping[str, WriteRange]]


def load_sunspec_map(models: Mapping[int, SunSpecModel] | None = None) -> SunSpecMap:
    """Our serving choices for the SunSpec models, checked against the model tables."""
    models = load_sunspec_models() if models is None else models
    data = _read("sunspec_map.toml")
    where = "sunspec_map.toml"
    base = int(data["base_address"])
    if base not in (0, 40000, 50000):
        raise MappingError(f"{where}: base_address must be 0, 40000 or 50000 (where clients look)")
    chains = []
    for key in ("bank_chain", "pack_chain"):
        chain = tuple(str(x) for x in data[key])
        if not chain or chain[0] != "1":
            raise MappingError(f"{where}: {key} must start with model 1")
        for item in chain:
            if int(item.rstrip("*")) not in models:
                raise MappingError(f"{where}: {key} names model {item} that has no point table")
        chains.append(chain)
    scale: dict[int, Mapping[str, int]] = {}
    for mid_s, table in data.get("scale", {}).items():
        model = models.get(int(mid_s))
        if model is None:
            raise MappingError(f"{where}: scale for unknown model {mid_s}")
        for name, value in table.items():
            if model.point(name).type is not PointType.SUNSSF:
                raise MappingError(f"{where}: scale.{mid_s}.{name} is not a scale-factor point")
            if not -10 <= int(value) <= 10:
                raise MappingError(f"{where}: scale.{mid_s}.{name} = {value} outside -10..10")
        scale[int(mid_s)] = MappingProxyType({k: int(v) for k, v in table.items()})
    writable: dict[int, Mapping[str, WriteRange]] = {}
    for mid_s, table in data.get("writable", {}).items():
        model = models[int(mid_s)]
        ranges: dict[str, WriteRange] = {}
        for name, r in table.items():
            point = model.point(name)
            if not point.writable:
                raise MappingError(f"{where}: writable.{mid_s}.{name} is read-only in the model")
            if point.size != 1:
                raise MappingError(f"{where}: writable.{mid_s}.{name}: only one-register points")
            if r["min"] > r["max"]:
                raise MappingError(f"{where}: writable.{mid_s}.{name}: min > max")
            ranges[name] = WriteRange(float(r["min"]), float(r["max"]))
        writable[int(mid_s)] = MappingProxyType(ranges)
    if "event" in data:
        raise MappingError(
            f"{where}: [[event]] rows are gone: event bits come from mappings/flags/outputs.toml"
        )
    return SunSpecMap(base, chains[0], chains[1], MappingProxyType(scale), MappingProxyType(writable))


# ------------------------------------------------------------------------------------ native


@dataclass(frozen=True, slots=True)
class NativeBlock:
    name: str
    start: int
    block: Block
    ranges: Mapping[str, WriteRange] = field(default_factory=dict)  # control block only


@dataclass(frozen=True, slots=True)
class NativeMap:
    version: int
    bank: NativeBlock
    control: NativeBlock
    pack: NativeBlock  # start = base of pack 1
    pack_stride: int
    max_packs: int
    enums: Mapping[str, Mapping[str, int]]
    bitfields: Mapping[str, Mapping[str, int]]

    def pack_start(self, number: int) -> int:
        """First register of pack `number` (1-based)."""
        if not 1 <= number <= self.max_packs:
            raise ValueError(f"pack number {number} outside 1..{self.max_packs}")
        return self.pack.start + (number - 1) * self.pack_stride


def _native_rows(
    where: str, rows: list[list[Any]], control: bool
) -> tuple[list[PointDef], dict[str, WriteRange]]:
    points: list[PointDef] = []
    ranges: dict[str, WriteRange] = {}
    for row in rows:
        want = 9 if control else (7, 8)
        if (control and len(row) != 9) or (not control and len(row) not in (7, 8)):
            raise MappingError(f"{where}: row {row!r} must have {want} columns")
        offset, name, typ, size, sf, units, desc = row[:7]
        count = 1 if control or len(row) == 7 else int(row[7])
        try:
            ptype = PointType(typ)
        except ValueError:
            raise MappingError(f"{where}.{name}: unknown type {typ!r}") from None
        info = TYPES[ptype]
        if info.size is not None and info.size != size:
            raise MappingError(f"{where}.{name}: {typ} has size {info.size}, not {size}")
        for i in range(count):
            pname = name if count == 1 else f"{name}_{i + 1}"
            points.append(
                PointDef(
                    name=pname,
                    offset=offset + i * size,
                    type=ptype,
                    size=size,
                    sf=int(sf) if ptype is not PointType.STRING else None,
                    units=units,
                    writable=control,
                    label=desc if count == 1 else f"{desc} {i + 1}",
                )
            )
        if control:
            lo, hi = float(row[7]), float(row[8])
            if lo > hi:
                raise MappingError(f"{where}.{name}: minimum > maximum")
            ranges[name] = WriteRange(lo, hi)
    return points, ranges


def load_native_map() -> NativeMap:
    data = _read("native.toml")
    where = "native.toml"
    blocks: dict[str, NativeBlock] = {}
    for key in ("bank", "control", "pack"):
        sec = data[key]
        points, ranges = _native_rows(f"{where} [{key}]", sec["points"], key == "control")
        block = Block(key, int(sec["length"]), tuple(points))
        try:
            block.validate()
        except LocalProtocolError as err:
            raise MappingError(f"{where} [{key}]: {err}") from None
        names = [p.name for p in points]
        if len(set(names)) != len(names):
            raise MappingError(f"{where} [{key}]: duplicate point names")
        start = int(sec["base"] if key == "pack" else sec["start"])
        blocks[key] = NativeBlock(key, start, block, MappingProxyType(ranges))
    pack = data["pack"]
    stride, max_packs = int(pack["stride"]), int(pack["max_packs"])
    if stride < blocks["pack"].block.length:
        raise MappingError(f"{where}: pack stride {stride} shorter than the pack block")
    spans = sorted(
        [
            (blocks["bank"].start, blocks["bank"].start + blocks["bank"].block.length, "bank"),
            (blocks["control"].start, blocks["control"].start + blocks["control"].block.length, "control"),
            (blocks["pack"].start, blocks["pack"].start + stride * max_packs, "packs"),
        ]
    )
    for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise MappingError(f"{where}: blocks {a} and {b} overlap")
    if spans[-1][1] > 0x10000:
        raise MappingError(f"{where}: the pack blocks run past register 65535")
    enums = {k: MappingProxyType(dict(v)) for k, v in data.get("enums", {}).items()}
    bitfields = {k: MappingProxyType(dict(v)) for k, v in data.get("bitfields", {}).items()}
    return NativeMap(
        version=int(data["version"]),
        bank=blocks["bank"],
        control=blocks["control"],
        pack=blocks["pack"],
        pack_stride=stride,
        max_packs=max_packs,
        enums=MappingProxyType(enums),
        bitfields=MappingProxyType(bitfields),
    )
