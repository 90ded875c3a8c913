"""The JSON documents the MQTT adapter publishes: one per pack, the bank, and events (pure functions).

What it is for: turning model snapshots into the state documents of docs/mqtt.md, values rounded
once here. It must never perform I/O or know about the broker.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway import __version__
from gateway.core.model import ModelView, PackEvent, PackSnapshot
from gateway.core.policy.engine import stops, warns
from gateway.north.metrics.collector import DecisionLike
from protocol.bms.base import FlagInfo


def _origin() -> dict[str, str]:
    """Home Assistant's `origin` block. `support_url` only when the installed package declares a
    project URL (pyproject `[project.urls]`); never a made-up address."""
    origin = {"name": "bms-gateway", "sw_version": __version__}
    try:
        urls = importlib.metadata.metadata("bms-gateway").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        urls = []
    by_label = dict(u.split(", ", 1) for u in urls if ", " in u)
    for label in ("Support", "Issues", "Homepage", "Repository", "Source"):
        if label in by_label:
            origin["support_url"] = by_label[label]
            break
    return origin


ORIGIN = _origin()


def meanings_doc(flags: Iterable[FlagInfo]) -> dict[str, list[str]]:
    """The active flags' neutral meanings by level (mappings/flags/outputs.toml names them)."""
    active = tuple(flags)
    return {"protection": sorted(stops(active)), "warning": sorted(warns(active))}


def slug(text: str) -> str:
    """Lower-case letters, digits and underscores (HA ids, topic-safe)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# --- documents (pure) ---


_MEASUREMENT_KEYS = (
    "measured_at",
    "voltage_v",
    "current_a",
    "power_w",
    "soc_pct",
    "soh_pct",
    "full_capacity_ah",
    "remaining_capacity_ah",
    "nominal_capacity_ah",
    "cycles",
    "cell_max_v",
    "cell_min_v",
    "cell_avg_v",
    "cell_diff_v",
    "cell_diff_mv",
    "cell_max_index",
    "cell_min_index",
    "temp_max_c",
    "temp_min_c",
    "charge_mos_on",
    "discharge_mos_on",
    "heater_on",
    "fan_on",
    "charging",
    "balancing",
    "remaining_charge_time_s",
    "remaining_discharge_time_s",
    "flags_text",
)


def pack_document(snap: PackSnapshot) -> dict[str, Any]:
    """The JSON state of one pack. Every key is always present (null when unknown)."""
    t = snap.telemetry
    ident = snap.identity
    link = snap.link
    ratio = link.success_ratio
    doc: dict[str, Any] = {
        "bus": snap.bus,
        "address": snap.address,
        "name": snap.label,
        "availability": snap.availability.value,
        "identity": {
            "version": ident.version,
            "serial": ident.serial,
            "model": ident.model,
            "manufacturer": ident.manufacturer,
            "barcode": ident.barcode,
            "protocol": ident.protocol,
        },
        "link": {
            "requests": link.requests,
            "responses": link.responses,
            "timeouts": link.timeouts,
            "checksum_errors": link.checksum_errors,
            "device_errors": link.device_errors,
            "success_pct": None if ratio is None else round(ratio * 100.0, 2),
            "last_success_at": link.last_success_at,
            "last_poll_duration_s": _r(link.last_poll_duration_s),
        },
        "clock_drift_s": None if snap.clock is None else round(snap.clock.drift_s, 1),
    }
    if t is None:
        doc.update(dict.fromkeys(_MEASUREMENT_KEYS))
        doc.update(cells_v=[], temperatures={}, balancing_cells=[], protections=[], alarms=[], faults=[])
        doc["meanings"] = {"protection": [], "warning": []}
        doc["states"] = []
        return doc
    flags = sorted(t.protections | t.alarms | t.faults)
    doc.update(
        measured_at=t.measured_at,
        voltage_v=_r(t.voltage_v),
        current_a=_r(t.current_a),
        power_w=_r(t.power_w, 1),
        soc_pct=_r(t.soc_pct, 2),
        soh_pct=_r(t.soh_pct, 2),
        full_capacity_ah=_r(t.full_capacity_ah, 3),
        remaining_capacity_ah=_r(t.remaining_capacity_ah, 3),
        nominal_capacity_ah=_r(t.nominal_capacity_ah, 3),
        cycles=t.cycles,
        cells_v=[_r(v) for v in t.cell_voltages_v],
        cell_max_v=_r(t.cell_max_v),
        cell_min_v=_r(t.cell_min_v),
        cell_avg_v=_r(t.cell_avg_v),
        cell_diff_v=_r(t.cell_diff_v),
        cell_diff_mv=_r(t.cell_diff_v * 1000.0, 1),
        cell_max_index=t.cell_max_index,
        cell_min_index=t.cell_min_index,
        temperatures={x.label: _r(x.value_c, 2) for x in t.temperatures},
        temp_max_c=_r(t.temp_max_c, 2),
        temp_min_c=_r(t.temp_min_c, 2),
        charge_mos_on=t.charge_mos_on,
        discharge_mos_on=t.discharge_mos_on,
        heater_on=t.heater_on,
        fan_on=t.fan_on,
        charging=t.current_a > 0.0,
        balancing=t.balancing,
        balancing_cells=list(t.balancing_cells),
        protections=sorted(t.protections),
        alarms=sorted(t.alarms),
        faults=sorted(t.faults),
        states=sorted(t.states),
        meanings=meanings_doc(t.flags),
        flags_text=", ".join(flags)[:250] if flags else "none",
        remaining_charge_time_s=_r(t.remaining_charge_time_s, 0),
        remaining_discharge_time_s=_r(t.remaining_discharge_time_s, 0),
    )
    return doc


def bank_document(
    view: ModelView, decision: DecisionLike | None, gateway: Mapping[str, Any]
) -> dict[str, Any]:
    b = view.bank
    limits: dict[str, Any] = {
        k: None
        for k in (
            "charge_voltage_v",
            "discharge_voltage_v",
            "charge_current_a",
            "discharge_current_a",
            "charge_enabled",
            "discharge_enabled",
            "stale",
            "limiting_text",
        )
    }
    limits["limiting"] = {}
    if decision is not None:
        limits.update(
            charge_voltage_v=_r(decision.charge_voltage_v, 3),
            discharge_voltage_v=_r(decision.discharge_voltage_v, 3),
            charge_current_a=_r(decision.charge_current_a, 2),
            discharge_current_a=_r(decision.discharge_current_a, 2),
            charge_enabled=decision.charge_enabled,
            discharge_enabled=decision.discharge_enabled,
            stale=decision.stale,
            limiting=dict(decision.limiting),
            limiting_text=", ".join(f"{k}: {v}" for k, v in sorted(decision.limiting.items()))[:250]
            or "none",
        )
    cell = {
        "cell_max": b.cell_max,
        "cell_min": b.cell_min,
        "temp_max": b.temp_max,
        "temp_min": b.temp_min,
    }
    return {
        "packs_configured": b.packs_configured,
        "packs_online": b.packs_online,
        "packs_stale": b.packs_stale,
        "packs_offline": b.packs_offline,
        "voltage_v": _r(b.voltage_v),
        "current_a": _r(b.current_a),
        "power_w": _r(b.power_w, 1),
        "soc_pct": _r(b.soc_pct, 2),
        "soh_pct": _r(b.soh_pct, 2),
        "full_capacity_ah": _r(b.full_capacity_ah, 3),
        "remaining_capacity_ah": _r(b.remaining_capacity_ah, 3),
        "nominal_capacity_ah": _r(b.nominal_capacity_ah, 3),
        "cell_max_v": _r(b.cell_max.value) if b.cell_max else None,
        "cell_min_v": _r(b.cell_min.value) if b.cell_min else None,
        "cell_diff_mv": None if b.cell_diff_v is None else round(b.cell_diff_v * 1000.0, 1),
        "temp_max_c": _r(b.temp_max.value, 2) if b.temp_max else None,
        "temp_min_c": _r(b.temp_min.value, 2) if b.temp_min else None,
        "where": {
            k: (None if c is None else {"bus": c.bus, "address": c.address, "index": c.index})
            for k, c in cell.items()
        },
        "protections": sorted(b.protections),
        "alarms": sorted(b.alarms),
        "faults": sorted(b.faults),
        "meanings": meanings_doc(b.flags),
        "remaining_charge_time_s": _r(b.remaining_charge_time_s, 0),
        "remaining_discharge_time_s": _r(b.remaining_discharge_time_s, 0),
        "limits": limits,
        "gateway": dict(gateway),
    }


def event_document(ev: PackEvent) -> dict[str, Any]:
    return {
        "at": ev.at,
        "bus": ev.bus,
        "address": ev.address,
        "kind": ev.kind.value,
        "name": ev.name,
        "active": ev.active,
    }
