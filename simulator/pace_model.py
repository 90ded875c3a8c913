"""PACE behaviour of a simulated pack: parameter defaults and thresholds over the shared table.

What it is for: the `FamilyModel` of PACE packs. Names, units, wire scales and ranges come from
`mappings/bms/pace.toml` (names as PbmsTools shows them, display units of the table: V, ms, A, °C,
mV, %, min); the table documents no defaults, so `DEFAULTS` holds typical PACE 16S LFP values (the
simulator's choice). Alarm release hysteresis and the delay of temperature conditions (PACE has
no temperature delay parameters) are the simulator's own choice too (docs/simulator.md).

It must never perform I/O beyond loading the packaged parameter table.
"""

from __future__ import annotations

from collections.abc import Mapping

from mappings.bms.params import ParameterTable, ParameterValueError, ParamSpec, load_table
from simulator.protection import Kind, RuleSpec

DEFAULTS: dict[str, float] = {
    "Cell_OV_Alarm": 3.60,
    "Cell_OV_Protect": 3.70,
    "Cell_OVP_Release": 3.38,
    "Cell_OVP_Delay_Time": 1000,
    "Pack_OV_Alarm": 57.6,
    "Pack_OV_Protect": 59.2,
    "Pack_OVP_Release": 54.0,
    "Pack_OVP_Delay_Time": 1000,
    "Cell_UV_Alarm": 2.80,
    "Cell_UV_Protect": 2.50,
    "Cell_UVP_Release": 2.90,
    "Cell_UVP_Delay_Time": 1000,
    "Pack_UV_Alarm": 44.8,
    "Pack_UV_Protect": 40.0,
    "Pack_UVP_Release": 46.4,
    "Pack_UVP_Delay_Time": 1000,
    "Charge_OC_Alarm": 105,
    "Charge_OC_Protect": 110,
    "Charge_OCP_Delay_Time": 5000,
    "Discharge_OC_Alarm": 105,
    "Discharge_OC_1_Protect": 125,
    "Discharge_OC_1_Delay_Time": 10000,
    "Discharge_OC_2_Protect": 150,
    "Discharge_OC_2_Delay_Time": 500,
    "Short_Circuit_Delay_Time": 300,
    "Balance_Threshold": 3.45,
    "Balance_Delta_Cell": 30,
    "Sleep_V_Cell": 3.15,
    "Sleep_Delay_Time": 60,
    "Pack_Full_Charge_Voltage": 56.0,
    "Pack_Full_Charge_Current": 2000,
    "State_of_Charge_Low_Alarm": 10,
    "Charge_OT_Alarm": 55.0,
    "Charge_OT_Protect": 60.0,
    "Charge_OTP_Release": 50.0,
    "Discharge_OT_Alarm": 60.0,
    "Discharge_OT_Protect": 65.0,
    "Discharge_OTP_Release": 55.0,
    "Charge_UT_Alarm": 2.0,
    "Charge_UT_Protect": 0.0,
    "Charge_UTP_Release": 5.0,
    "Discharge_UT_Alarm": -15.0,
    "Discharge_UT_Protect": -20.0,
    "Discharge_UTP_Release": -10.0,
    "MOS_OT_Alarm": 95.0,
    "MOS_OT_Protect": 110.0,
    "MOS_OTP_Release": 85.0,
    "Env_UT_Alarm": -15.0,
    "Env_UT_Protect": -20.0,
    "Env_UTP_Release": -10.0,
    "Env_OT_Alarm": 60.0,
    "Env_OT_Protect": 65.0,
    "Env_OTP_Release": 55.0,
    "Charge_Current_Limiter_Start_Current": 10,
}

TEMP_DELAY_S = 4.0  # PACE has no temperature delay parameters: the simulator's choice
HYST_CELL_V, HYST_PACK_V, HYST_CURRENT_A, HYST_TEMP_C, HYST_SOC_PCT = 0.05, 0.8, 5.0, 5.0, 5.0

# condition -> (start, release, delay parameter or None) for protections; release None = timed.
PROTECTIONS: dict[str, tuple[str, str | None, str | None]] = {
    "cell_ov": ("Cell_OV_Protect", "Cell_OVP_Release", "Cell_OVP_Delay_Time"),
    "pack_ov": ("Pack_OV_Protect", "Pack_OVP_Release", "Pack_OVP_Delay_Time"),
    "cell_uv": ("Cell_UV_Protect", "Cell_UVP_Release", "Cell_UVP_Delay_Time"),
    "pack_uv": ("Pack_UV_Protect", "Pack_UVP_Release", "Pack_UVP_Delay_Time"),
    "chg_oc1": ("Charge_OC_Protect", None, "Charge_OCP_Delay_Time"),
    "dsg_oc1": ("Discharge_OC_1_Protect", None, "Discharge_OC_1_Delay_Time"),
    "dsg_oc2": ("Discharge_OC_2_Protect", None, "Discharge_OC_2_Delay_Time"),
    "chg_ot": ("Charge_OT_Protect", "Charge_OTP_Release", None),
    "dsg_ot": ("Discharge_OT_Protect", "Discharge_OTP_Release", None),
    "chg_ut": ("Charge_UT_Protect", "Charge_UTP_Release", None),
    "dsg_ut": ("Discharge_UT_Protect", "Discharge_UTP_Release", None),
    "mos_ot": ("MOS_OT_Protect", "MOS_OTP_Release", None),
    "env_ut": ("Env_UT_Protect", "Env_UTP_Release", None),
    "env_ot": ("Env_OT_Protect", "Env_OTP_Release", None),
}
# condition -> (start, hysteresis towards release, delay parameter or None)
ALARMS: dict[str, tuple[str, float, str | None]] = {
    "cell_ov": ("Cell_OV_Alarm", -HYST_CELL_V, "Cell_OVP_Delay_Time"),
    "pack_ov": ("Pack_OV_Alarm", -HYST_PACK_V, "Pack_OVP_Delay_Time"),
    "cell_uv": ("Cell_UV_Alarm", HYST_CELL_V, "Cell_UVP_Delay_Time"),
    "pack_uv": ("Pack_UV_Alarm", HYST_PACK_V, "Pack_UVP_Delay_Time"),
    "chg_oc": ("Charge_OC_Alarm", -HYST_CURRENT_A, "Charge_OCP_Delay_Time"),
    "dsg_oc": ("Discharge_OC_Alarm", -HYST_CURRENT_A, "Discharge_OC_1_Delay_Time"),
    "chg_ot": ("Charge_OT_Alarm", -HYST_TEMP_C, None),
    "dsg_ot": ("Discharge_OT_Alarm", -HYST_TEMP_C, None),
    "chg_ut": ("Charge_UT_Alarm", HYST_TEMP_C, None),
    "dsg_ut": ("Discharge_UT_Alarm", HYST_TEMP_C, None),
    "mos_ot": ("MOS_OT_Alarm", -HYST_TEMP_C, None),
    "env_ut": ("Env_UT_Alarm", HYST_TEMP_C, None),
    "env_ot": ("Env_OT_Alarm", -HYST_TEMP_C, None),
    "soc_low": ("State_of_Charge_Low_Alarm", HYST_SOC_PCT, None),
}
ABOVE = {"cell_ov", "pack_ov", "chg_oc", "chg_oc1", "dsg_oc", "dsg_oc1", "dsg_oc2", "chg_ot", "dsg_ot",
         "mos_ot", "env_ot"}  # fmt: skip


class PaceModel:
    name = "pace"
    cells = 16
    temps = 4
    temp_decimals = 1
    refuses_both_mos_off = True  # reference 3.C.1: the BMS refuses to turn both MOSFETs off
    remaining_from_soc = False
    soc_from_capacities = True
    capacity_parameters: tuple[str, str] | None = None

    def __init__(self, version: int = 0x25) -> None:
        self.version = version
        self.voltage_decimals = 3 if version == 0x25 else 2
        self.table: ParameterTable = load_table("pace")
        # (read CID2, field index) -> parameter; fields without one (sleep "reserved") read as 0.
        self.by_field: dict[tuple[int, int], ParamSpec] = {
            (int(p.wire["read"]), int(p.wire["field"])): p for p in self.table if "read" in p.wire
        }

    def default_parameters(self) -> dict[str, float]:
        return {p.name: p.validate(DEFAULTS[p.name]) for p in self.table if "read" in p.wire}

    def validate_parameter(self, name: str, value: float) -> float:
        if name not in self.table:
            raise ParameterValueError(name, value, f"pace: unknown parameter {name!r}")
        return self.table.get(name).validate(value)

    def rules(self, p: Mapping[str, float]) -> list[RuleSpec]:
        out: list[RuleSpec] = []
        for key, (start, release, delay) in PROTECTIONS.items():
            s = p[start]
            stop = None
            if release is not None:
                stop = min(p[release], s) if key in ABOVE else max(p[release], s)
            out.append(
                RuleSpec(key, Kind.PROTECTION, s, stop, TEMP_DELAY_S if delay is None else p[delay] / 1000.0)
            )
        for key, (start, hysteresis, delay) in ALARMS.items():
            s = p[start]
            d = (2.0 if key == "soc_low" else TEMP_DELAY_S) if delay is None else p[delay] / 1000.0
            out.append(RuleSpec(key, Kind.ALARM, s, s + hysteresis, d))
        return out

    def balance(self, params: Mapping[str, float]) -> tuple[float | None, float | None]:
        return params["Balance_Threshold"], params["Balance_Delta_Cell"] / 1000.0

    def full_charge_cell_v(self, params: Mapping[str, float]) -> float:
        return params["Pack_Full_Charge_Voltage"] / self.cells
