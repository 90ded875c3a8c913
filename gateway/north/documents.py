"""The one JSON document of each model snapshot, shared by every north adapter.

What it is for: a pack snapshot and the bank aggregate each have exactly one JSON shape, made here
and nowhere else: the HTTP API (`/api/packs`, `/api/system`, `/api/stream`, so the web UI and the
CLI) and MQTT (the pack and bank state topics, so Home Assistant's value templates) publish the
same document for the same snapshot (docs/http.md and docs/mqtt.md describe it).

The shape is the model's: field names are the model's own, with the unit in the name (`voltage_v`,
`current_a`, `soc_pct`, ...), nested as the model is (`telemetry`, `identity`, `link`, `parameters`,
`clock`); frozensets become sorted lists, enums their value, bytes hex. The bank is serialised
field by field, so a field added to `BankSnapshot` appears without a change here.

One precision rule, applied once in `plain`: the model quantizes every derived value to the
resolution of its unit (`gateway.core.model.q`), measured values are exact decimals from the
codecs, and a float a few units in the last place away from a decimal of 15 significant digits (all
a double holds exactly) is written as that decimal, which drops binary noise such as
3.2800000000000002 for 3.28; non-finite floats are `null`. Nothing is rounded to a display
precision here: that is the reader's choice (Home Assistant's suggested_display_precision, the UI).

Nothing here computes a measurement (those come from `gateway.core.model`); this module only adds
what the model exposes as properties (`online`, `label`, `cell_diff_v`, `success_ratio`, ...) and
the neutral meanings of the active flags by level. It never performs I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.core.model import BankSnapshot, PackSnapshot, Telemetry
from gateway.core.policy.engine import stops, warns
from protocol.bms.base import FlagInfo

SIGNIFICANT_DIGITS = 15
NOISE_ULPS = 4


def number(value: float) -> float | None:
    """A float as the documents write it: `None` when not finite; the decimal of 15 significant
    digits when the float is only binary noise away from it (a few units in the last place, as
    3.2800000000000002 from 3280 * 0.001); else the float itself. Not for timestamps (`stamp`)."""
    if not math.isfinite(value):
        return None
    short = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return short if abs(short - value) <= NOISE_ULPS * math.ulp(value) else value


def stamp(value: float | None) -> float | None:
    """A wall-clock time (every key ending in `_at`): written as the model holds it, microseconds
    and all (`None` when unknown or not finite). A timestamp is no decimal quantity: the 15-digit
    grid lies within a few units in the last place of about one epoch time in five, and `number`
    would move those by up to a microsecond."""
    return value if value is not None and math.isfinite(value) else None


def _field(name: str, value: Any) -> Any:
    return stamp(value) if name.endswith("_at") and isinstance(value, float) else plain(value)


def plain(obj: Any) -> Any:
    """Recursively convert dataclasses, mappings, sets, enums and floats to JSON-able data."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float):
        return number(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _field(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _field(str(k), v) for k, v in obj.items()}
    if isinstance(obj, frozenset | set):
        return sorted(plain(v) for v in obj)
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def meanings_doc(flags: Iterable[FlagInfo]) -> dict[str, list[str]]:
    """The active flags' neutral meanings by level (mappings/flags/outputs.toml names them)."""
    active = tuple(flags)
    return {"protection": sorted(stops(active)), "warning": sorted(warns(active))}


def telemetry_document(t: Telemetry) -> dict[str, Any]:
    data: dict[str, Any] = plain(t)
    data["temperatures"] = [
        {"role": tr.role.value, "index": tr.index, "label": tr.label, "value_c": plain(tr.value_c)}
        for tr in t.temperatures
    ]
    data["balancing"] = t.balancing
    data["meanings"] = meanings_doc(t.flags)
    return data


def pack_document(snap: PackSnapshot, *, parameter_values: bool = True) -> dict[str, Any]:
    """The JSON document of one pack's snapshot. Every key is always present (`null` when unknown);
    `telemetry` is `null` until the pack answered.

    `parameter_values=False` is the live form (MQTT state topics, `/api/stream`): the parameter
    table, ~100 values that change only when an operator writes them, is left out and only its
    `read_at` kept; it is read from `GET /api/packs/{bus}/{address}` or the parameters route. Every
    other key is the same document."""
    link: dict[str, Any] = plain(snap.link)
    link["success_ratio"] = plain(snap.link.success_ratio)
    data: dict[str, Any] = {
        "bus": snap.bus,
        "address": snap.address,
        "name": snap.name,
        "label": snap.label,
        "availability": snap.availability.value,
        "online": snap.online,
        "paused": snap.paused,
        "telemetry": None if snap.telemetry is None else telemetry_document(snap.telemetry),
        "identity": plain(snap.identity),
        "parameters": None,
        "clock": None,
        "link": link,
    }
    if snap.parameters is not None:
        data["parameters"] = {"read_at": stamp(snap.parameters.read_at)}
        if parameter_values:
            data["parameters"]["values"] = {
                n: {"value": plain(r.value), "unit": r.unit} for n, r in snap.parameters.values.items()
            }
    if snap.clock is not None:
        data["clock"] = {
            "pack_time": plain(snap.clock.pack_time),
            "read_at": stamp(snap.clock.read_at),
            "drift_s": plain(snap.clock.drift_s),
        }
    return data


def bank_document(bank: BankSnapshot) -> dict[str, Any]:
    """The JSON document of the bank aggregate: every field of `BankSnapshot`, its properties
    `cell_diff_v` and `has_data`, the meanings of the active flags, and `protecting_packs` as
    `{"bus", "address"}` objects."""
    data: dict[str, Any] = plain(bank)
    data["cell_diff_v"] = plain(bank.cell_diff_v)
    data["has_data"] = bank.has_data
    data["meanings"] = meanings_doc(bank.flags)
    data["protecting_packs"] = [{"bus": b, "address": a} for b, a in bank.protecting_packs]
    return data


def pack_answer(
    snap: PackSnapshot, now: float | None = None, *, parameter_values: bool = True
) -> dict[str, Any]:
    """`pack_document` as the HTTP API answers it: the same document plus `age_s`, the seconds since
    the pack's last successful read at the time of the request (`null` before the first, or without
    `now`). MQTT leaves it out: a retained document has no request time."""
    last = snap.link.last_success_at
    data = pack_document(snap, parameter_values=parameter_values)
    data["age_s"] = None if last is None or now is None else number(max(0.0, now - last))
    return data
