"""Home Assistant entity descriptions (`entities.toml`) and their validated loader.

The table says which entities a pack device and the gateway device have, where each one's value
sits in the JSON state document, and its device_class/state_class/unit. `load_entities()` checks
every entry against the combinations Home Assistant accepts, so a bad edit fails at start-up (and in
the tests) instead of as a rejected entity in somebody's HA log. Building discovery payloads is
done by `gateway.north.mqtt.publisher`; this module only holds and checks the data.

Nothing here performs I/O beyond reading the packaged TOML file when asked to.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

PLATFORMS = ("sensor", "binary_sensor")
REPEATS = ("cells", "temperatures")
STATE_CLASSES = ("measurement", "total", "total_increasing")
ENTITY_CATEGORIES = ("diagnostic",)

# Sensor device classes and the units HA accepts for them (the subset this gateway uses).
VALID_UNITS: Mapping[str, frozenset[str]] = {
    "battery": frozenset({"%"}),
    "voltage": frozenset({"V", "mV"}),
    "current": frozenset({"A", "mA"}),
    "power": frozenset({"W", "kW"}),
    "temperature": frozenset({"°C"}),
    "energy_storage": frozenset({"Wh", "kWh"}),
    "energy": frozenset({"Wh", "kWh"}),
    "duration": frozenset({"s", "min", "h"}),
}
# Device classes that only make sense with some state classes (HA rejects energy + measurement).
VALID_STATE_CLASSES: Mapping[str, frozenset[str]] = {
    "energy": frozenset({"total", "total_increasing"}),
    "energy_storage": frozenset({"measurement"}),
    "battery": frozenset({"measurement"}),
}
BINARY_DEVICE_CLASSES = frozenset(
    {"battery_charging", "power", "running", "safety", "problem", "connectivity"}
)

_KEY = re.compile(r"^[a-z0-9_]*(\{i\}|\{label\})?[a-z0-9_]*$")
_FIELD = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_{][a-z0-9_{}]*|\[\{i0\}\])*$")


class EntityTableError(ValueError):
    """The entity table is invalid; the message names the entry and the rule."""


@dataclass(frozen=True, slots=True)
class EntitySpec:
    key: str
    name: str
    platform: str
    field: str
    repeat: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    precision: int | None = None
    entity_category: str | None = None
    icon: str | None = None
    optional: bool = False  # left out of discovery while the pack does not report the value
    value: str | None = None  # Jinja expression of the state, `{value}` = the field ("{value} > 0")

    def expand(self, cells: int, temperature_labels: Sequence[str]) -> list[EntitySpec]:
        """Concrete entities: one per cell / temperature sensor for repeated entries, else itself."""
        if self.repeat == "cells":
            return [self._fill(i=str(i), i0=str(i - 1)) for i in range(1, cells + 1)]
        if self.repeat == "temperatures":
            return [
                self._fill(label=label, i=str(n), i0=str(n - 1))
                for n, label in enumerate(temperature_labels, start=1)
            ]
        return [self]

    def _fill(self, **values: str) -> EntitySpec:
        return replace(
            self,
            key=self.key.format_map(values),
            name=self.name.format_map(values),
            field=self.field.format_map(values),
            repeat=None,
        )

    @property
    def path(self) -> tuple[str | int, ...]:
        """The field as keys and list indexes below `value_json` ("cells_v[3]" -> ("cells_v", 3))."""
        return field_path(self.field)

    @property
    def value_template(self) -> str:
        """The Jinja template HA renders on the state document.

        Guarded: every step of the path is tested with `is defined` before it is used, and a missing
        or null value renders `None`, which HA's MQTT sensors take as "unknown" without logging a
        template warning (a state document without a layout, or a layout that shrank). With `value`
        the state is that expression of the field's value (only evaluated once the guard holds).
        """
        expr = "value_json" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        guards = []
        step = "value_json"
        for p in self.path:
            step += f"[{p}]" if isinstance(p, int) else f".{p}"
            guards.append(f"{step} is defined")
        guard = " and ".join([*guards, f"{expr} is not none"])
        if self.value is not None:
            expr = "(" + self.value.replace("{value}", expr) + ")"
        if self.platform == "binary_sensor":
            return "{{ ('ON' if " + expr + " else 'OFF') if " + guard + " else None }}"
        return "{{ " + expr + " if " + guard + " else None }}"


def field_path(text: str) -> tuple[str | int, ...]:
    """Split a state-document path ("link.timeouts", "cells_v[3]") into keys and list indexes."""
    out: list[str | int] = []
    for part in text.split("."):
        name, _, rest = part.partition("[")
        out.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            out.append(int(index))
            rest = rest.removeprefix("[")
    return tuple(out)


def field_value(document: Mapping[str, Any], path: Sequence[str | int]) -> Any:
    """The value at `path` in a state document, or None where the path does not exist."""
    value: Any = document
    for p in path:
        if isinstance(p, int):
            if not isinstance(value, list) or not -len(value) <= p < len(value):
                return None
            value = value[p]
        else:
            if not isinstance(value, Mapping):
                return None
            value = value.get(p)
    return value


@dataclass(frozen=True, slots=True)
class EntityTable:
    pack: tuple[EntitySpec, ...]
    gateway: tuple[EntitySpec, ...]


def _check(where: str, spec: EntitySpec) -> None:
    def fail(msg: str) -> None:
        raise EntityTableError(f"{where} ({spec.key!r}): {msg}")

    if spec.platform not in PLATFORMS:
        fail(f"platform must be one of {PLATFORMS}, not {spec.platform!r}")
    if not _KEY.match(spec.key):
        fail("key must be lower-case letters, digits and _ (with {i} or {label} when repeated)")
    if not _FIELD.match(spec.field):
        fail(f"field {spec.field!r} is not a path below value_json")
    if spec.repeat is not None:
        if spec.repeat not in REPEATS:
            fail(f"repeat must be one of {REPEATS}")
        placeholder = "{i}" if spec.repeat == "cells" else "{label}"
        if placeholder not in spec.key or placeholder not in spec.name:
            fail(f"a repeated entity needs {placeholder} in its key and name")
    elif "{" in spec.key + spec.name + spec.field:
        fail("placeholders are only allowed with repeat")
    if spec.value is not None:
        rest = spec.value.replace("{value}", "")
        if rest == spec.value or any(c in rest for c in "{}%#"):
            fail("value is a Jinja expression that names the field as {value}, without other braces")
    if spec.entity_category is not None and spec.entity_category not in ENTITY_CATEGORIES:
        fail(f"entity_category must be one of {ENTITY_CATEGORIES} (read-only entities)")
    if spec.platform == "binary_sensor":
        if spec.device_class is not None and spec.device_class not in BINARY_DEVICE_CLASSES:
            fail(f"binary_sensor device_class {spec.device_class!r} not allowed")
        if spec.unit is not None or spec.state_class is not None or spec.precision is not None:
            fail("a binary_sensor has no unit, state_class or precision")
        return
    if spec.state_class is not None and spec.state_class not in STATE_CLASSES:
        fail(f"state_class must be one of {STATE_CLASSES}")
    if spec.device_class is not None:
        units = VALID_UNITS.get(spec.device_class)
        if units is None:
            fail(f"sensor device_class {spec.device_class!r} is not in the table of known classes")
        elif spec.unit not in units:
            fail(f"device_class {spec.device_class!r} needs a unit in {sorted(units)}, not {spec.unit!r}")
        allowed_sc = VALID_STATE_CLASSES.get(spec.device_class)
        if allowed_sc is not None and spec.state_class not in allowed_sc:
            fail(f"device_class {spec.device_class!r} needs state_class in {sorted(allowed_sc)}")
    if spec.unit == "%" and spec.device_class not in (None, "battery"):
        fail("% only with device_class battery or none")


def parse_entities(data: Mapping[str, Any]) -> EntityTable:
    """Validate the table's raw data (as read from TOML)."""
    known = set(EntitySpec.__dataclass_fields__)
    groups: dict[str, tuple[EntitySpec, ...]] = {}
    for group in ("pack", "gateway"):
        specs: list[EntitySpec] = []
        for n, raw in enumerate(data.get(group, []), start=1):
            where = f"[[{group}]] #{n}"
            if not isinstance(raw, dict):
                raise EntityTableError(f"{where}: expected a table")
            unknown = set(raw) - known
            if unknown:
                raise EntityTableError(f"{where}: unknown keys {sorted(unknown)}")
            missing = {"key", "name", "platform", "field"} - set(raw)
            if missing:
                raise EntityTableError(f"{where}: missing keys {sorted(missing)}")
            spec = EntitySpec(**raw)
            _check(where, spec)
            specs.append(spec)
        keys = [s.key for s in specs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise EntityTableError(f"[[{group}]]: duplicate keys {dupes}")
        groups[group] = tuple(specs)
    extra = set(data) - {"pack", "gateway"}
    if extra:
        raise EntityTableError(f"unknown top-level keys {sorted(extra)}")
    return EntityTable(pack=groups["pack"], gateway=groups["gateway"])


def load_entities() -> EntityTable:
    """The packaged entity table, validated."""
    text = resources.files(__name__).joinpath("entities.toml").read_text(encoding="utf-8")
    return parse_entities(tomllib.loads(text))
