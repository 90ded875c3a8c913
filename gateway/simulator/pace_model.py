"""PACE behaviour of a simulated pack: parameter groups with units and defaults, thresholds.

What it is for: the `FamilyModel` of PACE packs. Parameters are named `<group>.<field>` after the
codec's parameter-group layouts (`protocol.bms.pace.commands.PARAM_GROUPS`) and held in display
units (V, A, s, °C, mV, %, min). `WIRE` gives each field's wire scale; defaults are typical PACE
16S LFP values (PbmsTools' factory set as published by nkinnan), and the alarm release hysteresis,
temperature delays and over-current recovery are the simulator's own choice (docs/simulator.md).

It must never perform I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.simulator.protection import Kind, RuleSpec
from protocol.bms.pace.values import TEMP_OFFSET_DK


@dataclass(frozen=True, slots=True)
class Field:
    unit: str
    scale: float  # display = wire * scale (+ offset for temperatures)
    lo: float
    hi: float
    default: float
    temperature: bool = False  # 0.1 K with the 2730 offset on the wire

    def to_wire(self, value: float) -> int:
        if self.temperature:
            return round(value * 10) + TEMP_OFFSET_DK
        return round(value / self.scale)

    def from_wire(self, raw: int) -> float:
        if self.temperature:
            return round((raw - TEMP_OFFSET_DK) / 10.0, 1)
        return round(raw * self.scale, 6)


def _v(default: float, lo: float = 2.0, hi: float = 4.5) -> Field:
    return Field("V", 0.001, lo, hi, default)


def _pv(default: float) -> Field:
    return Field("V", 0.001, 30.0, 65.0, default)


def _delay(default: float, step: float = 0.1) -> Field:
    return Field("s", step, step, 255 * step, default)


def _t(default: float) -> Field:
    return Field("°C", 0.1, -40.0, 120.0, default, temperature=True)


WIRE: dict[str, Field] = {
    "cell_ov.alarm": _v(3.60),
    "cell_ov.protect": _v(3.70),
    "cell_ov.release": _v(3.38),
    "cell_ov.delay": _delay(1.0),
    "pack_ov.alarm": _pv(57.6),
    "pack_ov.protect": _pv(59.2),
    "pack_ov.release": _pv(54.0),
    "pack_ov.delay": _delay(1.0),
    "cell_uv.alarm": _v(2.80),
    "cell_uv.protect": _v(2.50),
    "cell_uv.release": _v(2.90),
    "cell_uv.delay": _delay(1.0),
    "pack_uv.alarm": _pv(44.8),
    "pack_uv.protect": _pv(40.0),
    "pack_uv.release": _pv(46.4),
    "pack_uv.delay": _delay(1.0),
    "charge_oc.alarm": Field("A", 1.0, 1.0, 300.0, 105.0),
    "charge_oc.protect": Field("A", 1.0, 1.0, 300.0, 110.0),
    "charge_oc.delay": _delay(5.0),
    "discharge_oc1.alarm": Field("A", 1.0, 1.0, 300.0, 105.0),
    "discharge_oc1.protect": Field("A", 1.0, 1.0, 300.0, 125.0),
    "discharge_oc1.delay": _delay(10.0),
    "discharge_oc2.protect": Field("A", 1.0, 1.0, 255.0, 150.0),
    "discharge_oc2.delay": _delay(0.5, 0.025),
    "short_circuit.delay": Field("µs", 25.0, 25.0, 255 * 25.0, 300.0),
    "balance.threshold": _v(3.45),
    "balance.delta": Field("mV", 1.0, 1.0, 500.0, 30.0),
    "sleep.cell": _v(3.15),
    "sleep.reserved": Field("", 1.0, 0.0, 255.0, 0.0),
    "sleep.delay": Field("min", 1.0, 1.0, 255.0, 60.0),
    "full_charge.voltage": _pv(56.0),
    "full_charge.current": Field("mA", 1.0, 100.0, 20000.0, 2000.0),
    "full_charge.low_soc": Field("%", 1.0, 0.0, 100.0, 10.0),
    "cd_ot.t1": _t(55.0),  # charge OT alarm
    "cd_ot.t2": _t(60.0),  # charge OT protection
    "cd_ot.t3": _t(50.0),  # charge OT release
    "cd_ot.t4": _t(60.0),  # discharge OT alarm
    "cd_ot.t5": _t(65.0),  # discharge OT protection
    "cd_ot.t6": _t(55.0),  # discharge OT release
    "cd_ut.t1": _t(2.0),  # charge UT alarm
    "cd_ut.t2": _t(0.0),  # charge UT protection
    "cd_ut.t3": _t(5.0),  # charge UT release
    "cd_ut.t4": _t(-15.0),  # discharge UT alarm
    "cd_ut.t5": _t(-20.0),  # discharge UT protection
    "cd_ut.t6": _t(-10.0),  # discharge UT release
    "mos_ot.alarm": _t(95.0),
    "mos_ot.protect": _t(110.0),
    "mos_ot.release": _t(85.0),
    "environment_t.t1": _t(-15.0),  # environment UT alarm
    "environment_t.t2": _t(-20.0),  # environment UT protection
    "environment_t.t3": _t(-10.0),  # environment UT release
    "environment_t.t4": _t(60.0),  # environment OT alarm
    "environment_t.t5": _t(65.0),  # environment OT protection
    "environment_t.t6": _t(55.0),  # environment OT release
    "limiter.current": Field("A", 1.0, 1.0, 255.0, 10.0),
}

TEMP_DELAY_S = 4.0  # PACE has no temperature delay parameters: the simulator's choice
HYSTERESIS = {"cell": 0.05, "pack": 0.8, "current": 5.0, "temp": 5.0}


class PaceModel:
    name = "pace"
    cells = 16
    temps = 4
    temp_decimals = 1
    refuses_both_mos_off = True  # reference 3.C.1: the BMS refuses to turn both MOSFETs off
    remaining_from_soc = False
    soc_from_capacities = True

    def __init__(self, version: int = 0x25) -> None:
        self.version = version
        self.voltage_decimals = 3 if version == 0x25 else 2

    def default_parameters(self) -> dict[str, float]:
        return {name: f.default for name, f in WIRE.items()}

    def validate_parameter(self, name: str, value: float) -> float:
        f = WIRE.get(name)
        if f is None:
            raise ValueError(f"pace: unknown parameter {name!r}")
        if not f.lo <= value <= f.hi:
            raise ValueError(f"pace: {name} = {value} {f.unit} outside {f.lo}..{f.hi} {f.unit}")
        return float(value)

    def rules(self, p: Mapping[str, float]) -> list[RuleSpec]:
        prot = Kind.PROTECTION
        alarm = Kind.ALARM
        h = HYSTERESIS
        out = [
            RuleSpec("cell_ov", prot, p["cell_ov.protect"], p["cell_ov.release"], p["cell_ov.delay"]),
            RuleSpec("pack_ov", prot, p["pack_ov.protect"], p["pack_ov.release"], p["pack_ov.delay"]),
            RuleSpec("cell_uv", prot, p["cell_uv.protect"], p["cell_uv.release"], p["cell_uv.delay"]),
            RuleSpec("pack_uv", prot, p["pack_uv.protect"], p["pack_uv.release"], p["pack_uv.delay"]),
            RuleSpec("chg_oc1", prot, p["charge_oc.protect"], None, p["charge_oc.delay"]),
            RuleSpec("dsg_oc1", prot, p["discharge_oc1.protect"], None, p["discharge_oc1.delay"]),
            RuleSpec("dsg_oc2", prot, p["discharge_oc2.protect"], None, p["discharge_oc2.delay"]),
            RuleSpec("chg_ot", prot, p["cd_ot.t2"], min(p["cd_ot.t3"], p["cd_ot.t2"]), TEMP_DELAY_S),
            RuleSpec("dsg_ot", prot, p["cd_ot.t5"], min(p["cd_ot.t6"], p["cd_ot.t5"]), TEMP_DELAY_S),
            RuleSpec("chg_ut", prot, p["cd_ut.t2"], max(p["cd_ut.t3"], p["cd_ut.t2"]), TEMP_DELAY_S),
            RuleSpec("dsg_ut", prot, p["cd_ut.t5"], max(p["cd_ut.t6"], p["cd_ut.t5"]), TEMP_DELAY_S),
            RuleSpec(
                "mos_ot",
                prot,
                p["mos_ot.protect"],
                min(p["mos_ot.release"], p["mos_ot.protect"]),
                TEMP_DELAY_S,
            ),
            RuleSpec(
                "env_ut",
                prot,
                p["environment_t.t2"],
                max(p["environment_t.t3"], p["environment_t.t2"]),
                TEMP_DELAY_S,
            ),
            RuleSpec(
                "env_ot",
                prot,
                p["environment_t.t5"],
                min(p["environment_t.t6"], p["environment_t.t5"]),
                TEMP_DELAY_S,
            ),
            RuleSpec(
                "cell_ov", alarm, p["cell_ov.alarm"], p["cell_ov.alarm"] - h["cell"], p["cell_ov.delay"]
            ),
            RuleSpec(
                "pack_ov", alarm, p["pack_ov.alarm"], p["pack_ov.alarm"] - h["pack"], p["pack_ov.delay"]
            ),
            RuleSpec(
                "cell_uv", alarm, p["cell_uv.alarm"], p["cell_uv.alarm"] + h["cell"], p["cell_uv.delay"]
            ),
            RuleSpec(
                "pack_uv", alarm, p["pack_uv.alarm"], p["pack_uv.alarm"] + h["pack"], p["pack_uv.delay"]
            ),
            RuleSpec(
                "chg_oc",
                alarm,
                p["charge_oc.alarm"],
                p["charge_oc.alarm"] - h["current"],
                p["charge_oc.delay"],
            ),
            RuleSpec(
                "dsg_oc",
                alarm,
                p["discharge_oc1.alarm"],
                p["discharge_oc1.alarm"] - h["current"],
                p["discharge_oc1.delay"],
            ),
            RuleSpec("chg_ot", alarm, p["cd_ot.t1"], p["cd_ot.t1"] - h["temp"], TEMP_DELAY_S),
            RuleSpec("dsg_ot", alarm, p["cd_ot.t4"], p["cd_ot.t4"] - h["temp"], TEMP_DELAY_S),
            RuleSpec("chg_ut", alarm, p["cd_ut.t1"], p["cd_ut.t1"] + h["temp"], TEMP_DELAY_S),
            RuleSpec("dsg_ut", alarm, p["cd_ut.t4"], p["cd_ut.t4"] + h["temp"], TEMP_DELAY_S),
            RuleSpec("mos_ot", alarm, p["mos_ot.alarm"], p["mos_ot.alarm"] - h["temp"], TEMP_DELAY_S),
            RuleSpec("env_ut", alarm, p["environment_t.t1"], p["environment_t.t1"] + h["temp"], TEMP_DELAY_S),
            RuleSpec("env_ot", alarm, p["environment_t.t4"], p["environment_t.t4"] - h["temp"], TEMP_DELAY_S),
            RuleSpec("soc_low", alarm, p["full_charge.low_soc"], p["full_charge.low_soc"] + 5.0, 2.0),
        ]
        return out

    def balance(self, params: Mapping[str, float]) -> tuple[float | None, float | None]:
        return params["balance.threshold"], params["balance.delta"] / 1000.0

    def full_charge_cell_v(self, params: Mapping[str, float]) -> float:
        return params["full_charge.voltage"] / self.cells
