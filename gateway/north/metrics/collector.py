"""Prometheus exposition: a custom collector that renders the latest model view at scrape time.

Every metric family the gateway exports is declared once in `FAMILIES` (name, type, labels, help);
the collector, `docs/metrics.md` and the dashboard tests all work from that table. Pack data uses
the `bms_` namespace, gateway health `bmsgw_` (ecosystem conventions: base units in the name,
ratios for percentages, `_total` only on counters, identity in an `_info` gauge).

A scrape only renders what is already in memory: the model view, the charge decision and the
adapters' counters. It never talks to a pack, never waits and never sets client-side timestamps.
The only state kept here is what cannot be rendered from one view: the flag names seen so far (so
a cleared alarm reads 0 instead of vanishing), updated by `MetricsService` from the model's
subscription, not in the scrape path. The poll-duration histogram is the bus owner's own
(`gateway.south.bus.BusCounters.poll_duration_s`), read at scrape time.

This module must never import a transport or block the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway import __version__
from gateway.app.supervisor import ReadyCallback
from gateway.core.model import Availability, ModelStore, ModelView, PackSnapshot
from protocol.bms.base import FlagInfo
from protocol.inverter.limits import ChargeLimits

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.app.context import AppContext
    from gateway.app.supervisor import Service

Kind = Literal["gauge", "counter", "histogram"]
Scope = Literal["pack", "bank", "limits", "gateway", "bus", "modbus", "can", "rs485", "mqtt"]


@dataclass(frozen=True, slots=True)
class Family:
    """One exported metric family. `name` is what PromQL queries use (counters end in `_total`)."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    scope: Scope
    help: str


PL = ("bus", "pack")  # every per-pack series carries the bus name and the pack address


def _meanings(flags: Iterable[FlagInfo]) -> set[tuple[str, str]]:
    """(meaning, level) of the active flags that are problems (states have no meaning label)."""
    return {(f.meaning.value, f.level) for f in flags if f.level != "state"}


# fmt: off
FAMILIES: tuple[Family, ...] = (
    # --- per pack: identity and measurements (exported while the pack is online or stale) ---
    Family("bms_pack_info", "gauge", (*PL, "name", "serial", "model", "firmware", "manufacturer",
           "barcode", "protocol"), "pack", "Pack identity strings (value always 1)"),
    Family("bms_pack_voltage_volts", "gauge", PL, "pack", "Pack voltage"),
    Family("bms_pack_current_amperes", "gauge", PL, "pack", "Pack current, positive while charging"),
    Family("bms_pack_power_watts", "gauge", PL, "pack", "Pack power, positive while charging"),
    Family("bms_pack_state_of_charge_ratio", "gauge", PL, "pack", "State of charge (0-1)"),
    Family("bms_pack_state_of_health_ratio", "gauge", PL, "pack", "State of health (0-1)"),
    Family("bms_pack_full_capacity_ampere_hours", "gauge", PL, "pack", "Full-charge capacity"),
    Family("bms_pack_remaining_capacity_ampere_hours", "gauge", PL, "pack", "Remaining capacity"),
    Family("bms_pack_nominal_capacity_ampere_hours", "gauge", PL, "pack", "Nominal (design) capacity"),
    Family("bms_pack_cycles_total", "counter", PL, "pack", "Charge cycles counted by the BMS"),
    Family("bms_pack_cell_voltage_volts", "gauge", (*PL, "cell"), "pack", "Cell voltage"),
    Family("bms_pack_cell_voltage_max_volts", "gauge", PL, "pack", "Highest cell voltage"),
    Family("bms_pack_cell_voltage_min_volts", "gauge", PL, "pack", "Lowest cell voltage"),
    Family("bms_pack_cell_voltage_spread_volts", "gauge", PL, "pack", "Highest minus lowest cell voltage"),
    Family("bms_pack_cell_balancing", "gauge", (*PL, "cell"), "pack", "1 while the cell is being balanced"),
    Family("bms_pack_temperature_celsius", "gauge", (*PL, "sensor", "role"), "pack",
           "Temperature by sensor (role: cell, mos, ambient, board)"),
    Family("bms_pack_switch_on", "gauge", (*PL, "switch"), "pack",
           "1 when the switch is on (charge_mos, discharge_mos, heater, fan)"),
    Family("bms_pack_protection", "gauge", (*PL, "name"), "pack", "1 while the protection is active"),
    Family("bms_pack_alarm", "gauge", (*PL, "name"), "pack", "1 while the alarm is active"),
    Family("bms_pack_fault", "gauge", (*PL, "name"), "pack", "1 while the fault is active"),
    Family("bms_pack_status", "gauge", (*PL, "name"), "pack", "1 while the status flag is set"),
    Family("bms_pack_flag_meaning", "gauge", (*PL, "meaning", "level"), "pack",
           "1 while a flag with this neutral meaning is active (level: protection = it blocks, warning)"),
    Family("bms_pack_measurement_timestamp_seconds", "gauge", PL, "pack",
           "Wall-clock time of the reading the values come from"),
    Family("bms_pack_clock_drift_seconds", "gauge", PL, "pack",
           "Pack clock minus gateway clock at the last clock read"),
    # --- the bank aggregate over online packs ---
    Family("bms_bank_voltage_volts", "gauge", (), "bank", "Mean voltage of the online packs"),
    Family("bms_bank_current_amperes", "gauge", (), "bank", "Sum of pack currents, positive while charging"),
    Family("bms_bank_power_watts", "gauge", (), "bank", "Sum of pack powers"),
    Family("bms_bank_state_of_charge_ratio", "gauge", (), "bank", "Capacity-weighted state of charge (0-1)"),
    Family("bms_bank_state_of_health_ratio", "gauge", (), "bank", "Capacity-weighted state of health (0-1)"),
    Family("bms_bank_full_capacity_ampere_hours", "gauge", (), "bank", "Sum of full-charge capacities"),
    Family("bms_bank_remaining_capacity_ampere_hours", "gauge", (), "bank", "Sum of remaining capacities"),
    Family("bms_bank_cell_voltage_max_volts", "gauge", (), "bank", "Highest cell voltage in the bank"),
    Family("bms_bank_cell_voltage_min_volts", "gauge", (), "bank", "Lowest cell voltage in the bank"),
    Family("bms_bank_cell_voltage_spread_volts", "gauge", (), "bank", "Bank cell voltage spread"),
    Family("bms_bank_temperature_max_celsius", "gauge", (), "bank", "Highest cell temperature in the bank"),
    Family("bms_bank_temperature_min_celsius", "gauge", (), "bank", "Lowest cell temperature in the bank"),
    Family("bms_bank_packs", "gauge", ("state",), "bank", "Packs by state (online, stale, offline)"),
    Family("bms_bank_protection", "gauge", ("name",), "bank", "1 while any online pack has the protection"),
    Family("bms_bank_alarm", "gauge", ("name",), "bank", "1 while any online pack has the alarm"),
    Family("bms_bank_fault", "gauge", ("name",), "bank", "1 while any online pack has the fault"),
    Family("bms_bank_flag_meaning", "gauge", ("meaning", "level"), "bank",
           "1 while any online pack has a flag with this neutral meaning at this level"),
    # --- the charge policy's decision (present once the policy has decided) ---
    Family("bms_limit_charge_voltage_volts", "gauge", (), "limits", "Charge voltage limit (CVL)"),
    Family("bms_limit_discharge_voltage_volts", "gauge", (), "limits", "Discharge voltage limit"),
    Family("bms_limit_charge_current_amperes", "gauge", (), "limits", "Charge current limit"),
    Family("bms_limit_discharge_current_amperes", "gauge", (), "limits", "Discharge current limit"),
    Family("bms_limit_charge_enabled", "gauge", (), "limits", "1 when charging is allowed"),
    Family("bms_limit_discharge_enabled", "gauge", (), "limits", "1 when discharging is allowed"),
    Family("bms_limit_request", "gauge", ("request",), "limits",
           "1 while the request is raised (force_charge_1, force_charge_2, full_charge)"),
    Family("bms_limit_stale", "gauge", (), "limits", "1 while the decision is based on stale data"),
    Family("bms_limit_limiting_factor", "gauge", ("limit", "factor"), "limits",
           "1 for the factor currently limiting each value, 0 for factors that limited it before"),
    # --- gateway health: packs ---
    Family("bmsgw_build_info", "gauge", ("version",), "gateway", "Gateway version (value always 1)"),
    Family("bmsgw_start_time_seconds", "gauge", (), "gateway", "Wall-clock time the gateway started"),
    Family("bmsgw_asyncio_tasks", "gauge", (), "gateway",
           "asyncio tasks alive in the gateway's event loop (a steady rise is a task leak)"),
    Family("bmsgw_service_up", "gauge", ("service",), "gateway", "1 while the supervised service is ready"),
    Family("bmsgw_model_events_dropped_total", "counter", (), "gateway",
           "Pack events dropped because a subscriber was too slow"),
    Family("bmsgw_pack_up", "gauge", PL, "gateway", "1 while the pack is online"),
    Family("bmsgw_pack_stale", "gauge", PL, "gateway", "1 while the pack's last good data is too old"),
    Family("bmsgw_pack_availability", "gauge", (*PL, "state"), "gateway",
           "1 for the pack's current availability (unknown, online, stale, offline)"),
    Family("bmsgw_pack_last_success_timestamp_seconds", "gauge", PL, "gateway",
           "Wall-clock time of the last successful read"),
    Family("bmsgw_pack_requests_total", "counter", PL, "gateway", "Requests sent to the pack"),
    Family("bmsgw_pack_responses_total", "counter", PL, "gateway", "Valid responses from the pack"),
    Family("bmsgw_pack_timeouts_total", "counter", PL, "gateway", "Requests to the pack without an answer"),
    Family("bmsgw_pack_checksum_errors_total", "counter", PL, "gateway", "Invalid frames from the pack"),
    Family("bmsgw_pack_device_errors_total", "counter", PL, "gateway", "Error return codes from the pack"),
    Family("bmsgw_poll_duration_seconds", "histogram", ("bus",), "gateway",
           "Duration of successful realtime polls"),
    # --- gateway health: RS485 buses (from the bus owners' counters) ---
    Family("bmsgw_bus_frames_sent_total", "counter", ("bus",), "bus", "Frames written to the bus"),
    Family("bmsgw_bus_frames_received_total", "counter", ("bus",), "bus", "Valid frames read from the bus"),
    Family("bmsgw_bus_checksum_errors_total", "counter", ("bus",), "bus", "Frames failing validation"),
    Family("bmsgw_bus_timeouts_total", "counter", ("bus",), "bus", "Requests that got no answer"),
    Family("bmsgw_bus_retries_total", "counter", ("bus",), "bus", "Requests sent again after a failure"),
    Family("bmsgw_bus_connected", "gauge", ("bus",), "bus", "1 while the bus transport is open"),
    # --- gateway health: Modbus/TCP server ---
    Family("bmsgw_modbus_requests_total", "counter", ("function",), "modbus", "Requests by function code"),
    Family("bmsgw_modbus_exceptions_total", "counter", ("code",), "modbus", "Exception responses by code"),
    Family("bmsgw_modbus_connections", "gauge", (), "modbus", "Open Modbus/TCP connections"),
    # --- gateway health: inverter CAN ---
    Family("bmsgw_inverter_can_frames_sent_total", "counter", ("protocol",), "can", "Frames sent"),
    Family("bmsgw_inverter_can_frames_received_total", "counter", ("protocol",), "can", "Frames received"),
    Family("bmsgw_inverter_can_errors_total", "counter", ("protocol",), "can", "CAN send or bus errors"),
    Family("bmsgw_inverter_can_keepalive_ok", "gauge", ("protocol",), "can",
           "1 while the inverter's keepalive is seen (or none is expected)"),
    # --- gateway health: inverter RS485 ---
    Family("bmsgw_inverter_rs485_requests_total", "counter", ("protocol",), "rs485", "Requests answered"),
    Family("bmsgw_inverter_rs485_errors_total", "counter", ("protocol",), "rs485", "Invalid requests"),
    Family("bmsgw_inverter_rs485_present", "gauge", ("protocol",), "rs485", "1 while the inverter polls"),
    # --- gateway health: MQTT ---
    Family("bmsgw_mqtt_connected", "gauge", (), "mqtt", "1 while connected to the MQTT broker"),
    Family("bmsgw_mqtt_messages_published_total", "counter", (), "mqtt", "MQTT messages published"),
    Family("bmsgw_mqtt_messages_dropped_total", "counter", (), "mqtt",
           "MQTT messages dropped because the outgoing buffer was full"),
    Family("bmsgw_mqtt_reconnects_total", "counter", (), "mqtt", "Connections to the broker after the first"),
    Family("bmsgw_mqtt_buffered_messages", "gauge", (), "mqtt", "Messages waiting in the outgoing buffer"),
)
# fmt: on

FAMILY_BY_NAME: Mapping[str, Family] = {f.name: f for f in FAMILIES}
POLL_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


# --- what the adapters provide (neutral views; `sources_from_context` adapts the real services) ---


@dataclass(frozen=True, slots=True)
class BusHealth:
    bus: str
    frames_sent: int
    frames_received: int
    checksum_errors: int
    timeouts: int
    retries: int
    connected: bool | None = None
    # the bus owner's own poll-duration histogram, when it keeps one: cumulative (upper bound, count)
    poll_buckets: tuple[tuple[float, int], ...] | None = None
    poll_count: int = 0
    poll_sum_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ModbusHealth:
    requests_by_function: Mapping[int, int]
    exceptions_by_code: Mapping[int, int]
    connections: int


@dataclass(frozen=True, slots=True)
class CanHealth:
    protocol: str
    frames_sent: int
    frames_received: int
    errors: int
    keepalive_ok: bool | None


@dataclass(frozen=True, slots=True)
class Rs485Health:
    protocol: str
    requests: int
    errors: int
    inverter_present: bool | None


@dataclass(frozen=True, slots=True)
class MqttHealth:
    connected: bool
    published: int
    dropped: int
    reconnects: int
    buffered: int


class DecisionLike(ChargeLimits, Protocol):
    """The fields of `gateway.core.policy.engine.ChargeDecision` the metrics render (structural, no import):
    the limits and flags of `ChargeLimits` and the limiting factor of each limit."""

    @property
    def limiting(self) -> Mapping[str, str]: ...


@dataclass(slots=True)
class MetricsSources:
    """Where the collector reads from. Every provider is optional: a disabled adapter exports nothing."""

    store: ModelStore
    started_at: float = field(default_factory=time.time)
    buses: Callable[[], Iterable[BusHealth]] | None = None
    modbus: Callable[[], ModbusHealth | None] | None = None
    can: Callable[[], CanHealth | None] | None = None
    rs485: Callable[[], Rs485Health | None] | None = None
    mqtt: Callable[[], MqttHealth | None] | None = None
    decision: Callable[[], DecisionLike | None] | None = None
    services: Callable[[], Mapping[str, bool]] | None = None
    tasks: Callable[[], int | None] | None = None  # asyncio tasks alive (None: not on the event loop)


def _fmt_le(b: float) -> str:
    return repr(float(b))


def _b(flag: bool | None) -> float | None:
    return None if flag is None else float(bool(flag))


def _ratio(pct: float | None) -> float | None:
    return None if pct is None else pct / 100.0


class GatewayCollector:
    """The custom collector: `collect()` yields every family of `FAMILIES` that has samples."""

    def __init__(self, sources: MetricsSources) -> None:
        self.sources = sources
        self._seen_flags: dict[tuple[str, str, int], set[str]] = {}  # (kind, bus, address) -> names
        self._seen_factors: dict[str, set[str]] = {}
        self._seen_meanings: dict[tuple[str, int], set[tuple[str, str]]] = {}  # pack -> (meaning, level)

    # --- fed by MetricsService from the model subscription (outside the scrape path) ---

    def observe(self, view: ModelView) -> None:
        for snap in view.packs.values():
            tel = snap.telemetry
            if tel is None:
                continue
            for kind, names in (
                ("protection", tel.protections),
                ("alarm", tel.alarms),
                ("fault", tel.faults),
            ):
                if names:
                    self._seen_flags.setdefault((kind, snap.bus, snap.address), set()).update(names)
            if tel.states:
                self._seen_flags.setdefault(("status", snap.bus, snap.address), set()).update(tel.states)
            if meanings := _meanings(tel.flags):
                self._seen_meanings.setdefault(snap.key, set()).update(meanings)

    # --- prometheus_client collector protocol ---

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: nothing is rendered at registration

    def collect(self) -> Iterator[Metric]:
        r = _Renderer()
        view = self.sources.store.view
        self.observe(view)  # idempotent; makes flag names seen by this scrape stable from now on
        for snap in view.ordered():
            self._render_pack(r, snap)
        self._render_bank(r, view)
        self._render_limits(r)
        self._render_gateway(r, view)
        yield from r.families()

    # --- rendering ---

    def _render_pack(self, r: _Renderer, snap: PackSnapshot) -> None:
        pl = (snap.bus, str(snap.address))
        ident = snap.identity
        r.add(
            "bms_pack_info",
            (
                *pl,
                snap.name or "",
                ident.serial or "",
                ident.model or "",
                ident.version or "",
                ident.manufacturer or "",
                ident.barcode or "",
                ident.protocol or "",
            ),
            1.0,
        )
        av = snap.availability
        r.add("bmsgw_pack_up", pl, float(snap.online))
        r.add("bmsgw_pack_stale", pl, float(av is Availability.STALE))
        for state in Availability:
            r.add("bmsgw_pack_availability", (*pl, state.value), float(av is state))
        link = snap.link
        last_ok = link.last_success_at
        if last_ok is None and snap.telemetry is not None:
            last_ok = snap.telemetry.measured_at
        r.add("bmsgw_pack_last_success_timestamp_seconds", pl, last_ok)
        r.add("bmsgw_pack_requests_total", pl, float(link.requests))
        r.add("bmsgw_pack_responses_total", pl, float(link.responses))
        r.add("bmsgw_pack_timeouts_total", pl, float(link.timeouts))
        r.add("bmsgw_pack_checksum_errors_total", pl, float(link.checksum_errors))
        r.add("bmsgw_pack_device_errors_total", pl, float(link.device_errors))
        if snap.clock is not None:
            r.add("bms_pack_clock_drift_seconds", pl, snap.clock.drift_s)
        tel = snap.telemetry
        if tel is None or av not in (Availability.ONLINE, Availability.STALE):
            return  # offline or never read: identity and health only, no values to trust
        r.add("bms_pack_measurement_timestamp_seconds", pl, tel.measured_at)
        r.add("bms_pack_voltage_volts", pl, tel.voltage_v)
        r.add("bms_pack_current_amperes", pl, tel.current_a)
        r.add("bms_pack_power_watts", pl, tel.power_w)
        r.add("bms_pack_state_of_charge_ratio", pl, _ratio(tel.soc_pct))
        r.add("bms_pack_state_of_health_ratio", pl, _ratio(tel.soh_pct))
        r.add("bms_pack_full_capacity_ampere_hours", pl, tel.full_capacity_ah)
        r.add("bms_pack_remaining_capacity_ampere_hours", pl, tel.remaining_capacity_ah)
        r.add("bms_pack_nominal_capacity_ampere_hours", pl, tel.nominal_capacity_ah)
        r.add("bms_pack_cycles_total", pl, None if tel.cycles is None else float(tel.cycles))
        balancing = set(tel.balancing_cells)
        for i, v in enumerate(tel.cell_voltages_v, start=1):
            r.add("bms_pack_cell_voltage_volts", (*pl, str(i)), v)
            r.add("bms_pack_cell_balancing", (*pl, str(i)), float(i in balancing))
        r.add("bms_pack_cell_voltage_max_volts", pl, tel.cell_max_v)
        r.add("bms_pack_cell_voltage_min_volts", pl, tel.cell_min_v)
        r.add("bms_pack_cell_voltage_spread_volts", pl, tel.cell_diff_v)
        for t in tel.temperatures:
            r.add("bms_pack_temperature_celsius", (*pl, t.label, t.role.value), t.value_c)
        for switch, on in (
            ("charge_mos", tel.charge_mos_on),
            ("discharge_mos", tel.discharge_mos_on),
            ("heater", tel.heater_on),
            ("fan", tel.fan_on),
        ):
            r.add("bms_pack_switch_on", (*pl, switch), _b(on))
        for kind, active in (
            ("protection", tel.protections),
            ("alarm", tel.alarms),
            ("fault", tel.faults),
            ("status", tel.states),
        ):
            names = self._seen_flags.get((kind, snap.bus, snap.address), set()) | active
            for name in sorted(names):
                r.add(f"bms_pack_{kind}", (*pl, name), float(name in active))
        now_active = _meanings(tel.flags)
        for meaning, level in sorted(self._seen_meanings.get(snap.key, set()) | now_active):
            r.add("bms_pack_flag_meaning", (*pl, meaning, level), float((meaning, level) in now_active))

    def _render_bank(self, r: _Renderer, view: ModelView) -> None:
        bank = view.bank
        r.add("bms_bank_packs", ("online",), float(bank.packs_online))
        r.add("bms_bank_packs", ("stale",), float(bank.packs_stale))
        r.add("bms_bank_packs", ("offline",), float(bank.packs_offline))
        r.add("bms_bank_voltage_volts", (), bank.voltage_v)
        r.add("bms_bank_current_amperes", (), bank.current_a)
        r.add("bms_bank_power_watts", (), bank.power_w)
        r.add("bms_bank_state_of_charge_ratio", (), _ratio(bank.soc_pct))
        r.add("bms_bank_state_of_health_ratio", (), _ratio(bank.soh_pct))
        r.add("bms_bank_full_capacity_ampere_hours", (), bank.full_capacity_ah)
        r.add("bms_bank_remaining_capacity_ampere_hours", (), bank.remaining_capacity_ah)
        r.add("bms_bank_cell_voltage_max_volts", (), bank.cell_max.value if bank.cell_max else None)
        r.add("bms_bank_cell_voltage_min_volts", (), bank.cell_min.value if bank.cell_min else None)
        r.add("bms_bank_cell_voltage_spread_volts", (), bank.cell_diff_v)
        r.add("bms_bank_temperature_max_celsius", (), bank.temp_max.value if bank.temp_max else None)
        r.add("bms_bank_temperature_min_celsius", (), bank.temp_min.value if bank.temp_min else None)
        for kind, active in (
            ("protection", bank.protections),
            ("alarm", bank.alarms),
            ("fault", bank.faults),
        ):
            names: set[str] = set(active)
            for (k, _bus, _addr), seen in self._seen_flags.items():
                if k == kind:
                    names |= seen
            for name in sorted(names):
                r.add(f"bms_bank_{kind}", (name,), float(name in active))
        bank_active = _meanings(bank.flags)
        seen_meanings: set[tuple[str, str]] = set()
        for pack_seen in self._seen_meanings.values():
            seen_meanings |= pack_seen
        for meaning, level in sorted(seen_meanings | bank_active):
            r.add("bms_bank_flag_meaning", (meaning, level), float((meaning, level) in bank_active))

    def _render_limits(self, r: _Renderer) -> None:
        provider = self.sources.decision
        decision = provider() if provider is not None else None
        if decision is None or getattr(decision, "has_data", True) is False:
            return  # no decision yet, or one made before any pack answered (nothing is sent then)
        r.add("bms_limit_charge_voltage_volts", (), decision.charge_voltage_v)
        r.add("bms_limit_discharge_voltage_volts", (), decision.discharge_voltage_v)
        r.add("bms_limit_charge_current_amperes", (), decision.charge_current_a)
        r.add("bms_limit_discharge_current_amperes", (), decision.discharge_current_a)
        r.add("bms_limit_charge_enabled", (), float(decision.charge_enabled))
        r.add("bms_limit_discharge_enabled", (), float(decision.discharge_enabled))
        r.add("bms_limit_request", ("force_charge_1",), float(decision.force_charge_1))
        r.add("bms_limit_request", ("force_charge_2",), float(decision.force_charge_2))
        r.add("bms_limit_request", ("full_charge",), float(decision.full_charge_request))
        r.add("bms_limit_stale", (), float(decision.stale))
        for limit, factor in decision.limiting.items():
            self._seen_factors.setdefault(limit, set()).add(factor)
        for limit in sorted(self._seen_factors):
            current = decision.limiting.get(limit)
            for factor in sorted(self._seen_factors[limit]):
                r.add("bms_limit_limiting_factor", (limit, factor), float(factor == current))

    def _render_gateway(self, r: _Renderer, view: ModelView) -> None:
        src = self.sources
        r.add("bmsgw_build_info", (__version__,), 1.0)
        r.add("bmsgw_start_time_seconds", (), src.started_at)
        tasks = src.tasks() if src.tasks is not None else None
        if tasks is not None:
            r.add("bmsgw_asyncio_tasks", (), float(tasks))
        r.add("bmsgw_model_events_dropped_total", (), float(src.store.events_dropped))
        if src.services is not None:
            for name, up in sorted(src.services().items()):
                r.add("bmsgw_service_up", (name,), float(up))
        buses = list(src.buses()) if src.buses is not None else _buses_from_links(view)
        for b in sorted(buses, key=lambda b: b.bus):
            if b.poll_buckets is not None:  # the bus owner's histogram (the one histogram of polls)
                cumulative = [(_fmt_le(le), float(n)) for le, n in b.poll_buckets]
                r.add_histogram(
                    "bmsgw_poll_duration_seconds",
                    (b.bus,),
                    [*cumulative, ("+Inf", float(b.poll_count))],
                    b.poll_sum_s,
                )
        for b in buses:
            lb = (b.bus,)
            r.add("bmsgw_bus_frames_sent_total", lb, float(b.frames_sent))
            r.add("bmsgw_bus_frames_received_total", lb, float(b.frames_received))
            r.add("bmsgw_bus_checksum_errors_total", lb, float(b.checksum_errors))
            r.add("bmsgw_bus_timeouts_total", lb, float(b.timeouts))
            r.add("bmsgw_bus_retries_total", lb, float(b.retries))
            r.add("bmsgw_bus_connected", lb, _b(b.connected))
        modbus = src.modbus() if src.modbus is not None else None
        if modbus is not None:
            for fc, n in sorted(modbus.requests_by_function.items()):
                r.add("bmsgw_modbus_requests_total", (str(fc),), float(n))
            for code, n in sorted(modbus.exceptions_by_code.items()):
                r.add("bmsgw_modbus_exceptions_total", (str(code),), float(n))
            r.add("bmsgw_modbus_connections", (), float(modbus.connections))
        can = src.can() if src.can is not None else None
        if can is not None:
            lp = (can.protocol,)
            r.add("bmsgw_inverter_can_frames_sent_total", lp, float(can.frames_sent))
            r.add("bmsgw_inverter_can_frames_received_total", lp, float(can.frames_received))
            r.add("bmsgw_inverter_can_errors_total", lp, float(can.errors))
            r.add("bmsgw_inverter_can_keepalive_ok", lp, _b(can.keepalive_ok))
        rs485 = src.rs485() if src.rs485 is not None else None
        if rs485 is not None:
            lp = (rs485.protocol,)
            r.add("bmsgw_inverter_rs485_requests_total", lp, float(rs485.requests))
            r.add("bmsgw_inverter_rs485_errors_total", lp, float(rs485.errors))
            r.add("bmsgw_inverter_rs485_present", lp, _b(rs485.inverter_present))
        mqtt = src.mqtt() if src.mqtt is not None else None
        if mqtt is not None:
            r.add("bmsgw_mqtt_connected", (), float(mqtt.connected))
            r.add("bmsgw_mqtt_messages_published_total", (), float(mqtt.published))
            r.add("bmsgw_mqtt_messages_dropped_total", (), float(mqtt.dropped))
            r.add("bmsgw_mqtt_reconnects_total", (), float(mqtt.reconnects))
            r.add("bmsgw_mqtt_buffered_messages", (), float(mqtt.buffered))


def _buses_from_links(view: ModelView) -> list[BusHealth]:
    """Per-bus totals summed from the packs' link counters (when no bus owner exposes its own)."""
    sums: dict[str, list[int]] = {}
    for snap in view.packs.values():
        s = sums.setdefault(snap.bus, [0, 0, 0, 0])
        s[0] += snap.link.requests
        s[1] += snap.link.responses
        s[2] += snap.link.checksum_errors
        s[3] += snap.link.timeouts
    return [BusHealth(bus, s[0], s[1], s[2], s[3], 0) for bus, s in sorted(sums.items())]


class _Renderer:
    """Collects samples into metric families in the order of `FAMILIES`."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _family(self, name: str) -> Metric:
        fam = self._families.get(name)
        if fam is None:
            spec = FAMILY_BY_NAME[name]
            labels = list(spec.labels)
            if spec.kind == "counter":
                fam = CounterMetricFamily(name, spec.help, labels=labels)
            elif spec.kind == "histogram":
                fam = HistogramMetricFamily(name, spec.help, labels=labels)
            else:
                fam = GaugeMetricFamily(name, spec.help, labels=labels)
            self._families[name] = fam
        return fam

    def add(self, name: str, labels: tuple[str, ...], value: float | None) -> None:
        if value is None:
            return
        fam = self._family(name)
        assert isinstance(fam, GaugeMetricFamily | CounterMetricFamily)
        fam.add_metric(list(labels), value)

    def add_histogram(
        self, name: str, labels: tuple[str, ...], buckets: list[tuple[str, float]], sum_value: float
    ) -> None:
        fam = self._family(name)
        assert isinstance(fam, HistogramMetricFamily)
        fam.add_metric(list(labels), buckets, sum_value)

    def families(self) -> Iterator[Metric]:
        for spec in FAMILIES:
            fam = self._families.get(spec.name)
            if fam is not None:
                yield fam


def make_registry(collector: GatewayCollector) -> CollectorRegistry:
    """A registry of its own (never the process-global one) holding only the gateway collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """`GET /metrics` in the Prometheus text format (async: rendered on the event loop thread)."""
    from fastapi import APIRouter, Response

    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(content=render(registry), media_type=CONTENT_TYPE_LATEST)

    return router


class MetricsService:
    """Keeps the collector's history (poll histogram, seen flag names) fed from the model."""

    name = "metrics"

    def __init__(self, collector: GatewayCollector) -> None:
        self.collector = collector

    async def run(self, ready: ReadyCallback) -> None:
        ready_called = False
        async for view in self.collector.sources.store.subscribe():
            self.collector.observe(view)
            if not ready_called:
                ready()
                ready_called = True


# --- wiring into the application ---


def sources_from_context(ctx: AppContext) -> MetricsSources:
    """Providers reading the live services through the typed fields of `ctx` (read at scrape time,
    so a disabled adapter, whose field stays None, simply exports nothing)."""

    def buses() -> list[BusHealth]:
        out = []
        for name, owner in sorted(ctx.buses.items()):
            c = owner.counters
            hist = c.poll_duration_s
            buckets = tuple(zip(hist.buckets, hist.counts, strict=True))
            out.append(
                BusHealth(
                    name,
                    c.frames_sent,
                    c.frames_received,
                    c.checksum_errors,
                    c.timeouts,
                    c.retries,
                    c.connected,
                    buckets,
                    hist.count,
                    hist.sum,
                )
            )
        return out

    def modbus() -> ModbusHealth | None:
        stats = ctx.modbus_stats
        if stats is None:
            return None
        return ModbusHealth(
            dict(stats.requests_by_function), dict(stats.exceptions_by_code), stats.connections
        )

    def can() -> CanHealth | None:
        if ctx.can is None:
            return None
        stats = ctx.can.stats
        keepalive = str(stats.keepalive) in ("ok", "not_expected")  # waiting or lost: 0
        return CanHealth(
            stats.protocol,
            stats.frames_sent,
            stats.frames_received,
            stats.send_errors + stats.error_frames,
            keepalive,
        )

    def rs485() -> Rs485Health | None:
        if ctx.rs485 is None:
            return None
        st = ctx.rs485.stats()
        return Rs485Health(st.protocol, st.requests, st.errors, bool(st.inverter_present))  # never polled: 0

    def mqtt() -> MqttHealth | None:
        if ctx.mqtt is None:
            return None
        h = ctx.mqtt.health()
        return MqttHealth(h.connected, h.published, h.dropped, h.reconnects, h.buffered)

    def decision() -> DecisionLike | None:
        return ctx.decisions.latest

    def services() -> dict[str, bool]:
        return {name: st.state.value == "ready" for name, st in ctx.services.items()}

    def tasks() -> int | None:
        try:  # a scrape runs on the gateway's event loop (the /metrics route, remote write)
            return len(asyncio.all_tasks())
        except RuntimeError:
            return None

    return MetricsSources(
        store=ctx.store,
        started_at=ctx.started_at,
        buses=buses,
        modbus=modbus,
        can=can,
        rs485=rs485,
        mqtt=mqtt,
        decision=decision,
        services=services,
        tasks=tasks,
    )


def install(ctx: AppContext) -> list[Service]:
    """Mount `GET /metrics` on the HTTP service and return the service feeding the collector."""
    collector = GatewayCollector(sources_from_context(ctx))
    ctx.http_routers.append(metrics_router(make_registry(collector)))
    return [MetricsService(collector)]
