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
    "Cell OV Alarm": 3.60,
    "Cell OV Protect": 3.70,
    "Cell OVP Release": 3.38,
    "Cell OVP Delay Time": 1000,
    "Pack OV Alarm": 57.6,
    "Pack OV Protect": 59.2,
    "Pack OVP Release": 54.0,
    "Pack OVP Delay Time": 1000,
    "Cell UV Alarm": 2.80,
    "Cell UV Protect": 2.50,
    "Cell UVP Release": 2.90,
    "Cell UVP Delay Time": 1000,
    "Pack UV Alarm": 44.8,
    "Pack UV Protect": 40.0,
    "Pack UVP Release": 46.4,
    "Pack UVP Delay Time": 1000,
    "Charge OC Alarm": 105,
    "Charge OC Protect": 110,
    "Charge OCP Delay Time": 5000,
    "Discharge OC Alarm": 105,
    "Discharge OC 1 Protect": 125,
    "Discharge OC 1 Delay Time": 10000,
    "Discharge OC 2 Protect": 150,
    "Discharge OC 2 Delay Time": 500,
    "Short Circuit Delay Time": 300,
    "Balance Threshold": 3.45,
    "Balance Delta Cell": 30,
    "Sleep V-Cell": 3.15,
    "Sleep Delay Time": 60,
    "Pack Full Charge Voltage": 56.0,
    "Pack Full Charge Current": 2000,
    "State of Charge Low Alarm": 10,
    "Charge OT Alarm": 55.0,
    "Charge OT Protect": 60.0,
    "Charge OTP Release": 50.0,
    "Discharge OT Alarm": 60.0,
    "Discharge OT Protect": 65.0,
    "Discharge OTP Release": 55.0,
    "Charge UT Alarm": 2.0,
    "Charge UT Protect": 0.0,
    "Charge UTP Release": 5.0,
    "Discharge UT Alarm": -15.0,
    "Discharge UT Protect": -20.0,
    "Discharge UTP Release": -10.0,
    "MOS OT Alarm": 95.0,
    "MOS OT Protect": 110.0,
    "MOS OTP Release": 85.0,
    "Env UT Alarm": -15.0,
    "Env UT Protect": -20.0,
    "Env UTP Release": -10.0,
    "Env OT Alarm": 60.0,
    "Env OT Protect": 65.0,
    "Env OTP Release": 55.0,
    "Charge Current Limiter Start Current": 10,
}

TEMP_DELAY_S = 4.0  # PACE has no temperature delay parameters: the simulator's choice
HYST_CELL_V, HYST_PACK_V, HYST_CURRENT_A, HYST_TEMP_C, HYST_SOC_PCT = 0.05, 0.8, 5.0, 5.0, 5.0

# condition -> (start, release, delay parameter or None) for protections; release None = timed.
PROTECTIONS: dict[str, tuple[str, str | None, str | None]] = {
    "cell_ov": ("Cell OV Protect", "Cell OVP Release", "Cell OVP Delay Time"),
    "pack_ov": ("Pack OV Protect", "Pack OVP Release", "Pack OVP Delay Time"),
    "cell_uv": ("Cell UV Protect", "Cell UVP Release", "Cell UVP Delay Time"),
    "pack_uv": ("Pack UV Protect", "Pack UVP Release", "Pack UVP Delay Time"),
    "chg_oc1": ("Charge OC Protect", None, "Charge OCP Delay Time"),
    "dsg_oc1": ("Discharge OC 1 Protect", None, "Discharge OC 1 Delay Time"),
    "dsg_oc2": ("Discharge OC 2 Protect", None, "Discharge OC 2 Delay Time"),
    "chg_ot": ("Charge OT Protect", "Charge OTP Release", None),
    "dsg_ot": ("Discharge OT Protect", "Discharge OTP Release", None),
    "chg_ut": ("Charge UT Protect", "Charge UTP Release", None),
    "dsg_ut": ("Discharge UT Protect", "Discharge UTP Release", None),
    "mos_ot": ("MOS OT Protect", "MOS OTP Release", None),
    "env_ut": ("Env UT Protect", "Env UTP Release", None),
    "env_ot": ("Env OT Protect", "Env OTP Release", None),
}
# condition -> (start, hysteresis towards release, delay parameter or None)
ALARMS: dict[str, tuple[str, float, str | None]] = {
    "cell_ov": ("Cell OV Alarm", -HYST_CELL_V, "Cell OVP Delay Time"),
    "pack_ov": ("Pack OV Alarm", -HYST_PACK_V, "Pack OVP Delay Time"),
    "cell_uv": ("Cell UV Alarm", HYST_CELL_V, "Cell UVP Delay Time"),
    "pack_uv": ("Pack UV Alarm", HYST_PACK_V, "Pack UVP Delay Time"),
    "chg_oc": ("Charge OC Alarm", -HYST_CURRENT_A, "Charge OCP Delay Time"),
    "dsg_oc": ("Discharge OC Alarm", -HYST_CURRENT_A, "Discharge OC 1 Delay Time"),
    "chg_ot": ("Charge OT Alarm", -HYST_TEMP_C, None),
    "dsg_ot": ("Discharge OT Alarm", -HYST_TEMP_C, None),
    "chg_ut": ("Charge UT Alarm", HYST_TEMP_C, None),
    "dsg_ut": ("Discharge UT Alarm", HYST_TEMP_C, None),
    "mos_ot": ("MOS OT Alarm", -HYST_TEMP_C, None),
    "env_ut": ("Env UT Alarm", HYST_TEMP_C, None),
    "env_ot": ("Env OT Alarm", -HYST_TEMP_C, None),
    "soc_low": ("State of Charge Low Alarm", HYST_SOC_PCT, None),
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
        return params["Balance Threshold"], params["Balance Delta Cell"] / 1000.0

    def full_charge_cell_v(self, params: Mapping[str, float]) -> float:
        return params["Pack Full Charge Voltage"] / self.cells
