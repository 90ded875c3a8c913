"""The single source of truth: immutable per-pack snapshots, the bank aggregate and the event stream.

Every output adapter (Modbus, CAN, RS485 inverter, metrics, MQTT, HTTP, history) reads from here and
nothing else. Values are SI floats with the unit in the field name (volts, amperes, watts, °C, Ah,
percent, seconds); current is positive while charging. Derived values (sums, extremes, power,
remaining time, the bank aggregate) are computed once, in this module, never in an adapter.

This module must never perform I/O and never mutate a published snapshot.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from protocol.bms.base import FlagInfo, FlagKind

PackKey = tuple[str, int]
"""(bus name, pack address) identifies a pack everywhere in the gateway."""

# The resolution of every derived value, in decimals of its unit: the finest step of the values it
# is made from (cells 1 mV, pack voltage 10 mV, current 10 mA, capacity 10 mAh, SOC 0.01 %,
# temperature 0.1 °C; a mean keeps one decimal more). Derived values are rounded here, where they
# are made, so no output (JSON, CSV, metrics, Modbus) carries float noise such as
# 0.0009999999999998899 for a 1 mV difference.
DECIMALS: Mapping[str, int] = MappingProxyType(
    {"V": 3, "V_mean": 4, "A": 2, "W": 2, "Ah": 2, "%": 2, "°C": 1, "°C_mean": 2, "s": 0, "ratio": 4}
)


def q(value: float, unit: str) -> float:
    """`value` rounded to the resolution of `unit` (see DECIMALS)."""
    return round(value, DECIMALS[unit])


def q_opt(value: float | None, unit: str) -> float | None:
    return None if value is None else q(value, unit)


class Availability(enum.StrEnum):
    """Derived from the time of the last successful realtime read (see the poller)."""

    UNKNOWN = "unknown"  # configured, never answered yet
    ONLINE = "online"
    STALE = "stale"  # last good data older than the stale limit; values kept but not trusted
    OFFLINE = "offline"  # older than the offline limit; excluded from the bank


class TempRole(enum.StrEnum):
    CELL = "cell"
    MOS = "mos"
    AMBIENT = "ambient"
    BOARD = "board"


@dataclass(frozen=True, slots=True)
class Temperature:
    role: TempRole
    index: int  # 1-based within its role
    value_c: float

    @property
    def label(self) -> str:
        return f"{self.role.value}{self.index}"


@dataclass(frozen=True, slots=True)
class PackIdentity:
    version: str | None = None  # firmware/model string (Tianpower 0x33, PACE software version)
    barcode: str | None = None  # PCB barcode / hardware string
    serial: str | None = None  # pack SN code
    manufacturer: str | None = None
    model: str | None = None
    protocol: str | None = None  # BMS family name ("tianpower", "pace")


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Per-pack link quality counters, owned by the bus owner and copied into each snapshot."""

    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    checksum_errors: int = 0
    device_errors: int = 0
    last_success_at: float | None = None  # wall clock (time.time())
    last_poll_duration_s: float | None = None

    @property
    def success_ratio(self) -> float | None:
        return None if self.requests == 0 else q(self.responses / self.requests, "ratio")


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One successful realtime read of a pack, with every derived value computed at construction.

    Build it with `Telemetry.build(...)`; the derived fields are not meant to be passed by hand.
    """

    measured_at: float  # wall clock of the read
    cell_voltages_v: tuple[float, ...]
    temperatures: tuple[Temperature, ...]
    voltage_v: float
    current_a: float
    soc_pct: float
    soh_pct: float | None
    full_capacity_ah: float | None
    remaining_capacity_ah: float | None
    nominal_capacity_ah: float | None
    cycles: int | None
    charge_mos_on: bool | None
    discharge_mos_on: bool | None
    heater_on: bool | None
    fan_on: bool | None
    balancing_cells: tuple[int, ...]  # 1-based indexes of cells being balanced
    protections: frozenset[str]  # active protection flags, by the vendor tool's names
    alarms: frozenset[str]
    faults: frozenset[str]
    states: frozenset[str]  # other active status flags (charging, manual MOS, ...)
    flags: tuple[FlagInfo, ...]  # every active flag with its meaning (the four sets are its names)
    # derived
    power_w: float
    cell_sum_v: float
    cell_avg_v: float
    cell_max_v: float
    cell_min_v: float
    cell_diff_v: float
    cell_max_index: int  # 1-based
    cell_min_index: int
    temp_max_c: float | None
    temp_min_c: float | None
    remaining_charge_time_s: float | None  # None unless charging
    remaining_discharge_time_s: float | None  # None unless discharging

    @property
    def balancing(self) -> bool:
        return bool(self.balancing_cells)

    def temperature(self, role: TempRole) -> tuple[Temperature, ...]:
        return tuple(t for t in self.temperatures if t.role is role)

    @property
    def board_temperature(self) -> Temperature | None:
        """The BMS board's temperature: its board sensor, or the MOS sensor of a pack without one."""
        board = self.temperature(TempRole.BOARD) or self.temperature(TempRole.MOS)
        return board[0] if board else None

    @property
    def mos_temperature(self) -> Temperature | None:
        """The MOS sensor, when it is not already the board temperature (a pack with both)."""
        mos = self.temperature(TempRole.MOS)
        return mos[0] if mos and self.temperature(TempRole.BOARD) else None

    @classmethod
    def build(
        cls,
        *,
        measured_at: float,
        cell_voltages_v: Iterable[float],
        temperatures: Iterable[Temperature],
        voltage_v: float,
        current_a: float,
        soc_pct: float,
        soh_pct: float | None = None,
        full_capacity_ah: float | None = None,
        remaining_capacity_ah: float | None = None,
        nominal_capacity_ah: float | None = None,
        cycles: int | None = None,
        charge_mos_on: bool | None = None,
        discharge_mos_on: bool | None = None,
        heater_on: bool | None = None,
        fan_on: bool | None = None,
        balancing_cells: Iterable[int] = (),
        flags: Iterable[FlagInfo] = (),
    ) -> Telemetry:
        cells = tuple(float(v) for v in cell_voltages_v)
        if not cells:
            raise ValueError("a pack reading needs at least one cell voltage")
        temps = tuple(temperatures)
        vmax = max(cells)
        vmin = min(cells)
        total = sum(cells)
        tvals = [t.value_c for t in temps if t.role is TempRole.CELL] or [t.value_c for t in temps]
        active = tuple(dict.fromkeys(flags))
        by_kind: dict[FlagKind, frozenset[str]] = {
            kind: frozenset(f.name for f in active if f.kind is kind) for kind in FlagKind
        }
        remaining = remaining_capacity_ah
        charge_time: float | None = None
        discharge_time: float | None = None
        if remaining is not None and abs(current_a) > 1e-6:
            if current_a > 0 and full_capacity_ah is not None:
                charge_time = q(max(0.0, full_capacity_ah - remaining) / current_a * 3600.0, "s")
            elif current_a < 0:
                discharge_time = q(max(0.0, remaining) / -current_a * 3600.0, "s")
        return cls(
            measured_at=measured_at,
            cell_voltages_v=cells,
            temperatures=temps,
            voltage_v=voltage_v,
            current_a=current_a,
            soc_pct=soc_pct,
            soh_pct=soh_pct,
            full_capacity_ah=full_capacity_ah,
            remaining_capacity_ah=remaining,
            nominal_capacity_ah=nominal_capacity_ah,
            cycles=cycles,
            charge_mos_on=charge_mos_on,
            discharge_mos_on=discharge_mos_on,
            heater_on=heater_on,
            fan_on=fan_on,
            balancing_cells=tuple(sorted(set(balancing_cells))),
            protections=by_kind[FlagKind.PROTECTION],
            alarms=by_kind[FlagKind.ALARM],
            faults=by_kind[FlagKind.FAULT],
            states=by_kind[FlagKind.STATE],
            flags=active,
            power_w=q(voltage_v * current_a, "W"),
            cell_sum_v=q(total, "V"),
            cell_avg_v=q(total / len(cells), "V_mean"),
            cell_max_v=vmax,
            cell_min_v=vmin,
            cell_diff_v=q(vmax - vmin, "V"),
            cell_max_index=cells.index(vmax) + 1,
            cell_min_index=cells.index(vmin) + 1,
            temp_max_c=max(tvals) if tvals else None,
            temp_min_c=min(tvals) if tvals else None,
            remaining_charge_time_s=charge_time,
            remaining_discharge_time_s=discharge_time,
        )


@dataclass(frozen=True, slots=True)
class ParameterReading:
    """One parameter as last read from a pack, in the parameter table's display unit."""

    name: str  # as the vendor tool shows it, e.g. "CELL_OV_Start"
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class ParameterSet:
    read_at: float  # wall clock
    values: Mapping[str, ParameterReading]

    @classmethod
    def of(cls, read_at: float, readings: Iterable[ParameterReading]) -> ParameterSet:
        return cls(read_at=read_at, values=MappingProxyType({r.name: r for r in readings}))

    def get(self, name: str) -> float | None:
        r = self.values.get(name)
        return None if r is None else r.value


@dataclass(frozen=True, slots=True)
class ClockReading:
    pack_time: float  # the pack's clock as epoch seconds (pack clocks carry no zone: read as local)
    read_at: float  # gateway wall clock when read

    @property
    def drift_s(self) -> float:
        return self.pack_time - self.read_at


@dataclass(frozen=True, slots=True)
class PackSnapshot:
    bus: str
    address: int
    availability: Availability
    telemetry: Telemetry | None = None  # the last good realtime read (kept while stale)
    identity: PackIdentity = field(default_factory=PackIdentity)
    parameters: ParameterSet | None = None
    clock: ClockReading | None = None
    link: LinkStats = field(default_factory=LinkStats)
    name: str | None = None  # optional display name from the config
    paused: str | None = None  # why polling of this pack is paused (e.g. a firmware job), or None

    @property
    def key(self) -> PackKey:
        return (self.bus, self.address)

    @property
    def online(self) -> bool:
        return self.availability is Availability.ONLINE and self.telemetry is not None

    @property
    def label(self) -> str:
        return self.name or f"{self.bus}/{self.address}"


@dataclass(frozen=True, slots=True)
class CellRef:
    bus: str
    address: int
    index: int  # 1-based cell (or temperature sensor) index within the pack
    value: float

    @property
    def pack(self) -> PackKey:
        return (self.bus, self.address)


@dataclass(frozen=True, slots=True)
class BankSnapshot:
    """The aggregate over online packs: the one bank view every output reads.

    Rules: current and power are sums; voltage is the mean of pack voltages; SOC and SOH are
    weighted by each pack's full capacity (falling back to equal weights when a pack reports none);
    capacities are sums; extremes carry their pack and cell (ties: the first in (bus, address) and
    index order); a flag active in any online pack is active for the bank; stale and offline packs
    are excluded and counted. Cell temperatures are the cell sensors, or every sensor but the MOS
    ones when no online pack has a cell sensor; board and MOS temperatures follow
    `Telemetry.board_temperature` / `mos_temperature` (one value per pack).
    """

    computed_at: float
    packs_configured: int
    packs_online: int
    packs_stale: int
    packs_offline: int  # offline or never seen
    voltage_v: float | None = None
    current_a: float | None = None
    power_w: float | None = None
    soc_pct: float | None = None
    soh_pct: float | None = None
    full_capacity_ah: float | None = None
    remaining_capacity_ah: float | None = None
    nominal_capacity_ah: float | None = None
    cell_max: CellRef | None = None
    cell_min: CellRef | None = None
    temp_max: CellRef | None = None  # cell temperatures (see above)
    temp_min: CellRef | None = None
    cycles_max: int | None = None
    protections: frozenset[str] = frozenset()
    alarms: frozenset[str] = frozenset()
    faults: frozenset[str] = frozenset()
    flags: tuple[FlagInfo, ...] = ()  # the online packs' active flags with their meanings
    protecting_packs: tuple[PackKey, ...] = ()
    remaining_charge_time_s: float | None = None
    remaining_discharge_time_s: float | None = None
    cells_per_pack: int | None = None  # the fewest cells of an online pack (what bank limits count)
    soh_min_pct: float | None = None
    cycles_mean: int | None = None  # to a whole cycle
    temp_mean_c: float | None = None  # mean cell temperature
    mos_temp_mean_c: float | None = None
    mos_temp_max: CellRef | None = None
    mos_temp_min: CellRef | None = None
    board_temp_mean_c: float | None = None
    board_temp_max: CellRef | None = None
    board_temp_min: CellRef | None = None

    @property
    def cell_diff_v(self) -> float | None:
        if self.cell_max is None or self.cell_min is None:
            return None
        return q(self.cell_max.value - self.cell_min.value, "V")

    @property
    def has_data(self) -> bool:
        return self.packs_online > 0


def _mean_max_min(refs: list[CellRef]) -> tuple[float | None, CellRef | None, CellRef | None]:
    if not refs:
        return None, None, None
    mean = q(sum(r.value for r in refs) / len(refs), "°C_mean")
    return mean, max(refs, key=lambda r: r.value), min(refs, key=lambda r: r.value)


def aggregate(
    packs: Iterable[PackSnapshot], now: float | None = None, *, max_age_s: float | None = None
) -> BankSnapshot:
    """Compute the bank aggregate from pack snapshots (see `BankSnapshot` for the rules).

    `max_age_s` (the charge policy's stale limit) counts an online pack whose last reading is older
    as stale too.
    """
    packs = list(packs)
    now = time.time() if now is None else now

    def usable(p: PackSnapshot) -> bool:
        t = p.telemetry
        return p.online and t is not None and (max_age_s is None or now - t.measured_at <= max_age_s)

    online = sorted(
        ((p, p.telemetry) for p in packs if usable(p) and p.telemetry is not None), key=lambda x: x[0].key
    )
    stale = sum(1 for p in packs if p.availability is Availability.STALE or (p.online and not usable(p)))
    offline = len(packs) - len(online) - stale
    if not online:
        return BankSnapshot(now, len(packs), 0, stale, offline)
    n = len(online)
    current = sum(t.current_a for _, t in online)
    voltage = sum(t.voltage_v for _, t in online) / n
    weights = [t.full_capacity_ah if t.full_capacity_ah else 1.0 for _, t in online]
    wsum = sum(weights)
    soc = sum(w * t.soc_pct for w, (_, t) in zip(weights, online, strict=True)) / wsum
    soh_items = [(w, t.soh_pct) for w, (_, t) in zip(weights, online, strict=True) if t.soh_pct is not None]
    soh = sum(w * s for w, s in soh_items) / sum(w for w, _ in soh_items) if soh_items else None

    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    def sensors(keep: Callable[[TempRole], bool]) -> list[CellRef]:
        """Every sensor of the online packs whose role `keep` accepts."""
        return one_each([(p, tr) for p, t in online for tr in t.temperatures if keep(tr.role)])

    def one_each(found: list[tuple[PackSnapshot, Temperature | None]]) -> list[CellRef]:
        return [CellRef(p.bus, p.address, tr.index, tr.value_c) for p, tr in found if tr is not None]

    full = total([t.full_capacity_ah for _, t in online])
    remaining = total([t.remaining_capacity_ah for _, t in online])
    nominal = total([t.nominal_capacity_ah for _, t in online])
    cmax = max(
        (CellRef(p.bus, p.address, t.cell_max_index, t.cell_max_v) for p, t in online), key=lambda c: c.value
    )
    cmin = min(
        (CellRef(p.bus, p.address, t.cell_min_index, t.cell_min_v) for p, t in online), key=lambda c: c.value
    )
    temp_mean, temp_max, temp_min = _mean_max_min(
        sensors(lambda r: r is TempRole.CELL) or sensors(lambda r: r is not TempRole.MOS)
    )
    mos_mean, mos_max, mos_min = _mean_max_min(one_each([(p, t.mos_temperature) for p, t in online]))
    board_mean, board_max, board_min = _mean_max_min(one_each([(p, t.board_temperature) for p, t in online]))
    cycles = [t.cycles for _, t in online if t.cycles is not None]
    charge_time = discharge_time = None
    if remaining is not None and abs(current) > 1e-6:
        if current > 0 and full is not None:
            charge_time = q(max(0.0, full - remaining) / current * 3600.0, "s")
        elif current < 0:
            discharge_time = q(max(0.0, remaining) / -current * 3600.0, "s")
    return BankSnapshot(
        computed_at=now,
        packs_configured=len(packs),
        packs_online=n,
        packs_stale=stale,
        packs_offline=offline,
        voltage_v=q(voltage, "V"),
        current_a=q(current, "A"),
        power_w=q(sum(t.power_w for _, t in online), "W"),
        soc_pct=q(soc, "%"),
        soh_pct=q_opt(soh, "%"),
        full_capacity_ah=q_opt(full, "Ah"),
        remaining_capacity_ah=q_opt(remaining, "Ah"),
        nominal_capacity_ah=q_opt(nominal, "Ah"),
        cell_max=cmax,
        cell_min=cmin,
        temp_max=temp_max,
        temp_min=temp_min,
        cycles_max=max(cycles) if cycles else None,
        protections=frozenset().union(*(t.protections for _, t in online)),
        alarms=frozenset().union(*(t.alarms for _, t in online)),
        faults=frozenset().union(*(t.faults for _, t in online)),
        flags=tuple(dict.fromkeys(f for _, t in online for f in t.flags)),
        protecting_packs=tuple(p.key for p, t in online if t.protections),
        remaining_charge_time_s=charge_time,
        remaining_discharge_time_s=discharge_time,
        cells_per_pack=min(len(t.cell_voltages_v) for _, t in online),
        soh_min_pct=min((s for _, s in soh_items), default=None),
        cycles_mean=round(sum(cycles) / len(cycles)) if cycles else None,
        temp_mean_c=temp_mean,
        mos_temp_mean_c=mos_mean,
        mos_temp_max=mos_max,
        mos_temp_min=mos_min,
        board_temp_mean_c=board_mean,
        board_temp_max=board_max,
        board_temp_min=board_min,
    )


class EventKind(enum.StrEnum):
    PROTECTION = "protection"
    ALARM = "alarm"
    FAULT = "fault"
    AVAILABILITY = "availability"


@dataclass(frozen=True, slots=True)
class PackEvent:
    """A transition: a flag became active or cleared, or a pack changed availability."""

    at: float  # wall clock
    bus: str
    address: int
    kind: EventKind
    name: str  # flag name, or the new availability value
    active: bool  # for AVAILABILITY: True when the pack became online


def diff_events(old: PackSnapshot | None, new: PackSnapshot, now: float) -> list[PackEvent]:
    """The transitions between two snapshots of the same pack."""
    events: list[PackEvent] = []
    changed = old is None or old.availability is not new.availability
    if changed and (old is not None or new.availability is not Availability.UNKNOWN):
        events.append(
            PackEvent(
                now,
                new.bus,
                new.address,
                EventKind.AVAILABILITY,
                new.availability.value,
                new.availability is Availability.ONLINE,
            )
        )
    ot, nt = (old.telemetry if old else None), new.telemetry
    if nt is None or (ot is not None and ot.measured_at == nt.measured_at):
        return events
    for kind, before, after in (
        (EventKind.PROTECTION, ot.protections if ot else frozenset(), nt.protections),
        (EventKind.ALARM, ot.alarms if ot else frozenset(), nt.alarms),
        (EventKind.FAULT, ot.faults if ot else frozenset(), nt.faults),
    ):
        for name in sorted(after - before):
            events.append(PackEvent(now, new.bus, new.address, kind, name, True))
        for name in sorted(before - after):
            events.append(PackEvent(now, new.bus, new.address, kind, name, False))
    return events


@dataclass(frozen=True, slots=True)
class ModelView:
    """What subscribers receive: every pack's latest snapshot and the bank, consistent together."""

    version: int
    packs: Mapping[PackKey, PackSnapshot]
    bank: BankSnapshot

    def pack(self, bus: str, address: int) -> PackSnapshot | None:
        return self.packs.get((bus, address))

    def ordered(self) -> list[PackSnapshot]:
        return [self.packs[k] for k in sorted(self.packs)]


class ModelStore:
    """Holds the latest `ModelView`; the poller publishes, adapters subscribe.

    Subscribers always get the newest view (intermediate versions may be skipped, never reordered);
    event subscribers get every event through a bounded queue and a drop counter.
    """

    def __init__(self, keys: Iterable[PackKey] = (), names: Mapping[PackKey, str] | None = None) -> None:
        names = names or {}
        packs = {k: PackSnapshot(k[0], k[1], Availability.UNKNOWN, name=names.get(k)) for k in keys}
        self._view = ModelView(0, MappingProxyType(packs), aggregate(packs.values()))
        self._waiters: set[asyncio.Event] = set()
        self._event_queues: set[asyncio.Queue[PackEvent]] = set()
        self.events_dropped = 0

    @property
    def view(self) -> ModelView:
        return self._view

    def publish(self, *snapshots: PackSnapshot, now: float | None = None) -> ModelView:
        """Replace the given packs' snapshots, recompute the bank, wake subscribers, emit events."""
        now = time.time() if now is None else now
        packs = dict(self._view.packs)
        events: list[PackEvent] = []
        for snap in snapshots:
            events.extend(diff_events(packs.get(snap.key), snap, now))
            packs[snap.key] = snap
        view = ModelView(self._view.version + 1, MappingProxyType(packs), aggregate(packs.values(), now))
        self._view = view
        for waiter in self._waiters:
            waiter.set()
        for ev in events:
            for q in self._event_queues:
                try:
                    q.put_nowait(ev)
                except asyncio.QueueFull:
                    self.events_dropped += 1
        return view

    def update(self, key: PackKey, **changes: object) -> ModelView:
        """Publish a copy of one pack's snapshot with some fields changed."""
        current = self._view.packs.get(key) or PackSnapshot(key[0], key[1], Availability.UNKNOWN)
        return self.publish(replace(current, **changes))  # type: ignore[arg-type]

    async def subscribe(self) -> AsyncIterator[ModelView]:
        """Yield the current view, then every newer view as it is published."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            last = self._view.version
            yield self._view
            while True:
                await waiter.wait()
                waiter.clear()
                if self._view.version != last:
                    last = self._view.version
                    yield self._view
        finally:
            self._waiters.discard(waiter)

    async def events(self, maxsize: int = 1000) -> AsyncIterator[PackEvent]:
        """Yield every pack event published from now on (bounded; overflow is counted)."""
        q: asyncio.Queue[PackEvent] = asyncio.Queue(maxsize)
        self._event_queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._event_queues.discard(q)
