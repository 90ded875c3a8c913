"""What every inverter CAN protocol is: a neutral frame type, the battery state it encodes, and
the `InverterProtocol` base (cadence, keepalive, name string, stop encoding, reactions).

Sans-I/O: no python-can, no asyncio, no clock. The CAN service calls `due(state, now)` for the
cyclic frames, `on_frame(frame, state, now)` for every received frame, and sends what they return.
Frame layouts come from the protocol's DBC file in `mappings/can` (see `protocol.inverter.can.dbc`);
a module only decides *which values* go into which signal (including its stop encoding).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import cantools.database

from protocol.inverter import bank
from protocol.inverter.bank import BankValues
from protocol.inverter.can import dbc
from protocol.inverter.can.frame import CanFrame
from protocol.inverter.flags import PROTECTION, WARNING, FlagOutput, FlagOutputs, require
from protocol.inverter.limits import ChargeLimits

OptionValue = str | int | float | bool


class BatteryState(ChargeLimits, Protocol):
    """The charge decision as the encoders read it (satisfied by `gateway.core.policy.engine.ChargeDecision`):
    the limits and flags of `ChargeLimits`, the active meanings per level, the packs blocking each
    direction, and the bank the decision was computed from (`protocol.inverter.bank`: every bank
    value a message carries is read there, with the defaults of its helpers)."""

    @property
    def alarms(self) -> frozenset[str]: ...
    @property
    def warnings(self) -> frozenset[str]: ...
    @property
    def packs_blocking_charge(self) -> int: ...
    @property
    def packs_blocking_discharge(self) -> int: ...
    @property
    def bank(self) -> BankValues: ...


@dataclass(frozen=True, slots=True)
class Reaction:
    """What a received frame means: frames to send in answer, keepalive seen, inverter command."""

    frames: tuple[CanFrame, ...] = ()
    keepalive: bool = False
    command: str | None = None  # e.g. "shutdown" (LuxPower 0x300), "shutdown_cleared"


@dataclass(frozen=True, slots=True)
class Group:
    """Messages sent together every `period_s`."""

    period_s: float
    messages: tuple[str, ...]


def ascii_signals(prefix: str, text: str, count: int = 8) -> dict[str, float]:
    """`Name0..Name7`-style byte signals of a space-padded ASCII string."""
    raw = text.encode("ascii", "replace")[:count].ljust(count, b" ")
    return {f"{prefix}{i}": float(b) for i, b in enumerate(raw)}


class InverterProtocol(abc.ABC):
    """One inverter protocol. Subclasses set the class attributes and implement `values()`."""

    name: ClassVar[str]
    title: ClassVar[str]
    dbc_file: ClassVar[str]
    groups: ClassVar[tuple[Group, ...]] = ()  # cyclic frames; empty = only answers to the inverter
    answer_messages: ClassVar[tuple[str, ...]] = ()  # messages sent in answer to inverter frames
    keepalive_ids: ClassVar[frozenset[int]] = frozenset({0x305})
    keepalive_extended: ClassVar[bool | None] = None  # None: 11- or 29-bit accepted
    silent_until_inverter: ClassVar[bool] = False
    min_repeat_s: ClassVar[float] = 0.0  # no id may repeat faster than this (SMA: 0.2 s)
    option_defaults: ClassVar[Mapping[str, OptionValue]] = {}
    # the flag outputs (mappings/flags/outputs.toml) this protocol's alarm signals come from
    flag_outputs_used: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, options: Mapping[str, OptionValue] | None = None, *, flag_outputs: FlagOutputs
    ) -> None:
        self.flag_outputs: Mapping[str, FlagOutput] = {
            name: require(flag_outputs, name) for name in self.flag_outputs_used
        }
        opts = dict(self.option_defaults)
        for key, value in (options or {}).items():
            if key not in self.option_defaults:
                known = ", ".join(sorted(self.option_defaults)) or "none"
                raise ValueError(f"protocol {self.name!r} has no option {key!r} (options: {known})")
            default = self.option_defaults[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                isinstance(default, str) != isinstance(value, str)
            ):
                raise ValueError(f"option {key!r} of {self.name!r} must be like {default!r}, got {value!r}")
            opts[key] = value
        self.options: dict[str, OptionValue] = opts
        self.db: cantools.database.can.Database = dbc.load(self.dbc_file)
        self._next_at: list[float | None] = [None] * len(self.groups)
        self.inverter_seen = False
        self.validate_options()

    # -- hooks -------------------------------------------------------------------------------------
    def validate_options(self) -> None:
        """Raise ValueError for a bad option value (called at construction)."""
        return None

    @abc.abstractmethod
    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        """Physical signal values of one message of the DBC for this state (stop encoding included)."""

    def react(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        """Protocol-specific answer to a received frame (default: keepalive detection only)."""
        return Reaction(keepalive=self.is_keepalive(frame))

    def notes(self) -> list[str]:
        """Configuration warnings worth logging (e.g. Victron's name-based quirks)."""
        return []

    # -- generic machinery -------------------------------------------------------------------------
    def option(self, key: str) -> OptionValue:
        return self.options[key]

    def is_keepalive(self, frame: CanFrame) -> bool:
        if self.keepalive_extended is not None and frame.is_extended != self.keepalive_extended:
            return False
        return frame.arbitration_id in self.keepalive_ids

    def encode(self, message: str, state: BatteryState, now: float) -> CanFrame:
        return dbc.encode(self.db, message, self.values(message, state, now))

    def encode_all(self, messages: Sequence[str], state: BatteryState, now: float) -> list[CanFrame]:
        return [self.encode(m, state, now) for m in messages]

    @property
    def cyclic_messages(self) -> tuple[str, ...]:
        return tuple(m for g in self.groups for m in g.messages)

    def messages_sent(self) -> tuple[str, ...]:
        """Every DBC message this protocol encodes through `values()` (cyclic and answers)."""
        return (*self.cyclic_messages, *self.answer_messages)

    def due(self, state: BatteryState, now: float) -> list[CanFrame]:
        """Cyclic frames due at `now` (each group at most once per call; no catch-up bursts)."""
        if self.silent_until_inverter and not self.inverter_seen:
            return []
        frames: list[CanFrame] = []
        for i, group in enumerate(self.groups):
            at = self._next_at[i]
            if at is not None and now < at:
                continue
            frames.extend(self.encode_all(group.messages, state, now))
            nxt = now + group.period_s if at is None else at + group.period_s
            if nxt <= now:  # we were late by a whole period: no catch-up burst
                nxt = now + group.period_s
            self._next_at[i] = max(nxt, now + self.min_repeat_s)  # e.g. the SMA 200 ms inhibit time
        return frames

    def next_due(self, now: float) -> float | None:
        """When `due()` has something next (None: nothing cyclic, e.g. waiting for the inverter)."""
        if not self.groups or (self.silent_until_inverter and not self.inverter_seen):
            return None
        return min((at if at is not None else now) for at in self._next_at)

    def on_frame(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        return self.react(frame, state, now)

    def dbc_id(self, frame: CanFrame) -> int:
        """The DBC message id of a frame (protocols that put an address into the id override this)."""
        return frame.arbitration_id

    def reset(self) -> None:
        """Forget schedule and inverter presence (after a bus reconnect or a protocol switch)."""
        self._next_at = [None] * len(self.groups)
        self.inverter_seen = False


# -- helpers shared by the protocol modules -------------------------------------------------------
def stop_voltage(state: BatteryState) -> float:
    """CVL used while charging is blocked: the present voltage, never 0 (Victron/Deye rule)."""
    if bank.voltage(state.bank) > 0:
        return min(state.charge_voltage_v, bank.voltage(state.bank))
    return state.charge_voltage_v


def charge_current(state: BatteryState) -> float:
    return state.charge_current_a if state.charge_enabled else 0.0


def discharge_current(state: BatteryState) -> float:
    return state.discharge_current_a if state.discharge_enabled else 0.0


def charge_voltage(state: BatteryState) -> float:
    return state.charge_voltage_v if state.charge_enabled else stop_voltage(state)


def limit_signals(state: BatteryState) -> dict[str, float]:
    """The Pylon-style 0x351 limits (CVL, CCL, DCL, DVL) with the stop encoding of the helpers above."""
    return {
        "ChargeVoltageLimit": charge_voltage(state),
        "ChargeCurrentLimit": charge_current(state),
        "DischargeCurrentLimit": discharge_current(state),
        "DischargeVoltageLimit": state.discharge_voltage_v,
    }


def soc_soh_signals(state: BatteryState) -> dict[str, float]:
    """The Pylon-style 0x355 message: SOC and SOH in whole percent, SOC with decimals."""
    return {
        "SOC": round(bank.soc(state.bank)),
        "SOH": round(bank.soh(state.bank)),
        "SOCHiRes": bank.soc(state.bank),
    }


def measurement_signals(state: BatteryState) -> dict[str, float]:
    """The Pylon-style 0x356 message: bank voltage, current (positive = charging), temperature."""
    return {
        "Voltage": bank.voltage(state.bank),
        "Current": bank.current(state.bank),
        "Temperature": bank.temperature(state.bank),
    }


def flag_signals(out: FlagOutput, state: BatteryState) -> dict[str, float]:
    """Every alarm/warning signal `out` names, 1 when an active meaning of its level raises it:
    protection-level targets from `state.alarms`, warning-level targets from `state.warnings`."""
    values = dict.fromkeys(out.targets(PROTECTION) | out.targets(WARNING), 0.0)
    for target in out.raised(PROTECTION, state.alarms) | out.raised(WARNING, state.warnings):
        values[target] = 1.0
    return values
