"""Model objects -> JSON-able data for the HTTP API (and anyone else who needs plain data).

Field names are the model's own (units in the names: `voltage_v`, `current_a`, `soc_pct`, ...);
frozensets become sorted lists, enums their value, non-finite floats `null`. Every pack object
carries `bus`, `address` and `availability`. Nothing here computes a derived value: those come
from `gateway.core.model`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

from gateway.core.model import BankSnapshot, PackSnapshot, Telemetry


def plain(obj: Any) -> Any:
    """Recursively convert dataclasses, mappings, sets, enums and floats to JSON-able data."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, frozenset | set):
        return sorted(plain(v) for v in obj)
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def telemetry_json(t: Telemetry) -> dict[str, Any]:
    data: dict[str, Any] = plain(t)
    data["temperatures"] = [
        {"role": tr.role.value, "index": tr.index, "label": tr.label, "value_c": plain(tr.value_c)}
        for tr in t.temperatures
    ]
    data["balancing"] = t.balancing
    return data


def pack_json(snap: PackSnapshot, now: float | None = None) -> dict[str, Any]:
    last = snap.link.last_success_at
    data: dict[str, Any] = {
        "bus": snap.bus,
        "address": snap.address,
        "name": snap.name,
        "label": snap.label,
        "availability": snap.availability.value,
        "online": snap.online,
        "paused": snap.paused,
        "age_s": None if last is None or now is None else max(0.0, now - last),
        "telemetry": None if snap.telemetry is None else telemetry_json(snap.telemetry),
        "identity": plain(snap.identity),
        "parameters": None,
        "clock": None,
        "link": plain(snap.link),
    }
    data["link"]["success_ratio"] = plain(snap.link.success_ratio)
    if snap.parameters is not None:
        data["parameters"] = {
            "read_at": snap.parameters.read_at,
            "values": {
                n: {"value": plain(r.value), "unit": r.unit} for n, r in snap.parameters.values.items()
            },
        }
    if snap.clock is not None:
        data["clock"] = {
            "pack_time": snap.clock.pack_time,
            "read_at": snap.clock.read_at,
            "drift_s": snap.clock.drift_s,
        }
    return data


def bank_json(bank: BankSnapshot) -> dict[str, Any]:
    data: dict[str, Any] = plain(bank)
    data["cell_diff_v"] = plain(bank.cell_diff_v)
    data["has_data"] = bank.has_data
    data["protecting_packs"] = [{"bus": b, "address": a} for b, a in bank.protecting_packs]
    return data
