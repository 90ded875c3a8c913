"""Parameter tables of the BMS families: typed, validated at load, shared by every family.

A table is a TOML file `mappings/bms/<family>.toml` (loaded with `importlib.resources`, so it works
from a wheel) with a top-level `family`, an optional `[defaults]` table merged into every entry, and
one `[[param]]` per parameter:

    id        stable string id ("prot.cell_ov_start")
    name      unique identifier in the API, files and topics, without spaces: the vendor tool's name
              where it has none ("CELL_OV_Start"), else the label with "_" ("Cell_OV_Alarm")
    tool_name optional: the label on the vendor tool's page when it differs from `name`
    aliases   optional: other names accepted on input (e.g. the label "Cell OV Alarm" older
              versions used as the name); lookups resolve them to `name`
    section   optional: the vendor tool's heading ("CELL_Vol_Protect")
    group     protection | alarm | other
    unit      display unit (V, mV, A, °C, ms, s, min, %, Ah, ...)
    scale, offset    display = wire * scale + offset
    min, max         the manual's "Set Range" (display unit)
    rec_min, rec_max optional recommended range (the manual's unit column)
    tolerance        optional accuracy from the unit column (display unit, e.g. 0.025 for ±25 mV)
    default          the manual's default (omitted when the manual shows none)
    access    operator | administrator | factory   (level needed to write)
    dangerous, inferred   bools; `inferred` = the write encoding is not publicly documented
    per_pack  bool: state of this one pack (e.g. its remaining capacity) that must not be cloned onto
              another pack: parameter exports and imports leave it out unless asked to include it
    choices   optional list of {value, meaning}; only those values are accepted
    raw_min, raw_max  limits of the wire field (default 0..65535)
    note      optional free text (where a scale or range is an interpretation)
    wire      free inline table for the family's encoding (Tianpower: table + record id; PACE: ...)

Everything is checked at load: unknown keys, duplicate ids and names, scale non-zero, ranges ordered
and representable on the wire, defaults inside the range and among the choices.

This module must never perform I/O other than reading the packaged table files.
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any


class ParameterTableError(ValueError):
    """A parameter table file is invalid; the message names the file, the entry and the problem."""


class ParameterValueError(ValueError):
    """A value was refused for a parameter; the message names parameter, value and allowed range."""

    def __init__(self, name: str, value: object, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class Group(enum.StrEnum):
    PROTECTION = "protection"
    ALARM = "alarm"
    OTHER = "other"


class Access(enum.StrEnum):
    """Level needed to write (reading is always `operator`, as in the vendor tool)."""

    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"
    FACTORY = "factory"


@dataclass(frozen=True, slots=True)
class Choice:
    value: int
    meaning: str


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a family's table (see the module docstring for the fields)."""

    id: str
    name: str
    group: Group
    unit: str
    scale: float
    offset: float
    min: float
    max: float
    default: float | None
    access: Access
    dangerous: bool
    inferred: bool
    wire: Mapping[str, Any]
    rec_min: float | None = None
    rec_max: float | None = None
    tolerance: float | None = None
    choices: tuple[Choice, ...] = ()
    raw_min: int = 0
    raw_max: int = 65535
    tool_name: str | None = None
    section: str | None = None
    note: str | None = None
    decimals: int = field(default=0)
    per_pack: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The label the vendor tool shows on its page."""
        return self.tool_name or self.name

    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.choices:
            return "one of " + ", ".join(str(c.value) for c in self.choices)
        return f"{_fmt(self.min)}..{_fmt(self.max)}{unit}"

    def from_wire(self, raw: int) -> float:
        """Display value of a raw wire value."""
        return round(raw * self.scale + self.offset, self.decimals)

    def to_wire(self, value: float) -> int:
        """Raw wire value for a display value (validated first)."""
        return self._raw(self.validate(value))

    def _raw(self, value: float) -> int:
        return round((value - self.offset) / self.scale)

    def validate(self, value: object) -> float:
        """The value as a float if it is acceptable, else ParameterValueError with a clear message."""
        unit = f" {self.unit}" if self.unit else ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterValueError(
                self.name,
                value,
                f"{self.name}: expected a number, got {value!r} (allowed {self.range_text()})",
            )
        v = float(value)
        if not math.isfinite(v):
            raise ParameterValueError(self.name, value, f"{self.name}: {value!r} is not a finite number")
        if self.choices:
            if not v.is_integer() or int(v) not in {c.value for c in self.choices}:
                meanings = "; ".join(f"{c.value} = {c.meaning}" for c in self.choices)
                raise ParameterValueError(
                    self.name, value, f"{self.name}: {_fmt(v)} is not allowed; allowed values: {meanings}"
                )
            return v
        if not self.min <= v <= self.max:
            raise ParameterValueError(
                self.name,
                value,
                f"{self.name}: {_fmt(v)}{unit} is outside the allowed range {self.range_text()}",
            )
        raw = self._raw(v)
        if not self.raw_min <= raw <= self.raw_max:
            raise ParameterValueError(
                self.name,
                value,
                f"{self.name}: {_fmt(v)}{unit} does not fit the wire field ({self.range_text()})",
            )
        return v


@dataclass(frozen=True, slots=True)
class ParameterTable:
    family: str
    params: tuple[ParamSpec, ...]
    by_name: Mapping[str, ParamSpec]
    by_id: Mapping[str, ParamSpec]
    by_alias: Mapping[str, ParamSpec] = field(default_factory=lambda: MappingProxyType({}))

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name or name in self.by_alias

    def canonical(self, name: str) -> str:
        """The parameter's name for `name` or one of its aliases (unchanged when unknown)."""
        spec = self.by_name.get(name) or self.by_alias.get(name)
        return name if spec is None else spec.name

    def get(self, name: str) -> ParamSpec:
        """The parameter by name or alias; KeyError with the known names' count when absent."""
        spec = self.by_name.get(name) or self.by_alias.get(name)
        if spec is None:
            raise KeyError(f"{self.family}: unknown parameter {name!r} ({len(self.params)} known)")
        return spec

    def in_group(self, group: Group) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.group is group)

    def where_wire(self, **match: object) -> tuple[ParamSpec, ...]:
        """The parameters whose `wire` table contains every given key with the given value."""
        return tuple(p for p in self.params if all(p.wire.get(k) == v for k, v in match.items()))

    def validate(self, values: Mapping[str, object]) -> dict[str, float]:
        """Validate a set of writes by name; raises on the first unknown name or bad value."""
        out: dict[str, float] = {}
        for name, value in values.items():
            if name not in self:
                raise ParameterValueError(name, value, f"{self.family}: unknown parameter {name!r}")
            spec = self.get(name)
            out[spec.name] = spec.validate(value)
        return out


_REQUIRED = ("id", "name", "group", "unit", "scale", "min", "max", "access")
_OPTIONAL = (
    "offset",
    "default",
    "rec_min",
    "rec_max",
    "tolerance",
    "dangerous",
    "inferred",
    "per_pack",
    "choices",
    "raw_min",
    "raw_max",
    "tool_name",
    "aliases",
    "section",
    "note",
    "wire",
)


def _decimals(scale: float) -> int:
    exp = Decimal(repr(abs(scale))).normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def _num(where: str, key: str, value: object, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParameterTableError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _parse_entry(where: str, entry: Mapping[str, Any]) -> ParamSpec:
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ParameterTableError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ParameterTableError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in ("id", "name", "unit"):
        if not isinstance(entry[key], str) or (key != "unit" and not entry[key]):
            raise ParameterTableError(f"{where}: {key} must be a non-empty string")
    where = f"{where} ({entry['name']})"
    if any(c.isspace() for c in entry["name"]):
        raise ParameterTableError(f"{where}: name must have no spaces (put the tool's label in tool_name)")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ParameterTableError(f"{where}: aliases must be a list of non-empty strings")
    try:
        group = Group(entry["group"])
        access = Access(entry["access"])
    except ValueError as err:
        raise ParameterTableError(f"{where}: {err}") from None
    scale = _num(where, "scale", entry["scale"])
    assert scale is not None
    if scale == 0:
        raise ParameterTableError(f"{where}: scale must be non-zero (it has to be invertible)")
    offset = _num(where, "offset", entry.get("offset", 0.0)) or 0.0
    lo = _num(where, "min", entry["min"])
    hi = _num(where, "max", entry["max"])
    assert lo is not None and hi is not None
    if lo > hi:
        raise ParameterTableError(f"{where}: min {_fmt(lo)} is greater than max {_fmt(hi)}")
    rec_lo = _num(where, "rec_min", entry.get("rec_min"), optional=True)
    rec_hi = _num(where, "rec_max", entry.get("rec_max"), optional=True)
    if (rec_lo is None) != (rec_hi is None):
        raise ParameterTableError(f"{where}: rec_min and rec_max go together")
    if rec_lo is not None and rec_hi is not None and rec_lo > rec_hi:
        raise ParameterTableError(f"{where}: rec_min is greater than rec_max")
    for key in ("dangerous", "inferred", "per_pack"):
        if not isinstance(entry.get(key, False), bool):
            raise ParameterTableError(f"{where}: {key} must be true or false")
    raw_min, raw_max = entry.get("raw_min", 0), entry.get("raw_max", 65535)
    if (
        not all(isinstance(x, int) and not isinstance(x, bool) for x in (raw_min, raw_max))
        or raw_min > raw_max
    ):
        raise ParameterTableError(f"{where}: raw_min/raw_max must be ordered integers")
    choices: list[Choice] = []
    for c in entry.get("choices", []):
        if not isinstance(c, dict) or set(c) != {"value", "meaning"} or not isinstance(c["value"], int):
            raise ParameterTableError(f"{where}: each choice needs an integer value and a meaning")
        choices.append(Choice(int(c["value"]), str(c["meaning"])))
    if len({c.value for c in choices}) != len(choices):
        raise ParameterTableError(f"{where}: duplicate choice values")
    wire = entry.get("wire", {})
    if not isinstance(wire, dict):
        raise ParameterTableError(f"{where}: wire must be an inline table")
    for key in ("tool_name", "section", "note"):
        if key in entry and not isinstance(entry[key], str):
            raise ParameterTableError(f"{where}: {key} must be a string")
    spec = ParamSpec(
        id=entry["id"],
        name=entry["name"],
        group=group,
        unit=entry["unit"],
        scale=scale,
        offset=offset,
        min=lo,
        max=hi,
        default=_num(where, "default", entry.get("default"), optional=True),
        access=access,
        dangerous=entry.get("dangerous", False),
        inferred=entry.get("inferred", False),
        wire=MappingProxyType(dict(wire)),
        rec_min=rec_lo,
        rec_max=rec_hi,
        tolerance=_num(where, "tolerance", entry.get("tolerance"), optional=True),
        choices=tuple(choices),
        raw_min=raw_min,
        raw_max=raw_max,
        tool_name=entry.get("tool_name"),
        section=entry.get("section"),
        note=entry.get("note"),
        decimals=max(_decimals(scale), _decimals(offset)),
        per_pack=entry.get("per_pack", False),
        aliases=tuple(aliases),
    )
    # The range ends must be representable on the wire and survive a round trip.
    for what, value in (("min", lo), ("max", hi)):
        raw = spec._raw(value)
        if not raw_min <= raw <= raw_max:
            raise ParameterTableError(
                f"{where}: {what} {_fmt(value)} needs raw {raw}, outside the wire field {raw_min}..{raw_max}"
            )
    for c in choices:
        if not lo <= c.value <= hi:
            raise ParameterTableError(f"{where}: choice {c.value} outside {_fmt(lo)}..{_fmt(hi)}")
    if spec.default is not None:
        try:
            spec.validate(spec.default)
        except ParameterValueError as err:
            raise ParameterTableError(f"{where}: default refused: {err}") from None
        if not math.isclose(spec.from_wire(spec._raw(spec.default)), spec.default, abs_tol=1e-9):
            raise ParameterTableError(f"{where}: default {_fmt(spec.default)} is not on the wire grid")
    return spec


def parse_table(text: str, source: str = "<string>") -> ParameterTable:
    """Parse and validate a table from TOML text (`source` names it in error messages)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ParameterTableError(f"{source}: not valid TOML: {err}") from None
    unknown = sorted(set(doc) - {"family", "defaults", "param"})
    if unknown:
        raise ParameterTableError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    family = doc.get("family")
    if not isinstance(family, str) or not family:
        raise ParameterTableError(f"{source}: 'family' must be a non-empty string")
    defaults = doc.get("defaults", {})
    entries = doc.get("param", [])
    if not isinstance(defaults, dict) or not isinstance(entries, list) or not entries:
        raise ParameterTableError(f"{source}: needs [[param]] entries (and [defaults] must be a table)")
    return build_table(family, ({**defaults, **e} for e in entries), source)


def build_table(
    family: str, entries: Iterable[Mapping[str, Any]], source: str = "<entries>"
) -> ParameterTable:
    """Validate entries (already merged with defaults) into a table."""
    params: list[ParamSpec] = []
    by_name: dict[str, ParamSpec] = {}
    by_id: dict[str, ParamSpec] = {}
    for i, entry in enumerate(entries):
        spec = _parse_entry(f"{source}: param #{i + 1}", entry)
        if spec.id in by_id:
            raise ParameterTableError(f"{source}: duplicate id {spec.id!r}")
        if spec.name in by_name:
            raise ParameterTableError(f"{source}: duplicate name {spec.name!r}")
        params.append(spec)
        by_name[spec.name] = spec
        by_id[spec.id] = spec
    by_alias: dict[str, ParamSpec] = {}
    for spec in params:
        for alias in spec.aliases:
            if alias in by_name or alias in by_alias:
                raise ParameterTableError(
                    f"{source}: alias {alias!r} of {spec.name} is already a name or alias"
                )
            by_alias[alias] = spec
    return ParameterTable(
        family, tuple(params), MappingProxyType(by_name), MappingProxyType(by_id), MappingProxyType(by_alias)
    )


@cache
def load_table(family: str) -> ParameterTable:
    """The packaged table `mappings/bms/<family>.toml`, validated (cached: tables are immutable)."""
    if not family.isidentifier():
        raise ParameterTableError(f"invalid family name {family!r}")
    resource = resources.files("mappings.bms").joinpath(f"{family}.toml")
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterTableError(f"no parameter table for family {family!r}") from None
    table = parse_table(text, f"mappings/bms/{family}.toml")
    if table.family != family:
        raise ParameterTableError(f"mappings/bms/{family}.toml declares family {table.family!r}")
    return table


_DECIMAL_WIRE_KEYS = ("field", "index", "position")


def markdown_table(table: ParameterTable) -> str:
    """The table as a Markdown table for `docs/parameters.md` (kept in sync by a test)."""

    def num(value: float | None) -> str:
        return "" if value is None else _fmt(value)

    def wire(spec: ParamSpec) -> str:
        return ", ".join(
            f"{k}=0x{v:02X}" if isinstance(v, int) and k not in _DECIMAL_WIRE_KEYS else f"{k}={v}"
            for k, v in spec.wire.items()
        )

    lines = [
        "| Name | Tool label | Section | Group | Unit | Set range | Recommended | Default | Access | Flags "
        "| Wire | Note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in table:
        rng = p.range_text().replace("|", "/")
        rec = "" if p.rec_min is None else f"{num(p.rec_min)}..{num(p.rec_max)}"
        if p.tolerance is not None:
            rec = f"{rec} (±{num(p.tolerance)})".strip()
        flags = ", ".join(f for f, on in (("inferred", p.inferred), ("dangerous", p.dangerous)) if on)
        note = (p.note or "").replace("|", "/")
        if p.choices:
            note = "; ".join(f"{c.value} = {c.meaning}" for c in p.choices) + (f". {note}" if note else "")
        lines.append(
            f"| {p.name} | {p.label} | {p.section or ''} | {p.group.value} | {p.unit} | {rng} | {rec} | "
            f"{num(p.default)} | {p.access.value} | {flags} | {wire(p)} | {note} |"
        )
    return "\n".join(lines) + "\n"
