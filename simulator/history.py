"""The history store of a simulated pack: timing records at the storage interval plus event records.

What it is for: what the vendor tool's STORAGE page reads (manual §4.6): records newest first, a
record count, a read cursor that streams one record per read and then signals end-of-data, record
deletion, and the storage interval. Records are family-neutral; each family's responder encodes
them (event keys are mapped to the family's event codes there).

Event keys: "timing", "start_system", "exit_system", "start_charging", "start_discharging",
"protection:<condition>", "alarm:<condition>", and "released:" + any of the last two.

It must never perform I/O (persistence goes through `to_json` / `from_json`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_RECORDS = 20000  # oldest records are dropped beyond this (a real pack's flash is finite too)


@dataclass(frozen=True, slots=True)
class SimRecord:
    event: str
    at_epoch_s: int  # the pack's clock, whole seconds
    cell_mv: tuple[int, ...]
    temps_c: tuple[int, ...]  # T1..T4, MOS, ambient (whole °C)
    current_a: float  # 0.01 A resolution, + = charging
    voltage_mv: int
    soc_pct: int
    remaining_ah: float = 0.0  # 0.01 Ah resolution (PACE records carry capacities)
    full_ah: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "at": self.at_epoch_s,
            "cells": list(self.cell_mv),
            "temps": list(self.temps_c),
            "current": self.current_a,
            "voltage_mv": self.voltage_mv,
            "soc": self.soc_pct,
            "remaining_ah": self.remaining_ah,
            "full_ah": self.full_ah,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SimRecord:
        return cls(
            event=str(d["event"]),
            at_epoch_s=int(d["at"]),
            cell_mv=tuple(int(v) for v in d["cells"]),
            temps_c=tuple(int(v) for v in d["temps"]),
            current_a=float(d["current"]),
            voltage_mv=int(d["voltage_mv"]),
            soc_pct=int(d["soc"]),
            remaining_ah=float(d.get("remaining_ah", 0.0)),
            full_ah=float(d.get("full_ah", 0.0)),
        )


@dataclass(slots=True)
class HistoryStore:
    interval_s: int = 3600  # storage interval (the tool shows minutes; default 60 min)
    records: list[SimRecord] = field(default_factory=list)  # oldest first
    cursor: int = 0  # records already streamed in the current read sequence (newest first)
    sequence_end: int | None = None  # len(records) when the sequence started: later records wait
    last_timing_s: float = 0.0  # simulation time of the last timing record (start counts as one)
    start_epoch_s: int | None = None  # the record start/end time window (written by the tool)
    end_epoch_s: int | None = None

    def add(self, record: SimRecord) -> None:
        self.records.append(record)
        if len(self.records) > MAX_RECORDS:
            del self.records[: len(self.records) - MAX_RECORDS]

    def extend(self, records: Iterable[SimRecord]) -> None:
        for r in records:
            self.add(r)

    def due(self, now_s: float) -> bool:
        """True when a timing record is due at simulation time `now_s` (and marks it taken)."""
        if now_s - self.last_timing_s >= self.interval_s:
            self.last_timing_s += self.interval_s * ((now_s - self.last_timing_s) // self.interval_s)
            return True
        return False

    @property
    def count(self) -> int:
        return len(self.records)

    def rewind(self) -> None:
        """Start a read sequence at the newest record; records stored meanwhile do not shift it."""
        self.cursor = 0
        self.sequence_end = len(self.records)

    def newest_first(self, index: int) -> SimRecord | None:
        """Record `index` counted from the newest (0 = newest), None past the end."""
        if not 0 <= index < len(self.records):
            return None
        return self.records[len(self.records) - 1 - index]

    def read_next(self) -> SimRecord | None:
        """The next record of the read sequence (newest first), None at end-of-data."""
        end = len(self.records) if self.sequence_end is None else min(self.sequence_end, len(self.records))
        index = end - 1 - self.cursor
        if index < 0:
            return None
        self.cursor += 1
        return self.records[index]

    def clear(self) -> None:
        self.records.clear()
        self.cursor = 0
        self.sequence_end = None

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "start": self.start_epoch_s,
            "end": self.end_epoch_s,
            "records": [r.to_json() for r in self.records],
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.interval_s = int(d.get("interval_s", self.interval_s))
        self.start_epoch_s = d.get("start")
        self.end_epoch_s = d.get("end")
        self.records = [SimRecord.from_json(r) for r in d.get("records", [])]
        self.cursor = 0
        self.sequence_end = None
