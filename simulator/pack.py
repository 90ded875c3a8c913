"""One simulated pack: physics, protections, switches, sleep, anti-theft, clock, history, bootloader.

What it is for: the family-neutral behaviour of a BMS board. The family responders
(`simulator.tianpower`, `simulator.pace`) translate request bytes into calls on a
`SimPack` and encode its `measure()` result; a `FamilyModel` supplies what differs per family
(parameter names, defaults, thresholds, wire resolution). Ground truth (`PackTruth`) is quantized
to the family's wire resolution, so a codec that decodes correctly reads back exactly the truth.

It must never perform I/O, read the wall clock, or draw random numbers after construction (all
spread comes from the seeded generator handed to `SimPack.create`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from protocol.bms.bootloader import BootloaderTarget, Mode
from simulator.history import HistoryStore, SimRecord
from simulator.physics import PackPhysics
from simulator.protection import Kind, ProtectionEngine, Quantity, RuleSpec, Transition

# back-to-back requests that wake a sleeping pack ("Shinwa BMS Communication Protocol" v1.1)
WAKE_REQUESTS = 20
WAKE_MAX_GAP_S = 1.0  # a longer pause restarts the count
RECHARGE_BELOW_SOC_PCT = 97.0  # the charge profile resumes charging below this SOC
ANTI_THEFT_COMM = 0x01  # anti-theft mask bits (CMD 0xFC; GHswitt/esphome-basen README command table)
ANTI_THEFT_PHYSICAL = 0x02
ANTI_THEFT_CHARGE_ACTIVATION = 0x04
ANTI_THEFT_SLEEP_VOLTAGE = 0x08

# Protection counters the packs keep (Tianpower CMD 0x39-0x3D; PACE has no such read).
COUNTER_OF: dict[str, str] = {
    "cell_ov": "over_voltage",
    "pack_ov": "over_voltage",
    "cell_uv": "under_voltage",
    "pack_uv": "under_voltage",
    "chg_oc1": "over_current",
    "chg_oc2": "over_current",
    "dsg_oc1": "over_current",
    "dsg_oc2": "over_current",
    "chg_ot": "temperature",
    "chg_ut": "temperature",
    "dsg_ot": "temperature",
    "dsg_ut": "temperature",
    "mos_ot": "temperature",
    "env_ot": "temperature",
    "env_ut": "temperature",
    "short_circuit": "short_circuit",
}
COUNTERS = ("short_circuit", "temperature", "over_current", "over_voltage", "under_voltage")


class FamilyModel(Protocol):
    """What differs per family (implemented in the family's simulator module)."""

    name: str
    cells: int
    temps: int  # cell temperature sensors (MOS and ambient come on top)
    temp_decimals: int  # 0: whole °C on the wire, 1: 0.1 °C
    voltage_decimals: int  # pack voltage: 2 (10 mV) or 3 (mV)
    refuses_both_mos_off: bool
    remaining_from_soc: bool  # the wire carries no remaining capacity: tools compute full x SOC
    soc_from_capacities: bool  # the wire carries capacities only: SOC = remaining / full, SOH = full / design
    capacity_parameters: tuple[str, str] | None  # table names of (full, remaining) capacity, if any

    def default_parameters(self) -> dict[str, float]: ...

    def validate_parameter(self, name: str, value: float) -> float:
        """The accepted value (display unit) or ValueError with a clear message."""
        ...

    def rules(self, params: Mapping[str, float]) -> list[RuleSpec]: ...

    def balance(self, params: Mapping[str, float]) -> tuple[float | None, float | None]:
        """(balance start cell voltage V, start difference V) or (None, None)."""
        ...

    def full_charge_cell_v(self, params: Mapping[str, float]) -> float: ...


@dataclass(frozen=True, slots=True)
class Identity:
    version: str
    barcode: str
    serial: str
    manufacturer: str
    model: str


@dataclass(frozen=True, slots=True)
class PackTruth:
    """A pack's true state, quantized to its family's wire resolution (SI units)."""

    address: int
    protocol: str
    online: bool
    sleeping: bool
    in_bootloader: bool
    cell_voltages_v: tuple[float, ...]
    cell_temperatures_c: tuple[float, ...]
    mos_temperature_c: float
    ambient_temperature_c: float
    current_a: float  # + = charging
    voltage_v: float
    soc_pct: float
    soh_pct: float
    full_capacity_ah: float
    remaining_capacity_ah: float
    nominal_capacity_ah: float
    cycles: int
    charge_mos_on: bool
    discharge_mos_on: bool
    charging: bool
    discharging: bool
    balancing_cells: tuple[int, ...]  # 1-based
    heater_on: bool
    fan_on: bool
    buzzer_on: bool
    sound_light_on: bool
    manual_charge_mos_off: bool
    manual_discharge_mos_off: bool
    protections: frozenset[str]  # condition keys (simulator.protection.CONDITIONS)
    alarms: frozenset[str]
    hardware_faults: frozenset[str]  # injected fault flags, by the family codec's names (FaultSpec.hardware)
    locked: bool  # anti-theft lock active (discharge MOS off)
    anti_theft_mask: int
    identity: Identity
    parameters: Mapping[str, float]  # family parameter names, display units
    clock_epoch_s: int
    storage_interval_s: int
    history_count: int
    protection_counters: Mapping[str, int]
    heater_on_c: float
    heater_off_c: float
    extra: Mapping[str, Any]  # family-specific state (PACE: inverter protocol selection, limiter, ...)

    @property
    def cell_mv(self) -> tuple[int, ...]:
        return tuple(round(v * 1000) for v in self.cell_voltages_v)


@dataclass(frozen=True, slots=True)
class WireFlags:
    """The status flags a pack reports, by the names the family's codec decodes them to."""

    protections: frozenset[str]
    alarms: frozenset[str]
    faults: frozenset[str]
    states: frozenset[str]


def _q(value: float, decimals: int) -> float:
    k = 10**decimals
    return round(value * k) / k


@dataclass(slots=True)
class SimPack:
    address: int
    family: FamilyModel
    physics: PackPhysics
    identity: Identity
    bootloader: BootloaderTarget
    params: dict[str, float]
    clock_offset_s: float = 0.0
    engine: ProtectionEngine = field(default_factory=ProtectionEngine)
    history: HistoryStore = field(default_factory=HistoryStore)
    online: bool = True
    sleeping: bool = False
    hardware_faults: frozenset[str] = frozenset()  # set from FaultSpec.hardware (not saved)
    current_override_a: float | None = None
    cell_override_v: dict[int, float] = field(default_factory=dict)  # 0-based cell -> volts
    manual_charge_mos_off: bool = False
    manual_discharge_mos_off: bool = False
    fan_on: bool = False
    buzzer_on: bool = True
    sound_light_on: bool = True
    heater_on_c: float = 5.0
    heater_off_c: float = 15.0
    heater_manual: bool | None = None  # None: automatic by the thresholds
    anti_theft_mask: int = 0
    comm_timeout_h: float = 48.0
    locked: bool = False
    last_comm_s: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    extra: dict[str, Any] = field(default_factory=dict)
    _wake_count: int = 0
    _last_request_wall: float | None = None
    _direction: int = 0  # -1 discharging, 0 idle, +1 charging (for start charging/discharging events)
    _cycle_dir: int = 1  # the cycle profile's current direction
    _charged_full: bool = False  # the charge profile reached full and rests

    @classmethod
    def create(cls, address: int, family: FamilyModel, rng: random.Random, identity: Identity) -> SimPack:
        physics = PackPhysics.from_seed(rng, cells=family.cells, temps=family.temps)
        pack = cls(
            address=address,
            family=family,
            physics=physics,
            identity=identity,
            bootloader=BootloaderTarget(family=family.name, version=identity.version, model=identity.version),
            params=family.default_parameters(),
            clock_offset_s=round(rng.uniform(-90.0, 90.0)),
        )
        pack.engine.set_rules(family.rules(pack.params))
        return pack

    # --- observation ------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self.bootloader.version

    def clock(self, sim_epoch_s: float) -> int:
        return int(sim_epoch_s + self.clock_offset_s)

    def cell_voltages_v(self) -> list[float]:
        volts = self.physics.cell_voltages_v()
        for i, v in self.cell_override_v.items():
            if 0 <= i < len(volts):
                volts[i] = v
        return volts

    def mos_states(self) -> tuple[bool, bool]:
        chg_blocked, dsg_blocked = self.engine.blocks()
        chg = not chg_blocked and not self.manual_charge_mos_off
        dsg = not dsg_blocked and not self.manual_discharge_mos_off and not self.locked
        return chg, dsg

    def _quantities(self) -> dict[Quantity, float]:
        cells = self.cell_voltages_v()
        temps = self.physics.cell_temps_c
        i = self.physics.current_a
        return {
            Quantity.CELL_MAX_V: max(cells),
            Quantity.CELL_MIN_V: min(cells),
            Quantity.CELL_DIFF_V: max(cells) - min(cells),
            Quantity.PACK_V: sum(cells),
            Quantity.CHARGE_A: max(0.0, i),
            Quantity.DISCHARGE_A: max(0.0, -i),
            Quantity.CELL_TEMP_MAX_C: max(temps),
            Quantity.CELL_TEMP_MIN_C: min(temps),
            Quantity.MOS_TEMP_C: self.physics.mos_temp_c,
            Quantity.AMBIENT_C: self.physics.ambient_c,
            Quantity.SOC_PCT: self.physics.soc_pct,
        }

    def measure(self, sim_epoch_s: float) -> PackTruth:
        f = self.family
        td = f.temp_decimals
        cells = tuple(round(v * 1000) / 1000 for v in self.cell_voltages_v())
        current = _q(self.physics.current_a, 2)
        chg_on, dsg_on = self.mos_states()
        full = _q(self.physics.full_capacity_ah, 2)
        soc = _q(self.physics.soc_pct, 2)
        soh = _q(self.physics.soh_pct, 2)
        remaining = _q(self.physics.remaining_ah, 2)
        nominal = _q(self.physics.nominal_capacity_ah, 2)
        if f.remaining_from_soc:
            remaining = round(full * min(soc, 100.0) / 100.0, 2)
        if f.soc_from_capacities:
            soc = round(min(100.0, remaining / full * 100.0), 2)
            soh = round(full / nominal * 100.0, 2)
        return PackTruth(
            address=self.address,
            protocol=f.name,
            online=self.online,
            sleeping=self.sleeping,
            in_bootloader=self.bootloader.mode is Mode.BOOTLOADER,
            cell_voltages_v=cells,
            cell_temperatures_c=tuple(_q(t, td) for t in self.physics.cell_temps_c),
            mos_temperature_c=_q(self.physics.mos_temp_c, td),
            ambient_temperature_c=_q(self.physics.ambient_c, td),
            current_a=current,
            voltage_v=_q(sum(cells), f.voltage_decimals),
            soc_pct=soc,
            soh_pct=soh,
            full_capacity_ah=full,
            remaining_capacity_ah=remaining,
            nominal_capacity_ah=nominal,
            cycles=self.physics.cycles,
            charge_mos_on=chg_on,
            discharge_mos_on=dsg_on,
            charging=current > 0,
            discharging=current < 0,
            balancing_cells=tuple(sorted(i + 1 for i in self.physics.balancing)),
            heater_on=self.physics.heater_on,
            fan_on=self.fan_on,
            buzzer_on=self.buzzer_on,
            sound_light_on=self.sound_light_on,
            manual_charge_mos_off=self.manual_charge_mos_off,
            manual_discharge_mos_off=self.manual_discharge_mos_off,
            protections=self.engine.active(Kind.PROTECTION),
            alarms=self.engine.active(Kind.ALARM),
            hardware_faults=self.hardware_faults,
            locked=self.locked,
            anti_theft_mask=self.anti_theft_mask,
            identity=Identity(
                self.version,
                self.identity.barcode,
                self.identity.serial,
                self.identity.manufacturer,
                self.identity.model,
            ),
            parameters=MappingProxyType(self._parameters(full, remaining)),
            clock_epoch_s=self.clock(sim_epoch_s),
            storage_interval_s=self.history.interval_s,
            history_count=self.history.count,
            protection_counters=MappingProxyType(dict(self.counters)),
            heater_on_c=self.heater_on_c,
            heater_off_c=self.heater_off_c,
            extra=MappingProxyType(dict(self.extra)),
        )

    def _parameters(self, full_ah: float, remaining_ah: float) -> dict[str, float]:
        out = dict(self.params)
        if self.family.capacity_parameters is not None:
            full_name, remaining_name = self.family.capacity_parameters
            out[full_name] = full_ah
            out[remaining_name] = remaining_ah
        return out

    # --- evolution --------------------------------------------------------------------------

    def requested_current(self, profile: str) -> float:
        if self.current_override_a is not None:
            return self.current_override_a
        cap = self.physics.nominal_capacity_ah
        soc = self.physics.soc_pct
        full_v = self.family.full_charge_cell_v(self.params)
        near_full = soc >= 99.5 or max(self.cell_voltages_v()) >= full_v
        if profile == "charge":
            # Charged to full, the charger stops until the pack has dropped back a little (no
            # on/off chatter at the top, as a real charger's float/rest behaviour).
            if near_full:
                self._charged_full = True
            elif soc < RECHARGE_BELOW_SOC_PCT:
                self._charged_full = False
            return 0.0 if self._charged_full else 0.3 * cap
        if profile == "discharge":
            return 0.0 if soc <= 5.0 else -0.3 * cap
        if profile == "cycle":
            if self._cycle_dir > 0 and near_full:
                self._cycle_dir = -1
            elif self._cycle_dir < 0 and soc <= 15.0:
                self._cycle_dir = 1
            return 0.3 * cap if self._cycle_dir > 0 else -0.35 * cap
        return 0.0

    def step(self, dt_s: float, now_s: float, sim_epoch_s: float, profile: str) -> None:
        """Advance by `dt_s`; `now_s` is the simulation time at the end of the step."""
        if self.bootloader.mode is Mode.BOOTLOADER:
            return  # the application (measurement, protections) does not run in the bootloader
        # Conditions already present at the start of the step (a scenario change, a parameter
        # write) start their delay there, not one step later.
        for tr in self.engine.evaluate(now_s - dt_s, self._quantities()):
            self._on_transition(tr, sim_epoch_s - dt_s)
        wanted = 0.0 if self.sleeping else self.requested_current(profile)
        if self.sleeping and self.current_override_a is not None and self.current_override_a > 0:
            self.sleeping = False  # connecting a charger wakes the pack (manual §4.5.3)
            wanted = self.current_override_a
        chg_on, dsg_on = self.mos_states()
        if (wanted > 0 and not chg_on) or (wanted < 0 and not dsg_on):
            wanted = 0.0
        self._update_heater()
        start_v, diff_v = self.family.balance(self.params)
        self.physics.step(dt_s, wanted, start_v, diff_v)
        for tr in self.engine.evaluate(now_s, self._quantities()):
            self._on_transition(tr, sim_epoch_s)
        direction = (wanted > 0) - (wanted < 0)
        if direction != self._direction:
            if direction > 0:
                self.record("start_charging", sim_epoch_s)
            elif direction < 0:
                self.record("start_discharging", sim_epoch_s)
            self._direction = direction
        if self.history.due(now_s):
            self.record("timing", sim_epoch_s)
        if (
            self.anti_theft_mask & ANTI_THEFT_COMM
            and not self.locked
            and now_s - self.last_comm_s >= self.comm_timeout_h * 3600.0
        ):
            self.locked = True
            self.record("protection:comm_lock", sim_epoch_s)

    def short_circuit(self, now_s: float, sim_epoch_s: float) -> None:
        """A short circuit on the terminals: the protection trips at once (discharge MOS off)."""
        tr = self.engine.trip("short_circuit", now_s)
        if tr is not None:
            self._on_transition(tr, sim_epoch_s)

    def max_step_s(self) -> float:
        """Keep steps short while a protection delay runs, so delays are honoured to 0.1 s."""
        return 0.1 if self.engine.pending() else 1.0

    def _update_heater(self) -> None:
        if self.heater_manual is not None:
            self.physics.heater_on = self.heater_manual
            return
        tmin = min(self.physics.cell_temps_c)
        if tmin <= self.heater_on_c:
            self.physics.heater_on = True
        elif tmin >= self.heater_off_c:
            self.physics.heater_on = False

    def _on_transition(self, tr: Transition, sim_epoch_s: float) -> None:
        prefix = f"{tr.kind.value}:{tr.key}"
        self.record(prefix if tr.active else "released:" + prefix, sim_epoch_s)
        if tr.active and tr.kind is Kind.PROTECTION and tr.key in COUNTER_OF:
            self.counters[COUNTER_OF[tr.key]] += 1

    def record(self, event: str, sim_epoch_s: float) -> None:
        cells = self.cell_voltages_v()
        temps = [round(t) for t in self.physics.cell_temps_c[:4]]
        temps += [round(self.physics.cell_temps_c[-1])] * (4 - len(temps))
        self.history.add(
            SimRecord(
                event=event,
                at_epoch_s=self.clock(sim_epoch_s),
                cell_mv=tuple(round(v * 1000) for v in cells),
                temps_c=(*temps, round(self.physics.mos_temp_c), round(self.physics.ambient_c)),
                current_a=_q(self.physics.current_a, 2),
                voltage_mv=round(sum(cells) * 1000),
                soc_pct=round(self.physics.soc_pct),
                remaining_ah=_q(self.physics.remaining_ah, 2),
                full_ah=_q(self.physics.full_capacity_ah, 2),
            )
        )

    # --- requests (family-neutral semantics; responders map wire commands onto these) -------

    def on_request(self, wall_s: float, now_s: float) -> bool:
        """Bookkeeping for a request addressed to this pack (or seen on the bus while asleep).
        Returns True when the pack is awake and may answer."""
        self.last_comm_s = now_s
        if not self.sleeping:
            return True
        if self._last_request_wall is not None and wall_s - self._last_request_wall > WAKE_MAX_GAP_S:
            self._wake_count = 0
        self._last_request_wall = wall_s
        self._wake_count += 1
        if self._wake_count >= WAKE_REQUESTS:
            self.wake()
        return False

    def wake(self) -> None:
        self.sleeping = False
        self._wake_count = 0
        self._last_request_wall = None

    def force_sleep(self) -> bool:
        """The vendor tool's forced dormancy; refused while charging (manual §4.5.3)."""
        if self.physics.current_a > 0.05:
            return False
        self.sleeping = True
        self._wake_count = 0
        self._last_request_wall = None
        return True

    def set_mos(self, charge: bool, on: bool) -> bool:
        new_chg_off = (not on) if charge else self.manual_charge_mos_off
        new_dsg_off = (not on) if not charge else self.manual_discharge_mos_off
        if self.family.refuses_both_mos_off and new_chg_off and new_dsg_off:
            return False
        self.manual_charge_mos_off, self.manual_discharge_mos_off = new_chg_off, new_dsg_off
        return True

    def write_parameters(self, values: Mapping[str, float]) -> dict[str, float]:
        """Validate every value first (nothing changes when one is refused), then apply."""
        accepted = {name: self.family.validate_parameter(name, v) for name, v in values.items()}
        self.params.update(accepted)
        self.engine.set_rules(self.family.rules(self.params))
        return accepted

    def unlock(self) -> None:
        self.locked = False

    def set_capacity(
        self,
        *,
        full_ah: float | None = None,
        remaining_ah: float | None = None,
        nominal_ah: float | None = None,
    ) -> None:
        if full_ah is not None:
            if not 1.0 <= full_ah <= 655.35:
                raise ValueError(f"full capacity {full_ah} Ah outside 1..655.35 Ah")
            self.physics.full_capacity_ah = full_ah
            self.physics.remaining_ah = min(self.physics.remaining_ah, full_ah)
        if nominal_ah is not None:
            if not 1.0 <= nominal_ah <= 655.35:
                raise ValueError(f"nominal capacity {nominal_ah} Ah outside 1..655.35 Ah")
            self.physics.nominal_capacity_ah = nominal_ah
        if remaining_ah is not None:
            if not 0.0 <= remaining_ah <= self.physics.full_capacity_ah:
                raise ValueError(f"remaining capacity {remaining_ah} Ah outside 0..full capacity")
            self.physics.set_remaining(remaining_ah)

    # --- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "parameters": dict(self.params),
            "serial": self.identity.serial,
            "barcode": self.identity.barcode,
            "clock_offset_s": self.clock_offset_s,
            "history": self.history.to_json(),
            "bootloader": self.bootloader.to_json(),
            "anti_theft_mask": self.anti_theft_mask,
            "locked": self.locked,
            "heater_on_c": self.heater_on_c,
            "heater_off_c": self.heater_off_c,
            "counters": dict(self.counters),
            "full_capacity_ah": self.physics.full_capacity_ah,
            "nominal_capacity_ah": self.physics.nominal_capacity_ah,
            "extra": dict(self.extra),
        }

    def restore(self, d: Mapping[str, Any]) -> None:
        params = d.get("parameters")
        if isinstance(params, dict):
            known = {k: float(v) for k, v in params.items() if k in self.params}
            self.params.update(known)
            self.engine.set_rules(self.family.rules(self.params))
        self.identity = Identity(
            self.identity.version,
            str(d.get("barcode", self.identity.barcode)),
            str(d.get("serial", self.identity.serial)),
            self.identity.manufacturer,
            self.identity.model,
        )
        self.clock_offset_s = float(d.get("clock_offset_s", self.clock_offset_s))
        if isinstance(d.get("history"), dict):
            self.history.restore(d["history"])
        if isinstance(d.get("bootloader"), dict):
            self.bootloader.restore(d["bootloader"])
        self.anti_theft_mask = int(d.get("anti_theft_mask", self.anti_theft_mask))
        self.locked = bool(d.get("locked", self.locked))
        self.heater_on_c = float(d.get("heater_on_c", self.heater_on_c))
        self.heater_off_c = float(d.get("heater_off_c", self.heater_off_c))
        if isinstance(d.get("counters"), dict):
            self.counters.update({k: int(v) for k, v in d["counters"].items() if k in self.counters})
        if "full_capacity_ah" in d:
            self.physics.full_capacity_ah = float(d["full_capacity_ah"])
            self.physics.remaining_ah = min(self.physics.remaining_ah, self.physics.full_capacity_ah)
        if "nominal_capacity_ah" in d:
            self.physics.nominal_capacity_ah = float(d["nominal_capacity_ah"])
        if isinstance(d.get("extra"), dict):
            self.extra.update(d["extra"])


class ResponderOptions(Protocol):
    """What a family's responder reads of `simulator.core.SimulatorOptions` when it is built."""

    @property
    def pace_version(self) -> int: ...


class PackBank(Protocol):
    """What a family responder reads and marks of the simulator (`simulator.core.Simulator` is one):
    the packs by address, the simulated wall clock, the dirty flag of the saved state and the fault
    counters. A
    structural type, so the responders do not import the simulator that drives them."""

    packs: dict[int, SimPack]
    dirty: bool

    @property
    def epoch_s(self) -> float: ...

    def pack(self, address: int) -> SimPack: ...

    def answering_pack(self, address: int) -> SimPack | None: ...

    def offline(self, address: int) -> bool: ...

    def count(self, name: str) -> None: ...
