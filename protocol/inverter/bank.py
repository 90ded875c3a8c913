"""The bank as every inverter-facing encoder reads it: a structural type of the model's bank view.

`gateway.core.model.BankSnapshot` (the aggregate the gateway computes once per model view) satisfies
`BankValues` without this package knowing the gateway: the CAN encoders read it through the charge
decision (`BatteryState.bank`), the RS485 responders through their `BankView`. Nothing here computes
a bank value; the helpers below only give the value a message carries when the bank does not know it.

Units are SI with the unit in the field name; extremes carry their pack (bus, address) and 1-based
cell or sensor index. This module must never import anything with I/O, asyncio or the gateway.
"""

from __future__ import annotations

from typing import Protocol

PackId = tuple[str, int]
"""(bus name, pack address): how the gateway names a pack (its `PackKey`)."""


class PackValue(Protocol):
    """A value with its place: one cell voltage or temperature sensor of one pack (`CellRef`)."""

    @property
    def pack(self) -> PackId: ...
    @property
    def index(self) -> int: ...
    @property
    def value(self) -> float: ...


class BankValues(Protocol):
    """The bank values the encoders read (see `gateway.core.model.BankSnapshot` for the rules).

    Cell temperatures (`temp_*`) are the cell sensors; board and MOS temperatures one value per pack
    (a pack without a board sensor gives its MOS sensor as the board temperature and no MOS one).
    """

    @property
    def packs_configured(self) -> int: ...
    @property
    def packs_online(self) -> int: ...
    @property
    def voltage_v(self) -> float | None: ...
    @property
    def current_a(self) -> float | None: ...
    @property
    def soc_pct(self) -> float | None: ...
    @property
    def soh_pct(self) -> float | None: ...
    @property
    def soh_min_pct(self) -> float | None: ...
    @property
    def full_capacity_ah(self) -> float | None: ...
    @property
    def remaining_capacity_ah(self) -> float | None: ...
    @property
    def nominal_capacity_ah(self) -> float | None: ...
    @property
    def cycles_max(self) -> int | None: ...
    @property
    def cycles_mean(self) -> int | None: ...
    @property
    def cells_per_pack(self) -> int | None: ...
    @property
    def cell_max(self) -> PackValue | None: ...
    @property
    def cell_min(self) -> PackValue | None: ...
    @property
    def temp_mean_c(self) -> float | None: ...
    @property
    def temp_max(self) -> PackValue | None: ...
    @property
    def temp_min(self) -> PackValue | None: ...
    @property
    def mos_temp_mean_c(self) -> float | None: ...
    @property
    def mos_temp_max(self) -> PackValue | None: ...
    @property
    def mos_temp_min(self) -> PackValue | None: ...
    @property
    def board_temp_mean_c(self) -> float | None: ...
    @property
    def board_temp_max(self) -> PackValue | None: ...
    @property
    def board_temp_min(self) -> PackValue | None: ...


# -- what a message carries for a value the bank does not know ------------------------------------
def soc(bank: BankValues) -> float:
    return bank.soc_pct if bank.soc_pct is not None else 0.0


def soh(bank: BankValues) -> float:
    """SOH; 100 % when no pack reports one (nothing known to be worn)."""
    return bank.soh_pct if bank.soh_pct is not None else 100.0


def voltage(bank: BankValues) -> float:
    return bank.voltage_v if bank.voltage_v is not None else 0.0


def current(bank: BankValues) -> float:
    return bank.current_a if bank.current_a is not None else 0.0


def temperature(bank: BankValues) -> float:
    """The mean cell temperature (0 when no pack has a sensor)."""
    return bank.temp_mean_c if bank.temp_mean_c is not None else 0.0


def value(ref: PackValue | None, default: float = 0.0) -> float:
    return default if ref is None else ref.value


def index(ref: PackValue | None) -> int:
    """The cell or sensor index of an extreme within its pack (0 when unknown)."""
    return 0 if ref is None else ref.index


def temp_max(bank: BankValues) -> float:
    """The highest cell temperature (the mean when unknown)."""
    return value(bank.temp_max, temperature(bank))


def temp_min(bank: BankValues) -> float:
    return value(bank.temp_min, temperature(bank))


def cells(bank: BankValues) -> int:
    return bank.cells_per_pack or 0


def place(ref: PackValue | None) -> str:
    """`bus/address/index` of an extreme ("" when unknown)."""
    if ref is None:
        return ""
    bus, address = ref.pack
    return f"{bus}/{address}/{ref.index}"
