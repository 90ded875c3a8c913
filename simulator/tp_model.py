"""Tianpower / Basengreen behaviour of a simulated pack: parameters, thresholds, resolution.

What it is for: the `FamilyModel` of Tianpower packs. Parameter names, units, ranges and defaults
come from the shared table `mappings/bms/tianpower.toml`; where the manual shows no default (most
of the alarm table's lower half) the simulator picks a plausible value, listed in
`SIMULATOR_DEFAULTS` (documented in docs/simulator.md as the simulator's choice, not the vendor's).

It must never perform I/O beyond loading the packaged parameter table.
"""

from __future__ import annotations

from collections.abc import Mapping

from mappings.bms.params import Group, ParameterTable, ParameterValueError, load_table
from simulator.protection import Kind, RuleSpec

# Alarm parameters the manual shows no default for: the simulator's choice (display units).
SIMULATOR_DEFAULTS: dict[str, float] = {
    "CHG_UT_STOP_Alarm": 3,
    "DISC_OT_START_Alarm": 65,
    "DISC_OT_Delay_Alarm": 4000,
    "DISC_OT_STOP_Alarm": 60,
    "DISC_UT_START_Alarm": -15,
    "DISC_UT_Delay_Alarm": 4000,
    "DISC_UT_STOP_Alarm": -10,
    "MOS_OT_START_Alarm": 100,
    "MOS_OT_Delay_Alarm": 4000,
    "MOS_OT_STOP_Alarm": 80,
    "Capacity_Low_Start_Alarm": 10,
    "Capacity_Low_Stop_Alarm": 15,
    "Vol_Diff_Start_Alarm": 300,
    "Vol_Diff_Stop_Alarm": 150,
    "ENV_OT_START_Alarm": 65,
    "ENV_OT_Delay_Alarm": 4000,
    "ENV_OT_STOP_Alarm": 60,
    "ENV_UT_START_Alarm": -20,
    "ENV_UT_Delay_Alarm": 4000,
    "ENV_UT_STOP_Alarm": -15,
}

# condition key -> (start, delay, stop) parameter names; stop None = over-current (timed release).
PROTECTION_RULES: dict[str, tuple[str, str, str | None]] = {
    "cell_ov": ("CELL_OV_Start", "CELL_OV_Delay", "CELL_OV_Stop"),
    "cell_uv": ("CELL_UV_Start", "CELL_UV_Delay", "CELL_UV_Stop"),
    "pack_ov": ("PACK_OV_Start", "PACK_OV_Delay", "PACK_OV_Stop"),
    "pack_uv": ("PACK_UV_Start", "PACK_UV_Delay", "PACK_UV_Stop"),
    "chg_oc1": ("CHG_OC1_Start", "CHG_OC1_Delay", None),
    "chg_oc2": ("CHG_OC2_Start", "CHG_OC2_Delay", None),
    "dsg_oc1": ("DISC_OC1_Start", "DISC_OC1_Delay", None),
    "dsg_oc2": ("DISC_OC2_Start", "DISC_OC2_Delay", None),
    "chg_ot": ("CHG_OT_START", "CHG_OT_Delay", "CHG_OT_STOP"),
    "dsg_ot": ("DISC_OT_START", "DISC_OT_Delay", "DISC_OT_STOP"),
    "chg_ut": ("CHG_UT_START", "CHG_UT_Delay", "CHG_UT_STOP"),
    "dsg_ut": ("DISC_UT_START", "DISC_UT_Delay", "DISC_UT_STOP"),
    "mos_ot": ("MOS_OT_START", "MOS_OT_Delay", "MOS_OT_STOP"),
    "env_ot": ("ENV_OT_START", "ENV_OT_Delay", "ENV_OT_STOP"),
    "env_ut": ("ENV_UT_START", "ENV_UT_Delay", "ENV_UT_STOP"),
}
ALARM_RULES: dict[str, tuple[str, str | None, str]] = {
    "cell_ov": ("CELL_OV_Start_Alarm", "CELL_OV_Delay_Alarm", "CELL_OV_Stop_Alarm"),
    "cell_uv": ("CELL_UV_Start_Alarm", "CELL_UV_Delay_Alarm", "CELL_UV_Stop_Alarm"),
    "pack_ov": ("PACK_OV_Start_Alarm", "PACK_OV_Delay_Alarm", "PACK_OV_Stop_Alarm"),
    "pack_uv": ("PACK_UV_Start_Alarm", "PACK_UV_Delay_Alarm", "PACK_UV_Stop_Alarm"),
    "chg_oc": ("CHG_OC_Start_Alarm", "CHG_OC_Delay_Alarm", "CHG_OC_Stop_Alarm"),
    "dsg_oc": ("DISC_OC_Start_Alarm", "DISC_OC_Delay_Alarm", "DISC_OC_Stop_Alarm"),
    "chg_ot": ("CHG_OT_START_Alarm", "CHG_OT_Delay_Alarm", "CHG_OT_STOP_Alarm"),
    "chg_ut": ("CHG_UT_START_Alarm", "CHG_UT_Delay_Alarm", "CHG_UT_STOP_Alarm"),
    "dsg_ot": ("DISC_OT_START_Alarm", "DISC_OT_Delay_Alarm", "DISC_OT_STOP_Alarm"),
    "dsg_ut": ("DISC_UT_START_Alarm", "DISC_UT_Delay_Alarm", "DISC_UT_STOP_Alarm"),
    "mos_ot": ("MOS_OT_START_Alarm", "MOS_OT_Delay_Alarm", "MOS_OT_STOP_Alarm"),
    "soc_low": ("Capacity_Low_Start_Alarm", None, "Capacity_Low_Stop_Alarm"),
    "cell_diff": ("Vol_Diff_Start_Alarm", None, "Vol_Diff_Stop_Alarm"),
    "env_ot": ("ENV_OT_START_Alarm", "ENV_OT_Delay_Alarm", "ENV_OT_STOP_Alarm"),
    "env_ut": ("ENV_UT_START_Alarm", "ENV_UT_Delay_Alarm", "ENV_UT_STOP_Alarm"),
}
ALARM_WITHOUT_DELAY_S = 2.0  # SOC-low and cell-difference alarms have no delay parameter
ABOVE = {"cell_ov", "pack_ov", "chg_oc", "chg_oc1", "chg_oc2", "dsg_oc", "dsg_oc1", "dsg_oc2", "chg_ot",
         "dsg_ot", "mos_ot", "env_ot", "cell_diff"}  # fmt: skip


def _si(name: str, value: float) -> float:
    """Display unit -> SI (mV -> V, ms -> s, mA -> A); other units are already SI-like."""
    if name.startswith("Vol_Diff"):
        return value / 1000.0
    return value


def _normalise(key: str, start: float, stop: float) -> float:
    """A stop threshold on the wrong side of its start would release at once; clamp it to start."""
    return min(stop, start) if key in ABOVE else max(stop, start)


class TianpowerModel:
    name = "tianpower"
    cells = 16
    temps = 4
    temp_decimals = 0
    voltage_decimals = 2
    refuses_both_mos_off = False
    remaining_from_soc = True
    soc_from_capacities = False
    capacity_parameters: tuple[str, str] | None = ("Set_Full_charge_capacity", "Set_Remaining_capacity")

    def __init__(self) -> None:
        self.table: ParameterTable = load_table("tianpower")

    def table_parameters(self) -> tuple[str, ...]:
        """Names stored in the pack's protection (0xE0) and alarm (0x00) tables."""
        return tuple(p.name for p in self.table if p.group is not Group.OTHER or "table" in p.wire)

    def default_parameters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.table_parameters():
            spec = self.table.get(name)
            value = spec.default if spec.default is not None else SIMULATOR_DEFAULTS[name]
            out[name] = spec.validate(value)
        return out

    def validate_parameter(self, name: str, value: float) -> float:
        if name not in self.table or name not in self.table_parameters():
            raise ParameterValueError(name, value, f"tianpower: unknown parameter {name!r}")
        return self.table.get(name).validate(value)

    def rules(self, params: Mapping[str, float]) -> list[RuleSpec]:
        out: list[RuleSpec] = []
        for key, (start, delay, stop) in PROTECTION_RULES.items():
            s = params[start]
            out.append(
                RuleSpec(
                    key,
                    Kind.PROTECTION,
                    s,
                    None if stop is None else _normalise(key, s, params[stop]),
                    params[delay] / 1000.0,
                )
            )
        for key, (a_start, a_delay, a_stop) in ALARM_RULES.items():
            s = _si(a_start, params[a_start])
            delay_s = ALARM_WITHOUT_DELAY_S if a_delay is None else params[a_delay] / 1000.0
            out.append(RuleSpec(key, Kind.ALARM, s, _normalise(key, s, _si(a_stop, params[a_stop])), delay_s))
        return out

    def balance(self, params: Mapping[str, float]) -> tuple[float | None, float | None]:
        return params["Balance_Start_Vol"], params["Balance_Start_Diff"] / 1000.0

    def full_charge_cell_v(self, params: Mapping[str, float]) -> float:
        return params["Const_Pack_V"] / self.cells
