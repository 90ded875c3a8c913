"""The JSON documents the MQTT adapter publishes: one per pack, the bank, and events (pure functions).

What it is for: the state documents of docs/mqtt.md. A pack's state is its one JSON document
(`gateway.north.documents.pack_document`, the same the HTTP API answers); the bank state wraps the
bank's one document with the charge limits and the gateway's counters. It must never perform I/O or
know about the broker.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any

from gateway import __version__
from gateway.core.model import ModelView, PackEvent
from gateway.north.documents import bank_document, plain
from gateway.north.metrics.collector import DecisionLike


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


def slug(text: str) -> str:
    """Lower-case letters, digits and underscores (HA ids, topic-safe)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


# --- documents (pure) ---

LIMIT_KEYS = (
    "charge_voltage_v",
    "discharge_voltage_v",
    "charge_current_a",
    "discharge_current_a",
    "charge_enabled",
    "discharge_enabled",
    "stale",
    "limiting",
)


def limits_document(decision: DecisionLike | None) -> dict[str, Any]:
    """The charge limits of the latest decision (every key `null` before the first decision)."""
    if decision is None:
        return dict.fromkeys(LIMIT_KEYS)
    limits: dict[str, Any] = {k: plain(getattr(decision, k)) for k in LIMIT_KEYS if k != "limiting"}
    limits["limiting"] = dict(decision.limiting)
    return limits


def bank_state_document(
    view: ModelView, decision: DecisionLike | None, gateway: Mapping[str, Any]
) -> dict[str, Any]:
    """The bank state topic: the bank's one document (as `/api/system` answers it), the charge
    limits and the gateway's MQTT counters."""
    return {"bank": bank_document(view.bank), "limits": limits_document(decision), "gateway": dict(gateway)}


def event_document(ev: PackEvent) -> dict[str, Any]:
    return {
        "at": ev.at,
        "bus": ev.bus,
        "address": ev.address,
        "kind": ev.kind.value,
        "name": ev.name,
        "active": ev.active,
    }
