"""What the inverter-facing RS485 responders read and return: a neutral, frozen view of the bank.

The Pylontech RS485 responder (`protocol.inverter.rs485.pylon`) and the BYD Modbus responder
(`protocol.inverter.rs485.byd_modbus`) answer an inverter's polls from a `BankView`: per-module values
(one physical pack = one emulated module), the bank's values (`protocol.inverter.bank.BankValues`,
the gateway's one bank view; extremes name their pack, the view gives its module position), the
charge/discharge decision of the gateway's policy and the identity strings. The gateway builds the
view from its model and policy (`gateway.north.rs485.service`); nothing in here knows about the gateway.

Units are SI with the unit in the field name (V, A, °C, Ah, %); each protocol encoder converts to
its wire units. Alarm and protection states travel as neutral flag meanings (`protocol.bms.base.Meaning`
values, by level); the responders translate them through `protocol.inverter.flags.FlagOutput` tables.

This module must never import anything with I/O, asyncio or the gateway.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol

from protocol.inverter.bank import BankValues, PackId, PackValue
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
        over-voltage and react badly (Victron and Deye keep CVL at the present voltage when they stop:
        dalathegreat/Battery-Emulator, mr-manuel/venus-os_dbus-serialbattery).
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
    pack: PackId | None = None  # the pack this module is (how the bank's extremes name it)
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
class BankView:
    """Everything a responder may answer from, consistent at one instant: per-module values, and
    the bank's values (the model's one bank view over the fresh modules' packs) for the answers
    about the whole battery."""

    modules: tuple[ModuleView, ...]
    limits: Limits
    bank: BankValues | None = None  # None: no bank values (answered like a bank without data)
    alarms: frozenset[str] = frozenset()  # bank-level meanings at the warning level
    protections: frozenset[str] = frozenset()  # bank-level meanings at the protection level
    identity: Identity = field(default_factory=Identity)
    parameters: SystemParameters = field(default_factory=SystemParameters)
    energy_charged_wh: float | None = None  # lifetime totals when known (BYD 314-321)
    energy_discharged_wh: float | None = None
    # how the meanings become bits (mappings/flags/outputs.toml, handed over by the gateway)
    flag_outputs: FlagOutputs = field(kw_only=True)

    @property
    def system(self) -> BankValues | None:
        """The bank as one battery, when it has fresh packs (None otherwise)."""
        return self.bank if self.bank is not None and self.bank.packs_online > 0 else None

    def position_of(self, value: PackValue | None) -> int | None:
        """The module position of the pack an extreme is in (None when unknown)."""
        if value is None:
            return None
        for m in self.modules:
            if m.pack == value.pack:
                return m.position
        return None

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


class ResponderSettings(Protocol):
    """The settings a responder is built from (the `[inverter_rs485]` section, read structurally)."""

    @property
    def pylon_group(self) -> int: ...
    @property
    def pylon_share_module_limits(self) -> bool: ...
    @property
    def pylon_inferred_stack_replies(self) -> bool: ...
    @property
    def pylon_inferred_system_basic(self) -> bool: ...
    @property
    def pylon_inferred_set_management(self) -> bool: ...
    @property
    def pylon_inferred_system_analog(self) -> bool: ...
    @property
    def byd_unit_id(self) -> int: ...
    @property
    def byd_heartbeat_timeout_s(self) -> float: ...


class Rs485Responder(abc.ABC):
    """A sans-I/O responder: bytes from the inverter in, exchanges (with response bytes) out."""

    name: str

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: ResponderSettings) -> Rs485Responder:
        """A responder configured by `settings` (the registry builds every protocol this way)."""

    def command_label(self, command: int) -> str:
        """How the counters name a request's command (Modbus: "fc3"; Pylon overrides: "0x42")."""
        return f"fc{command}"

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
