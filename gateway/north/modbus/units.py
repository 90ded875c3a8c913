"""What the Modbus server serves per unit id, and the settings the register maps are built with.

A `UnitView` is immutable: the register image, the index of writable registers, and whether the
unit's data is online (an offline unit answers 0x0B). The server keeps one dict of unit views and
replaces it whole after every rebuild, so a request always sees one consistent build.

Never performs I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mappings.modbus import WriteRange
from protocol.modbus.image import PointDef, RegisterImage


class UnitKind(enum.StrEnum):
    SUNSPEC_BANK = "sunspec-bank"
    SUNSPEC_PACK = "sunspec-pack"
    NATIVE = "native"


@dataclass(frozen=True, slots=True)
class WritablePoint:
    """A register a client may write: which table and point it is, its scale and allowed range."""

    table: str  # "802", "124" or "native"
    point: PointDef
    sf: int | None  # exponent applied to the raw value
    range: WriteRange

    @property
    def key(self) -> str:
        return f"{self.table}.{self.point.name}"


@dataclass(frozen=True, slots=True)
class UnitView:
    unit_id: int
    kind: UnitKind
    image: RegisterImage
    online: bool  # False: every request answers 0x0B
    writable: Mapping[int, WritablePoint] = field(default_factory=lambda: MappingProxyType({}))
    label: str = ""


@dataclass(frozen=True, slots=True)
class MapSettings:
    """Everything besides the model that shapes the served values (from `[modbus]`)."""

    manufacturer: str = "bms-gateway"
    model_name: str = "BMS bank"
    serial: str | None = None
    version: str = ""
    rated_current_a: float = 100.0  # per pack, both directions (nameplate max charge/discharge)
    nominal_cell_voltage_v: float = 3.2
    cells_per_pack: int = 16  # SunSpec 805 cell slots until a pack reports more
    cell_temperature_from_sensors: bool = False  # *inferred* per-cell temperatures (opt-in)
    writes_enabled: bool = False
    idle_current_a: float = 0.5  # |current| below this counts as neither charging nor discharging
