"""The contract between the bus owner / poller (generic) and a BMS family driver (specific).

A driver never touches a transport. It builds request bytes with its family's codec, hands them to
a `BusClient` (implemented by the bus owner in `gateway.south.bus`), and converts the validated frames
it gets back into model objects (`gateway.core.model`). Every request ends in exactly one outcome:
a frame, or one of the exceptions below.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from gateway.core.model import ClockReading, PackIdentity, ParameterSet, Telemetry
from protocol.bms.base import Frame, FrameDecoder


class Priority(enum.IntEnum):
    """Lower value is served first."""

    FIRMWARE = 0
    ADMIN = 1
    POLL = 2
    BACKGROUND = 3  # history downloads, slow identity reads


class BusError(Exception):
    """Base of the request outcomes that are not data."""


class NoResponse(BusError):
    """Sent, but no valid answer arrived within the timeout (after the configured retries)."""


class NotSent(BusError):
    """The request never reached the wire (transport down, queue full, shutting down)."""


class DeviceError(BusError):
    """The pack answered with an error/return code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unsupported(BusError):
    """This family (or this pack's firmware) cannot do what was asked; the message says why."""


class BusClient(Protocol):
    """What a driver may ask of the bus owner."""

    async def transact(
        self,
        request: bytes,
        match: Callable[[Frame], bool],
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        expect_response: bool = True,
        address: int | None = None,
    ) -> Frame | None:
        """Send `request`, return the first validated frame for which `match` is true.

        Frames that do not match (echoes, other addresses) are counted and skipped. With
        `expect_response=False` returns None after the request is on the wire.
        """
        ...


@dataclass(frozen=True, slots=True)
class ParameterWrite:
    name: str
    value: float  # display unit of the parameter table


class Control(enum.StrEnum):
    """Switch-like actions of the vendor tool's CONFIGURATION page (value meanings per action)."""

    CHARGE_MOS = "charge_mos"  # value 1 = on, 0 = off
    DISCHARGE_MOS = "discharge_mos"
    HEATER = "heater"
    FAN = "fan"
    BUZZER = "buzzer"
    SOUND_LIGHT_ALARM = "sound_light_alarm"
    FORCED_SLEEP = "forced_sleep"  # value ignored
    SHUTDOWN = "shutdown"
    CURRENT_LIMITER = "current_limiter"


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One stored record of a pack's history (timing record or event), decoded."""

    index: int  # position in the pack's record store (0-based), the resume point of a download
    recorded_at: float  # epoch seconds (the pack's clock, read as local time)
    event: str  # event name as the vendor tool shows it ("Timing record", "Start system", ...)
    event_code: int
    cell_voltages_v: tuple[float, ...]
    temperatures_c: tuple[float, ...]
    current_a: float
    voltage_v: float
    soc_pct: float | None
    raw: bytes  # the record bytes as read, for audit and re-decoding


@dataclass(frozen=True, slots=True)
class HistoryReach:
    """What it costs to make record `index` of a pack's history the next one to read, and how.

    A property of the family's wire (not a timeout): a download resumed at record N asks the
    driver for this plan, then calls `Driver.history_advance` once per exchange, each under the
    job's per-exchange timeout, so resuming at record 400 costs 400 short exchanges, never one
    exchange with a timeout that would have to grow with N."""

    index: int
    method: str  # "index": read any record directly; "stream": read on from the cursor;
    #              "rewind": restart the stream (a count read), then read on
    exchanges: int  # wire exchanges before record `index` can be read (0: at once)
    skipped: int  # records read and discarded on the way


class Driver(abc.ABC):
    """One BMS family's way of reading (and later writing) a pack.

    What a family can do beyond this base is declared, not asked by family name: the class
    attributes below (controls) and the capability protocols after this class, which ops/ checks
    with `isinstance(driver, CapacityWriter)` and the like."""

    family: ClassVar[str]
    # The pack controls this family's `control()` sends, with the documented command behind each
    # (see docs/admin.md); any other control is refused before a byte is sent.
    controls: ClassVar[Mapping[Control, str]] = {}
    # The BMS refuses to switch both MOSFETs off (the second "off" is refused before it is sent).
    refuses_both_mos_off: ClassVar[bool] = False
    # Controls whose payload convention is inferred, not documented: they need the operator's and
    # the configuration's opt-in (`InferredOptIn.allow_inferred` set for the one call).
    inferred_controls: ClassVar[frozenset[Control]] = frozenset()

    @abc.abstractmethod
    def new_decoder(self) -> FrameDecoder: ...

    @abc.abstractmethod
    async def read_realtime(self, bus: BusClient, address: int, now: float) -> Telemetry: ...

    @abc.abstractmethod
    async def read_identity(self, bus: BusClient, address: int) -> PackIdentity: ...

    @abc.abstractmethod
    async def read_parameters(self, bus: BusClient, address: int, now: float) -> ParameterSet: ...

    @abc.abstractmethod
    async def read_clock(self, bus: BusClient, address: int, now: float) -> ClockReading: ...

    @abc.abstractmethod
    async def probe(self, bus: BusClient, address: int) -> bool:
        """True when a pack of this family answers at `address` (used by scan and auto-detection)."""

    # --- writes and controls (the admin channel); each raises Unsupported where the family cannot ---

    async def write_parameters(
        self, bus: BusClient, address: int, writes: list[ParameterWrite], *, allow_inferred: bool = False
    ) -> None:
        """Write parameters (validated by the caller against the table). Inferred encodings are
        refused unless `allow_inferred`."""
        raise Unsupported(f"{self.family}: parameter writes are not available")

    async def write_clock(self, bus: BusClient, address: int, when_epoch_s: float) -> None:
        raise Unsupported(f"{self.family}: clock writes are not available")

    async def control(self, bus: BusClient, address: int, action: Control, value: int = 1) -> None:
        raise Unsupported(f"{self.family}: {action.value} is not available")

    async def history_count(self, bus: BusClient, address: int) -> int:
        raise Unsupported(f"{self.family}: history records are not available")

    async def read_history(self, bus: BusClient, address: int, index: int) -> HistoryRecord | None:
        """Record number `index`, or None at the end of data. Costs at most two wire exchanges
        once `history_advance` has reported `index` reached (one for a family that reads by index)."""
        raise Unsupported(f"{self.family}: history records are not available")

    def history_reach(self, address: int, index: int) -> HistoryReach:
        """The cheapest way from where the pack's record stream stands to record `index`. The
        default is a family that reads any record by its index: nothing to do first."""
        return HistoryReach(index, "index", 0, 0)

    async def history_advance(self, bus: BusClient, address: int, index: int) -> bool:
        """At most ONE wire exchange toward `index` (see `history_reach`); True once record
        `index` is the next to read (or the stream ended before it)."""
        return True

    async def read_bank_realtime(
        self, bus: BusClient, master: int, now: float, *, addresses: Sequence[int] | None = None
    ) -> Mapping[int, Telemetry]:
        """Every pack's realtime data through the master pack (PACE INFO 0xFF), keyed by address;
        `addresses` are the bank's configured packs, master first. Optional."""
        raise Unsupported(f"{self.family} has no whole-bank read through a master pack")


# ---- capabilities: optional driver features, asked with isinstance (never by family name) ---------


@runtime_checkable
class InferredOptIn(Protocol):
    """A driver whose inferred encodings are gated by an `allow_inferred` switch."""

    allow_inferred: bool


@runtime_checkable
class CapacityWriter(Protocol):
    """Writes the full / remaining / nominal capacity (`capacity` is the codec's selector)."""

    async def write_capacity(
        self, bus: BusClient, address: int, capacity: Any, capacity_ah: float, *, allow_inferred: bool = False
    ) -> None: ...


@runtime_checkable
class CellCountSetter(Protocol):
    """Changes the cell string count (a factory operation)."""

    async def set_cell_count(
        self, bus: BusClient, address: int, cells: int, *, confirm_dangerous: bool = False
    ) -> None: ...


@runtime_checkable
class SerialNumberAccess(Protocol):
    """Reads and writes the pack's SN code."""

    async def read_serial(self, bus: BusClient, address: int) -> str: ...
    async def write_serial(self, bus: BusClient, address: int, serial: str) -> None: ...


@runtime_checkable
class AntiTheftLock(Protocol):
    """Sets the anti-theft locks (`mask` is the codec's lock mask) and unlocks the pack."""

    async def anti_theft_lock(self, bus: BusClient, address: int, mask: Any) -> None: ...


@runtime_checkable
class Unlocker(Protocol):
    """Unlocks a pack locked by its anti-theft function."""

    async def unlock(self, bus: BusClient, address: int) -> None: ...


@runtime_checkable
class ProtocolSelection(Protocol):
    """Reads and writes the pack's own inverter protocol selection (CAN code, RS485 code, mode)."""

    async def read_protocols(self, bus: BusClient, address: int) -> Any: ...
    async def write_protocols(self, bus: BusClient, address: int, protocols: Any) -> None: ...


@runtime_checkable
class StorageInterval(Protocol):
    """Reads and writes the pack's history storage interval."""

    async def read_storage_interval(
        self, bus: BusClient, address: int, *, old_firmware: bool = False
    ) -> int: ...
    async def write_storage_interval(self, bus: BusClient, address: int, interval: int) -> None: ...


@runtime_checkable
class RecordTimes(Protocol):
    """Reads and writes the pack's record start/end time."""

    async def read_record_times(self, bus: BusClient, address: int) -> tuple[datetime, datetime]: ...
    async def write_record_time(self, bus: BusClient, address: int, which: str, when: datetime) -> None: ...


@runtime_checkable
class HistoryDeleter(Protocol):
    """Deletes the records stored in the pack (no family documents a wire command for it yet)."""

    async def delete_history(self, bus: BusClient, address: int) -> None: ...
