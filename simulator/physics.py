"""Electrical and thermal model of one simulated LFP pack (deterministic, no I/O).

What it is for: given a current and a time step, move the pack's state (per-cell charge, pack
state of charge by coulomb counting, cell/MOS temperatures, balancing, cycles, SOH) forward, and
give the cell voltages (LFP open-circuit curve + internal resistance). Every random quantity (cell
spread, capacities, offsets) is drawn once from the seed at construction; a step never draws
noise, so a pack at rest stays exactly where it is however often it is read.

It must never perform I/O, read the wall clock, or know any wire format.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

# LFP open-circuit voltage per cell against state of charge (%), at rest, 25 °C. A typical curve
# (flat plateau 3.28-3.34 V, knees below 10 % and above 95 %); linear between points.
OCV_CURVE: tuple[tuple[float, float], ...] = (
    (0.0, 2.500),
    (2.0, 2.900),
    (5.0, 3.050),
    (10.0, 3.180),
    (20.0, 3.240),
    (30.0, 3.270),
    (40.0, 3.285),
    (50.0, 3.295),
    (60.0, 3.302),
    (70.0, 3.315),
    (80.0, 3.330),
    (90.0, 3.338),
    (95.0, 3.360),
    (98.0, 3.400),
    (100.0, 3.550),
)
_OCV_SOC = [p[0] for p in OCV_CURVE]


def ocv_v(soc_pct: float) -> float:
    """Open-circuit voltage of one LFP cell at `soc_pct` (clamped to 0..100)."""
    soc = min(100.0, max(0.0, soc_pct))
    i = bisect.bisect_right(_OCV_SOC, soc)
    if i >= len(OCV_CURVE):
        return OCV_CURVE[-1][1]
    (s0, v0), (s1, v1) = OCV_CURVE[i - 1], OCV_CURVE[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


BALANCE_CURRENT_A = 0.05  # passive bleed current of one balancing resistor
HEAT_CELL_C_PER_A2 = 0.0015  # steady temperature rise of the cells per A² of pack current
HEAT_MOS_C_PER_A2 = 0.003  # steady rise of the MOSFET heatsink per A²
TAU_CELL_S = 600.0  # thermal time constant of the cells
TAU_MOS_S = 120.0
HEATER_RISE_C = 15.0  # a heating pad lifts the cells by this much at steady state
SOH_LOSS_PER_CYCLE_PCT = 0.02


@dataclass(slots=True)
class Cell:
    capacity_ah: float  # this cell's real capacity
    charge_ah: float  # charge it holds now
    resistance_ohm: float

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.charge_ah / self.capacity_ah


@dataclass(slots=True)
class PackPhysics:
    """State of one pack. Build it with `PackPhysics.from_seed`."""

    cells: list[Cell]
    nominal_capacity_ah: float
    full_capacity_ah: float  # what the BMS believes is 100 % (writable)
    remaining_ah: float  # the BMS's coulomb counter
    ambient_c: float
    cell_temp_offsets_c: list[float]  # per sensor, fixed
    cell_temps_c: list[float]  # per sensor, dynamic
    mos_temp_c: float
    cycles: int
    soh_pct: float
    discharged_ah_total: float = 0.0  # since the last whole cycle was counted
    charged_ah_lifetime: float = 0.0
    discharged_ah_lifetime: float = 0.0
    charged_wh_lifetime: float = 0.0
    discharged_wh_lifetime: float = 0.0
    current_a: float = 0.0  # the current that flows (after MOS states), + = charging
    heater_on: bool = False
    balancing: set[int] = field(default_factory=set)  # 0-based cell indexes

    @classmethod
    def from_seed(
        cls, rng: random.Random, *, cells: int = 16, temps: int = 4, nominal_ah: float = 100.0
    ) -> PackPhysics:
        soc = rng.uniform(45.0, 75.0)
        soh = round(rng.uniform(97.0, 100.0), 2)
        full = round(nominal_ah * soh / 100.0, 2)
        cell_list = []
        for _ in range(cells):
            cap = full * rng.uniform(0.99, 1.01)
            cell_soc = min(99.0, max(1.0, soc + rng.uniform(-0.6, 0.6)))
            cell_list.append(Cell(cap, cap * cell_soc / 100.0, rng.uniform(0.0008, 0.0012)))
        ambient = round(rng.uniform(21.0, 27.0), 1)
        offsets = [rng.uniform(-0.8, 0.8) for _ in range(temps)]
        return cls(
            cells=cell_list,
            nominal_capacity_ah=nominal_ah,
            full_capacity_ah=full,
            remaining_ah=full * soc / 100.0,
            ambient_c=ambient,
            cell_temp_offsets_c=offsets,
            cell_temps_c=[ambient + o for o in offsets],
            mos_temp_c=ambient + 1.0,
            cycles=rng.randint(0, 40),
            soh_pct=soh,
        )

    # --- observation -------------------------------------------------------------------------

    @property
    def soc_pct(self) -> float:
        return min(100.0, max(0.0, 100.0 * self.remaining_ah / self.full_capacity_ah))

    def cell_voltages_v(self) -> list[float]:
        return [ocv_v(c.soc_pct) + self.current_a * c.resistance_ohm for c in self.cells]

    # --- evolution ---------------------------------------------------------------------------

    def step(
        self, dt_s: float, current_a: float, balance_start_v: float | None, balance_diff_v: float | None
    ) -> None:
        """Advance by `dt_s` with `current_a` flowing (already limited by the MOS states)."""
        if dt_s <= 0:
            return
        self.current_a = current_a
        dah = current_a * dt_s / 3600.0
        for c in self.cells:
            c.charge_ah = min(c.capacity_ah, max(0.0, c.charge_ah + dah))
        self.remaining_ah = min(self.full_capacity_ah, max(0.0, self.remaining_ah + dah))
        volts = sum(self.cell_voltages_v())
        if dah > 0:
            self.charged_ah_lifetime += dah
            self.charged_wh_lifetime += dah * volts
        elif dah < 0:
            self.discharged_ah_lifetime -= dah
            self.discharged_wh_lifetime -= dah * volts
            self.discharged_ah_total -= dah
            while self.discharged_ah_total >= self.full_capacity_ah > 0:
                self.discharged_ah_total -= self.full_capacity_ah
                self.cycles += 1
                self.soh_pct = max(50.0, round(self.soh_pct - SOH_LOSS_PER_CYCLE_PCT, 2))
        self._balance(dt_s, balance_start_v, balance_diff_v)
        self._heat(dt_s)

    def _balance(self, dt_s: float, start_v: float | None, diff_v: float | None) -> None:
        self.balancing.clear()
        if start_v is None or diff_v is None or self.current_a < 0:
            return
        volts = self.cell_voltages_v()
        vmin = min(volts)
        for i, v in enumerate(volts):
            if v >= start_v and v - vmin >= diff_v:
                self.balancing.add(i)
                c = self.cells[i]
                c.charge_ah = max(0.0, c.charge_ah - BALANCE_CURRENT_A * dt_s / 3600.0)

    def _heat(self, dt_s: float) -> None:
        i2 = self.current_a * self.current_a
        heater = HEATER_RISE_C if self.heater_on else 0.0
        a_cell = min(1.0, dt_s / TAU_CELL_S)
        for k, off in enumerate(self.cell_temp_offsets_c):
            target = self.ambient_c + off + HEAT_CELL_C_PER_A2 * i2 + heater
            self.cell_temps_c[k] += (target - self.cell_temps_c[k]) * a_cell
        a_mos = min(1.0, dt_s / TAU_MOS_S)
        mos_target = self.ambient_c + 1.0 + HEAT_MOS_C_PER_A2 * i2
        self.mos_temp_c += (mos_target - self.mos_temp_c) * a_mos

    def set_remaining(self, remaining_ah: float) -> None:
        """A capacity write: the BMS's counter changes, the cells do not."""
        self.remaining_ah = min(self.full_capacity_ah, max(0.0, remaining_ah))
