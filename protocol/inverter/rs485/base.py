"""What the inverter-facing RS485 responders read and return: a neutral, frozen view of the bank.

The Pylontech RS485 responder (`protocol.inverter.rs485.pylon`) and the BYD Modbus responder
(`protocol.inverter.rs485.byd_modbus`) answer an inverter's polls from a `BankView`: per-module values
(one physical pack = one emulated module), the system values, the charge/discharge decision of the
gateway's policy and the identity strings. The gateway builds the view from its model and policy
(`gateway.north.rs485.service`); nothing in here knows about the gateway.

Units are SI with the unit in the field name (V, A, °C, Ah, %); each protocol encoder converts to
its wire units. Alarm and protection states travel as neutral flag meanings (`protocol.bms.base.Meaning`
values, by level); the responders translate them through `protocol.inverter.flags.FlagOutput` tables.

This module must never import anything with I/O, asyncio or the gateway.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.inverter.flags import FlagOutputs


@dataclass(frozen=True, slots=True)
class Limits:
    """The charge/discharge decision as the inverter must see it (currents are magnitudes)."""

    charge_voltage_v: float
    discharge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float
    charge_enabled: bool
    discharge_enabled: bool
    force_charge_1: bool = False
    force_charge_2: bool = False
    full_charge_request: bool = False
    stale: bool = False  # the decision rests on data that is too old: answer "blocked"

    @property
    def blocked(self) -> Limits:
        """The blocking answer: both directions disabled, currents zero, voltage limits kept.

        Voltage limits are kept (never zero): several inverters treat a charge voltage of 0 V as an
        over-voltage and react badly (see the reference, inverter protocols §6.6).
        """
        return Limits(
            charge_voltage_v=self.charge_voltage_v,
            discharge_voltage_v=self.discharge_voltage_v,
            charge_current_a=0.0,
            discharge_current_a=0.0,
            charge_enabled=False,
            discharge_enabled=False,
            stale=self.stale,
        )


@dataclass(frozen=True, slots=True)
class SystemParameters:
    """Static limits reported by "get system parameters" (Pylon 0x47); defaults suit 16S LFP."""

    cell_high_voltage_v: float = 3.65
    cell_low_voltage_v: float = 3.05  # alarm
    cell_under_voltage_v: float = 2.80  # protection
    charge_high_temperature_c: float = 50.0
    charge_low_temperature_c: float = 0.0
    charge_current_limit_a: float = 100.0
    module_high_voltage_v: float = 58.4
    module_low_voltage_v: float = 48.8
    module_under_voltage_v: float = 44.8
    discharge_high_temperature_c: float = 55.0
    discharge_low_temperature_c: float = -10.0
    discharge_current_limit_a: float = 100.0


@dataclass(frozen=True, slots=True)
class Identity:
    """What the emulated battery calls itself."""

    battery_name: str = "US5000"
    manufacturer: str = "PYLON"
    software_version: tuple[int, int] = (1, 0)  # major, minor (Pylon 0x51 / 0x60)
    byd_serial: str = "P030T020Z0000000001"


@dataclass(frozen=True, slots=True)
class ModuleView:
    """One pack, as one emulated battery module (position 1 = the master)."""

    position: int  # 1-based
    fresh: bool  # False: no data, or data older than the stale limit
    cell_voltages_v: tuple[float, ...] = ()
    board_temperature_c: float | None = None  # BMS board (or the closest sensor the pack has)
    cell_temperatures_c: tuple[float, ...] = ()
    mos_temperature_c: float | None = None
    voltage_v: float = 0.0
    current_a: float = 0.0  # positive = charging
    soc_pct: float = 0.0
    soh_pct: float | None = None
    remaining_capacity_ah: float | None = None
    full_capacity_ah: float | None = None
    cycles: int | None = None
    charge_mos_on: bool | None = None
    discharge_mos_on: bool | None = None
    heater_on: bool | None = None
    protections: frozenset[str] = frozenset()  # meanings at the protection level
    alarms: frozenset[str] = frozenset()  # meanings at the warning level
    serial: str = ""
    software_version: tuple[int, ...] = ()  # up to 5 numbers, most significant first

    @property
    def temperatures_c(self) -> tuple[float, ...]:
        """Board first, then the cell sensors, then the MOS sensor (the Pylon 0x42 order)."""
        temps: list[float] = []
        if self.board_temperature_c is not None:
            temps.append(self.board_temperature_c)
        temps.extend(self.cell_temperatures_c)
        if self.mos_temperature_c is not None:
            temps.append(self.mos_temperature_c)
        return tuple(temps)


@dataclass(frozen=True, slots=True)
class Extreme:
    value: float
    position: int  # module position (1-based)
    index: int  # cell or sensor index within the module (1-based)


@dataclass(frozen=True, slots=True)
class SystemValues:
    """The bank as one battery (computed from the fresh modules, see `SystemValues.of`)."""

    voltage_v: float
    current_a: float
    soc_pct: float
    soh_pct: float | None
    remaining_capacity_ah: float | None
    full_capacity_ah: float | None
    cycles_avg: int | None
    cycles_max: int | None
    soh_min_pct: float | None
    cell_max: Extreme | None
    cell_min: Extreme | None
    cell_temp_avg_c: float | None
    cell_temp_max: Extreme | None
    cell_temp_min: Extreme | None
    mos_temp_avg_c: float | None
    mos_temp_max: Extreme | None
    mos_temp_min: Extreme | None
    board_temp_avg_c: float | None
    board_temp_max: Extreme | None
    board_temp_min: Extreme | None

    @classmethod
    def of(cls, modules: Iterable[ModuleView]) -> SystemValues | None:
        """Aggregate the fresh modules (None when there is none).

        Voltage is the mean, current the sum, SOC/SOH weighted by full capacity (equal weights when
        a module reports none), capacities summed (None if any module lacks one).
        """
        mods = [m for m in modules if m.fresh and m.cell_voltages_v]
        if not mods:
            return None
        weights = [m.full_capacity_ah or 1.0 for m in mods]
        wsum = sum(weights)
        soc = sum(w * m.soc_pct for w, m in zip(weights, mods, strict=True)) / wsum
        sohs = [(w, m.soh_pct) for w, m in zip(weights, mods, strict=True) if m.soh_pct is not None]
        soh = sum(w * s for w, s in sohs) / sum(w for w, _ in sohs) if sohs else None

        def total(values: list[float | None]) -> float | None:
            return None if any(v is None for v in values) else sum(v for v in values if v is not None)

        cycles = [m.cycles for m in mods if m.cycles is not None]
        cells = [Extreme(v, m.position, i + 1) for m in mods for i, v in enumerate(m.cell_voltages_v)]
        ctemps = [Extreme(v, m.position, i + 1) for m in mods for i, v in enumerate(m.cell_temperatures_c)]
        mtemps = [
            Extreme(m.mos_temperature_c, m.position, 1) for m in mods if m.mos_temperature_c is not None
        ]
        btemps = [
            Extreme(m.board_temperature_c, m.position, 1) for m in mods if m.board_temperature_c is not None
        ]

        def avg(items: list[Extreme]) -> float | None:
            return sum(e.value for e in items) / len(items) if items else None

        def hi(items: list[Extreme]) -> Extreme | None:
            return max(items, key=lambda e: e.value) if items else None

        def lo(items: list[Extreme]) -> Extreme | None:
            return min(items, key=lambda e: e.value) if items else None

        return cls(
            voltage_v=sum(m.voltage_v for m in mods) / len(mods),
            current_a=sum(m.current_a for m in mods),
            soc_pct=soc,
            soh_pct=soh,
            remaining_capacity_ah=total([m.remaining_capacity_ah for m in mods]),
            full_capacity_ah=total([m.full_capacity_ah for m in mods]),
            cycles_avg=round(sum(cycles) / len(cycles)) if cycles else None,
            cycles_max=max(cycles) if cycles else None,
            soh_min_pct=min(s for _, s in sohs) if sohs else None,
            cell_max=hi(cells),
            cell_min=lo(cells),
            cell_temp_avg_c=avg(ctemps),
            cell_temp_max=hi(ctemps),
            cell_temp_min=lo(ctemps),
            mos_temp_avg_c=avg(mtemps),
            mos_temp_max=hi(mtemps),
            mos_temp_min=lo(mtemps),
            board_temp_avg_c=avg(btemps),
            board_temp_max=hi(btemps),
            board_temp_min=lo(btemps),
        )


@dataclass(frozen=True, slots=True)
class BankView:
    """Everything a responder may answer from, consistent at one instant."""

    modules: tuple[ModuleView, ...]
    limits: Limits
    alarms: frozenset[str] = frozenset()  # bank-level meanings at the warning level
    protections: frozenset[str] = frozenset()  # bank-level meanings at the protection level
    identity: Identity = field(default_factory=Identity)
    parameters: SystemParameters = field(default_factory=SystemParameters)
    energy_charged_wh: float | None = None  # lifetime totals when known (BYD 314-321)
    energy_discharged_wh: float | None = None
    # how the meanings become bits (mappings/flags/outputs.toml, handed over by the gateway)
    flag_outputs: FlagOutputs = field(kw_only=True)

    @property
    def system(self) -> SystemValues | None:
        return SystemValues.of(self.modules)

    @property
    def stale(self) -> bool:
        """True when the answer must be the blocking one (no fresh module or a stale decision)."""
        return self.limits.stale or not any(m.fresh for m in self.modules)

    @property
    def effective_limits(self) -> Limits:
        return self.limits.blocked if self.stale else self.limits

    def module(self, position: int) -> ModuleView | None:
        for m in self.modules:
            if m.position == position:
                return m
        return None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request taken from the line and what was done with it."""

    command: int | None  # protocol command (Pylon CID2, Modbus function code), None if unreadable
    response: bytes | None  # None: deliberately not answered (not for us, unreadable, a response)
    valid_poll: bool  # a well-formed request for us that was answered normally (presence supervision)
    outcome: str  # "ok", "ignored", or the error answered ("checksum", "lchksum", "address", ...)
    detail: str = ""


class Rs485Responder(abc.ABC):
    """A sans-I/O responder: bytes from the inverter in, exchanges (with response bytes) out."""

    name: str

    @abc.abstractmethod
    def feed(self, data: bytes) -> None:
        """Append bytes received from the line (bounded; overflow is dropped and counted)."""

    @abc.abstractmethod
    def process(self, view: BankView, now: float) -> list[Exchange]:
        """Answer every complete request buffered so far. `now` is a monotonic time in seconds."""

    @abc.abstractmethod
    def line_idle(self) -> None:
        """The line has been quiet for a while: drop an incomplete request still buffered."""

    @property
    @abc.abstractmethod
    def discarded_bytes(self) -> int:
        """Bytes dropped as garbage or overflow since creation."""
