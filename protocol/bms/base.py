"""What every BMS wire-protocol family provides: frames, an incremental decoder, a registry entry.

A family module (`protocol/bms/tianpower.py`, `protocol/bms/pace.py`) defines its frame type
(a subclass of `Frame`), its `FrameDecoder` subclass, request builders, response builders (used
by the simulator) and typed results, and registers one `BmsFamily` in `protocol.bms.registry`.

Decoder contract (the fuzz and contract tests check it for every registered family):
- `feed(data)` appends any chunk; the internal buffer is bounded (`max_buffer`): on overflow the
  oldest bytes are dropped and counted in `discarded_bytes`.
- `next_frame()` returns the next complete, validated frame, or `None` when more bytes are needed.
  When the bytes at the head of the buffer cannot be a valid frame (bad checksum, bad length, bad
  characters) it drops them up to the next possible start byte and raises `RemoteProtocolError`;
  the caller counts the error and calls `next_frame()` again. No other exception may escape.
- Garbage before a start byte is skipped silently (counted in `discarded_bytes`).

Nothing here performs I/O.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.bms.bootloader import BootCarriage
from protocol.buffer import BoundedBuffer
from protocol.errors import RemoteProtocolError


class FlagKind(enum.StrEnum):
    """The severity of a status bit as its family reports it (the model keeps the four apart).

    `ALARM` is the warning level (the pack still runs), `PROTECTION` means the pack opened a MOS,
    `FAULT` is a hardware or sensor failure, `STATE` is information that is not a problem.
    """

    PROTECTION = "protection"
    ALARM = "alarm"
    FAULT = "fault"
    STATE = "state"


class Meaning(enum.StrEnum):
    """What a status bit means, independent of the family and of any output protocol.

    Every status bit of every family maps to exactly one of these in its codec's flag table
    (`FlagInfo`); the outputs (CAN, RS485, SunSpec, native Modbus, MQTT, metrics) translate a
    meaning through one table (`mappings/flags/outputs.toml`), never a flag name.
    """

    # voltage
    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    PACK_OVERVOLTAGE = "pack_overvoltage"
    PACK_UNDERVOLTAGE = "pack_undervoltage"
    OVERVOLTAGE = "overvoltage"  # cell or pack not stated by the source
    UNDERVOLTAGE = "undervoltage"  # cell or pack not stated by the source
    CELL_IMBALANCE = "cell_imbalance"
    # current
    CHARGE_OVERCURRENT = "charge_overcurrent"
    DISCHARGE_OVERCURRENT = "discharge_overcurrent"
    OVERCURRENT = "overcurrent"  # direction not stated by the source
    SHORT_CIRCUIT = "short_circuit"
    # temperature
    CHARGE_OVERTEMPERATURE = "charge_overtemperature"
    CHARGE_UNDERTEMPERATURE = "charge_undertemperature"
    DISCHARGE_OVERTEMPERATURE = "discharge_overtemperature"
    DISCHARGE_UNDERTEMPERATURE = "discharge_undertemperature"
    SENSOR_OVERTEMPERATURE = "sensor_overtemperature"  # one sensor above its limit, role not stated
    SENSOR_UNDERTEMPERATURE = "sensor_undertemperature"
    MOS_OVERTEMPERATURE = "mos_overtemperature"
    MOS_UNDERTEMPERATURE = "mos_undertemperature"
    AMBIENT_OVERTEMPERATURE = "ambient_overtemperature"
    AMBIENT_UNDERTEMPERATURE = "ambient_undertemperature"
    TEMPERATURE_DIFFERENCE = "temperature_difference"
    # charge state
    SOC_LOW = "soc_low"
    SOH_LOW = "soh_low"
    FULL = "full"
    # hardware
    NTC_FAULT = "ntc_fault"  # temperature sensor open or shorted
    FAN_FAULT = "fan_fault"
    VOLTAGE_SENSE_FAULT = "voltage_sense_fault"  # cell voltage sensing (line, sensor)
    MEASUREMENT_FAULT = "measurement_fault"  # ADC / sampling module
    CHARGE_MOS_FAULT = "charge_mos_fault"
    DISCHARGE_MOS_FAULT = "discharge_mos_fault"
    CELL_FAULT = "cell_fault"
    REVERSE_POLARITY = "reverse_polarity"
    STARTUP_FAULT = "startup_fault"
    SECONDARY_PROTECTION = "secondary_protection"  # second-level (hardware) protection tripped
    FIRE = "fire"
    VIBRATION = "vibration"
    COMMUNICATION = "communication"  # the pack's own or the gateway's communication with it
    CONFIGURATION_FAULT = "configuration_fault"  # e.g. serial-number check failed
    OTHER_FAULT = "other_fault"  # a fault code whose meaning the source does not state
    UNDOCUMENTED = "undocumented"  # a bit position no source names
    # states (no output bit; MQTT and metrics labels only)
    CHARGING = "charging"
    DISCHARGING = "discharging"
    IDLE = "idle"
    CHARGE_MOS = "charge_mos"  # charge MOS on / off / switched (see the flag's name)
    DISCHARGE_MOS = "discharge_mos"
    PRECHARGE_MOS = "precharge_mos"
    MANUAL_MOS = "manual_mos"  # a MOS switched by command
    HEATER = "heater"
    BALANCING = "balancing"
    LOCKED = "locked"
    WAITING = "waiting"
    CURRENT_LIMITER = "current_limiter"
    SETTING = "setting"  # buzzer, LED alarm and other configuration bits
    HEARTBEAT = "heartbeat"

    @property
    def is_state(self) -> bool:
        """True for the informational meanings (no output bit, never a problem)."""
        return self in STATE_MEANINGS


STATE_MEANINGS = frozenset(
    {
        Meaning.CHARGING,
        Meaning.DISCHARGING,
        Meaning.IDLE,
        Meaning.CHARGE_MOS,
        Meaning.DISCHARGE_MOS,
        Meaning.PRECHARGE_MOS,
        Meaning.MANUAL_MOS,
        Meaning.HEATER,
        Meaning.BALANCING,
        Meaning.LOCKED,
        Meaning.WAITING,
        Meaning.CURRENT_LIMITER,
        Meaning.SETTING,
        Meaning.HEARTBEAT,
    }
)


class Blocks(enum.StrEnum):
    """The direction an active flag stops (the charge policy blocks it while the flag is set)."""

    NONE = "none"
    CHARGE = "charge"
    DISCHARGE = "discharge"
    BOTH = "both"

    @property
    def charge(self) -> bool:
        return self in (Blocks.CHARGE, Blocks.BOTH)

    @property
    def discharge(self) -> bool:
        return self in (Blocks.DISCHARGE, Blocks.BOTH)


@dataclass(frozen=True, slots=True)
class FlagInfo:
    """One status flag with its meaning as data: what the codec's flag table says about a bit.

    `kind` is the severity; `blocks` the direction it stops (only a protection or a fault blocks;
    an alarm or a state never does); `source` names where the meaning comes from, or says that only
    the name is known.
    """

    name: str
    kind: FlagKind
    meaning: Meaning
    blocks: Blocks = Blocks.NONE
    source: str = ""

    def __post_init__(self) -> None:
        if self.blocks is not Blocks.NONE and self.kind in (FlagKind.ALARM, FlagKind.STATE):
            raise ValueError(f"flag {self.name!r}: an {self.kind} never blocks a direction")
        if self.blocks is Blocks.NONE and self.kind is FlagKind.PROTECTION:
            raise ValueError(f"flag {self.name!r}: a protection blocks at least one direction")
        if not self.source:
            raise ValueError(f"flag {self.name!r} has no source for its meaning")
        if (
            self.meaning.is_state
            and self.kind is not FlagKind.STATE
            and self.meaning is not Meaning.UNDOCUMENTED
        ):
            raise ValueError(
                f"flag {self.name!r}: a {self.kind} cannot have the state meaning {self.meaning}"
            )

    @property
    def stops(self) -> bool:
        """True when the flag is at the inverters' protection (stop) level: it blocks a direction."""
        return self.blocks is not Blocks.NONE

    @property
    def level(self) -> str:
        """The output level: "protection" (blocks a direction), "warning" (a problem that does not
        stop the pack) or "state" (no output bit)."""
        if self.stops:
            return "protection"
        return "state" if self.kind is FlagKind.STATE else "warning"


@dataclass(frozen=True, slots=True)
class Frame:
    """A validated frame as it was on the wire."""

    raw: bytes
    address: int
    command: int  # Tianpower CMD; PACE CID2 of the request, or RTN in a response
    is_request: bool  # True when the frame has the shape of a master's request (e.g. an echo)


class FrameDecoder(BoundedBuffer, abc.ABC):
    """Incremental, bounded, resynchronising decoder (see the module docstring); the bounded buffer
    (`feed`, `buffered`, `clear`, `discarded_bytes`) is `protocol.buffer.BoundedBuffer`."""

    @abc.abstractmethod
    def next_frame(self) -> Frame | None:
        """The next valid frame, None for "need more", or RemoteProtocolError (bytes dropped)."""

    def frames(self) -> Iterator[Frame | RemoteProtocolError]:
        """Drain everything currently decodable, yielding frames and the errors met on the way."""
        while True:
            try:
                frame = self.next_frame()
            except RemoteProtocolError as err:
                yield err
                continue
            if frame is None:
                return
            yield frame


@dataclass(frozen=True, slots=True)
class BmsFamily:
    """A registry entry: everything generic code (contract tests, `decode`, scan) needs."""

    name: str  # "tianpower", "pace"
    description: str
    new_decoder: Callable[[], FrameDecoder]
    # Parse one complete captured frame (request or response) into JSON-able data with units and
    # flag names; raises RemoteProtocolError with a clear message for bad checksum/length/command.
    describe: Callable[[bytes], Mapping[str, Any]]
    # Golden frames for contract tests: name -> raw bytes (valid frames of this family).
    examples: Mapping[str, bytes]
    # Build the request that `scan` sends to find a pack at an address.
    probe_request: Callable[[int], bytes]
    # True when `frame` is a valid answer to the probe (used by scan/auto-detection).
    is_probe_answer: Callable[[Frame], bool]
    # How this family carries the firmware-upgrade messages (its `boot` module).
    boot: BootCarriage
    # Decode an answer together with the request it answers (request bytes, answer bytes), for
    # answers that do not say what they answer (PACE) or whose layout the request selects; raises
    # RemoteProtocolError when they are not a request and its answer. None: `describe` is enough.
    describe_answer: Callable[[bytes, bytes], Mapping[str, Any]] | None = None
