"""The contract between the bus owner / poller (generic) and a BMS family driver (specific).

A driver never touches a transport. It builds request bytes with its family's codec, hands them to
a `BusClient` (implemented by the bus owner in `gateway.bus`), and converts the validated frames
it gets back into model objects (`gateway.model`). Every request ends in exactly one outcome:
a frame, or one of the exceptions below.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

from gateway.model import ClockReading, PackIdentity, ParameterSet, Telemetry
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


class Driver(abc.ABC):
    """One BMS family's way of reading (and later writing) a pack."""

    family: ClassVar[str]

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

    async def read_bank_realtime(self, bus: BusClient, master: int, now: float) -> Mapping[int, Telemetry]:
        """Every pack's realtime data through the master pack (PACE INFO 0xFF). Optional."""
        raise Unsupported(f"{self.family} has no whole-bank read through a master pack")
