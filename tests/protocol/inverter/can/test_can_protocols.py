"""Contract tests over every registered inverter CAN protocol (sans-I/O, no bus).

Frames are decoded with cantools from the DBC files *as shipped* (loaded by path here, not through
our loader) and compared with the decision; byte order is checked on raw bytes; the real Pylontech
captures of the reference decode as documented and are reproduced byte for byte.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.policy.engine import ChargeDecision
from mappings.flags import load_outputs
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.inverter.can import dbc, registry
from protocol.inverter.can.base import CanFrame, InverterProtocol
from tests.support import REPO
from tests.support.can_policy_fixtures import decision

ROOT = REPO
DBC_DIR = ROOT / "mappings" / "can"
NOW = 1_800_000_000.0
ALL = registry.names()

# A decision with distinctive values in every field an encoder reads.
D = decision(
    charge_voltage_v=55.2,
    discharge_voltage_v=46.4,
    charge_current_a=123.4,
    discharge_current_a=98.7,
    soc_pct=63.4,
    soh_pct=97.0,
    voltage_v=52.86,
    current_a=-27.3,
    temperature_c=23.4,
    cell_max_v=3.312,
    cell_min_v=3.296,
    cell_max_id="bus1/2/7",
    cell_min_id="bus1/1/3",
    temp_max_c=26.1,
    temp_min_c=21.5,
    temp_max_id="bus1/2/2",
    temp_min_id="bus1/1/4",
    full_capacity_ah=280.0,
    remaining_capacity_ah=177.5,
    cycles=321,
    packs_online=2,
    packs_configured=3,
    warnings=frozenset({"communication"}),  # one pack of three offline
)


def shipped(protocol: InverterProtocol) -> cantools.database.can.Database:
    files = {"pylon-hv": "pylon_hv.dbc"}
    db = cantools.database.load_file(str(DBC_DIR / files.get(protocol.name, protocol.dbc_file)), strict=True)
    assert isinstance(db, cantools.database.can.Database)
    return db


def frames_of(protocol: InverterProtocol, state: ChargeDecision, now: float = NOW) -> list[CanFrame]:
    """Everything the protocol sends for `state`: cyclic frames and the answers to its inverter's frames."""
    frames = list(protocol.due(state, now))
    for request in (
        CanFrame(0x301, bytes.fromhex("1122334455667788")),
        CanFrame(0x4200, bytes(8), True),
        CanFrame(0x4200, b"\x02" + bytes(7), True),
        CanFrame(0x151, b"\x01" + bytes(7)),
    ):
        frames += protocol.on_frame(request, state, now).frames
    frames += protocol.due(state, now)  # BYD: cyclic frames once the inverter spoke
    return frames


def decoded(protocol: InverterProtocol, state: ChargeDecision) -> dict[str, dict[str, float]]:
    db = shipped(protocol)
    out: dict[str, dict[str, float]] = {}
    for f in frames_of(protocol, state):
        msg = db.get_message_by_frame_id(protocol.dbc_id(f) | (0x80000000 if f.is_extended else 0))
        assert msg.is_extended_frame == f.is_extended
        values = msg.decode(f.data, decode_choices=False)
        assert isinstance(values, dict)
        out.setdefault(msg.name, {k: float(v) for k, v in values.items()})  # type: ignore[arg-type]
    return out


def test_registry_lists_every_protocol_of_the_issue() -> None:
    assert set(ALL) == {
        "pylon", "pylon-v2", "deye", "goodwe", "sofar", "solark", "luxpower",
        "sma", "victron", "growatt", "schneider", "pylon-hv", "byd",
    }  # fmt: skip
    with pytest.raises(KeyError, match="known: byd"):
        registry.get("nope")


@pytest.mark.parametrize("path", sorted(DBC_DIR.glob("*.dbc")), ids=lambda p: p.name)
def test_every_shipped_dbc_loads_strictly(path: Path) -> None:
    db = cantools.database.load_file(str(path), strict=True)
    assert isinstance(db, cantools.database.can.Database) and db.messages


@pytest.mark.parametrize("name", ALL)
def test_protocol_contract(name: str) -> None:
    protocol = registry.create(name, flag_outputs=load_outputs())
    assert protocol.title and protocol.dbc_file
    db_names = {m.name for m in protocol.db.messages}
    assert set(protocol.messages_sent()) <= db_names
    for message in protocol.messages_sent():
        frame = protocol.encode(message, D, NOW)
        msg = protocol.db.get_message_by_name(message)
        assert len(frame.data) == msg.length
        assert frame.is_extended == msg.is_extended_frame
    sent = frames_of(protocol, D)
    assert sent, "every protocol answers or sends something for a decision"
    # every frame decodes with our own decoder too
    for f in sent:
        name_, values = dbc.decode(protocol.db, CanFrame(protocol.dbc_id(f), f.data, f.is_extended))
        assert name_ in db_names and values


Expect = tuple[str, str, Callable[[ChargeDecision], float], float]
PYLON: list[Expect] = [
    ("Limits", "ChargeVoltageLimit", lambda d: d.charge_voltage_v, 0.05),
    ("Limits", "ChargeCurrentLimit", lambda d: d.charge_current_a, 0.05),
    ("Limits", "DischargeCurrentLimit", lambda d: d.discharge_current_a, 0.05),
    ("Limits", "DischargeVoltageLimit", lambda d: d.discharge_voltage_v, 0.05),
    ("SocSoh", "SOC", lambda d: round(d.bank.soc_pct), 0),
    ("SocSoh", "SOH", lambda d: round(d.bank.soh_pct), 0),
    ("Measurements", "Voltage", lambda d: d.bank.voltage_v, 0.005),
    ("Measurements", "Current", lambda d: d.bank.current_a, 0.05),
    ("Request", "ChargeEnable", lambda d: 1, 0),
    ("Request", "DischargeEnable", lambda d: 1, 0),
    ("ProtectionAlarm", "ModuleCount", lambda d: d.bank.packs_online, 0),
]
TEMP = [("Measurements", "Temperature", lambda d: d.bank.temp_mean_c, 0.05)]
SMA_LIKE: list[Expect] = [
    *PYLON[:8],
    *TEMP,
    ("SocSoh", "SOCHiRes", lambda d: d.bank.soc_pct, 0.005),
    ("AlarmsWarnings", "AlarmGeneral", lambda d: 2, 0),
    ("AlarmsWarnings", "WarningBmsInternal", lambda d: 1, 0),  # a pack is offline: communication warning
]
VICTRON_EXTRAS: list[Expect] = [
    ("ModuleCounts", "ModulesOnline", lambda d: 2, 0),
    ("ModuleCounts", "ModulesOffline", lambda d: 1, 0),
    ("CellExtremes", "MaxCellVoltage", lambda d: d.bank.cell_max.value, 0.0005),
    ("CellExtremes", "MinCellTemperature", lambda d: d.bank.temp_min.value, 0.5),
    ("InstalledCapacity", "InstalledCapacityAh", lambda d: 280, 0),
    ("MaxCellVoltageId", "Id0", lambda d: ord("b"), 0),
]
EXPECTATIONS: dict[str, list[Expect]] = {
    "pylon": PYLON + TEMP,
    "deye": PYLON + TEMP,
    "goodwe": PYLON + TEMP,
    "sofar": PYLON + TEMP,
    "pylon-v2": PYLON + TEMP + VICTRON_EXTRAS + [("SocSoh", "SOCHiRes", lambda d: d.bank.soc_pct, 0.005)],
    "solark": [e for e in PYLON if e[1] != "Voltage"]
    + TEMP
    + [
        ("Measurements", "Voltage", lambda d: d.bank.voltage_v, 0.05),  # 0.1 V on Sol-Ark
        ("BankCapacity", "CapacityAh", lambda d: 280, 0),
    ],
    "luxpower": [
        *PYLON,
        ("SocSoh", "MaxCellVoltage", lambda d: d.bank.cell_max.value, 0.0005),
        ("SocSoh", "MinCellVoltage", lambda d: d.bank.cell_min.value, 0.0005),
        ("Measurements", "MaxCellTemperature", lambda d: d.bank.temp_max.value, 0.05),
        ("Measurements", "MinCellTemperature", lambda d: d.bank.temp_min.value, 0.05),
        ("ProtectionAlarm", "CapacityAh", lambda d: 280, 0),
        ("Request", "CycleCount", lambda d: 321, 0),
    ],
    "sma": [*SMA_LIKE, ("BatteryInfo", "CapacityAh", lambda d: 280, 0)],
    "victron": SMA_LIKE + VICTRON_EXTRAS,
    "growatt": [
        ("Limits", "ChargeVoltage", lambda d: d.charge_voltage_v, 0.05),
        ("Limits", "ChargeCurrentLimit", lambda d: d.charge_current_a, 0.05),
        ("Limits", "DischargeCurrentLimit", lambda d: d.discharge_current_a, 0.05),
        ("Limits", "State", lambda d: 3, 0),  # discharging
        ("Limits", "ChargeEnabled", lambda d: 1, 0),
        ("Measurements", "Voltage", lambda d: d.bank.voltage_v, 0.005),
        ("Measurements", "Current", lambda d: d.bank.current_a, 0.05),
        ("Measurements", "SOC", lambda d: round(d.bank.soc_pct), 0),
        ("Measurements", "SOH", lambda d: round(d.bank.soh_pct), 0),
        ("Measurements", "MaxCellTemperature", lambda d: d.bank.temp_max.value, 0.05),
        ("Capacity", "RemainingCapacity", lambda d: 177.5, 0.005),
        ("Capacity", "FullCapacity", lambda d: 280.0, 0.005),
        ("Capacity", "CycleCount", lambda d: 321, 0),
        ("Request", "MaxCellVoltage", lambda d: d.bank.cell_max.value, 0.0005),
        ("Request", "MaxCellNumber", lambda d: 7, 0),
        ("ProtectionWarning", "PackCount", lambda d: 2, 0),
        ("ProtectionWarning", "WarnInternalCommFail", lambda d: 1, 0),
    ],
    "schneider": [
        ("VoltageLimits", "MaxChargeVoltage", lambda d: d.charge_voltage_v, 0.005),
        ("VoltageLimits", "MinDischargeVoltage", lambda d: d.discharge_voltage_v, 0.005),
        ("CurrentLimits", "MaxChargeCurrent", lambda d: d.charge_current_a, 0.005),
        ("CurrentLimits", "MaxDischargeCurrent", lambda d: d.discharge_current_a, 0.005),
        ("Measurements", "Voltage", lambda d: d.bank.voltage_v, 0.005),
        ("Measurements", "Current", lambda d: d.bank.current_a, 0.005),
        ("TemperatureSoc", "SOC", lambda d: d.bank.soc_pct, 0.05),
        ("Status", "ChargePermitted", lambda d: 1, 0),
        ("Status", "Stop", lambda d: 0, 0),
        ("State", "CycleCount", lambda d: 321, 0),
        ("CellExtremes", "MinCellVoltage", lambda d: d.bank.cell_min.value, 0.0005),
    ],
    "pylon-hv": [
        ("SystemData", "Voltage", lambda d: d.bank.voltage_v, 0.05),
        ("SystemData", "Current", lambda d: d.bank.current_a, 0.05),
        ("SystemData", "BmsTemperature", lambda d: d.bank.temp_mean_c, 0.05),
        ("SystemData", "SOC", lambda d: round(d.bank.soc_pct), 0),
        ("Limits", "ChargeCutoffVoltage", lambda d: d.charge_voltage_v, 0.05),
        ("Limits", "MaxChargeCurrent", lambda d: d.charge_current_a, 0.05),
        ("Limits", "MaxDischargeCurrent", lambda d: -d.discharge_current_a, 0.05),
        ("CellVoltages", "MinCellNumber", lambda d: 3, 0),
        ("CellTemperatures", "MaxCellTemperature", lambda d: d.bank.temp_max.value, 0.05),
        ("Forbid", "ChargeForbidden", lambda d: 0, 0),
        ("Composition", "CapacityAh", lambda d: 280, 0),
    ],
    "byd": [
        ("Limits", "MaxChargeVoltage", lambda d: d.charge_voltage_v, 0.05),
        ("Limits", "MinDischargeVoltage", lambda d: d.discharge_voltage_v, 0.05),
        ("Limits", "MaxChargeCurrent", lambda d: d.charge_current_a, 0.05),
        ("Limits", "MaxDischargeCurrent", lambda d: d.discharge_current_a, 0.05),
        ("SocSoh", "SOC", lambda d: d.bank.soc_pct, 0.005),
        ("SocSoh", "FullCapacity", lambda d: 280.0, 0.05),
        ("Measurements", "Current", lambda d: d.bank.current_a, 0.05),
        ("Temperatures", "MinTemperature", lambda d: d.bank.temp_min.value, 0.05),
        ("Identity", "CapacityKwh", lambda d: 280.0 * d.bank.voltage_v / 1000, 0.05),
    ],
}


@pytest.mark.parametrize("name", ALL)
def test_frames_decode_through_the_shipped_dbc_to_the_decision(name: str) -> None:
    protocol = registry.create(name, flag_outputs=load_outputs())
    values = decoded(protocol, D)
    expectations = EXPECTATIONS[name]
    assert expectations
    for message, signal, expected, tol in expectations:
        assert message in values, f"{name}: {message} not sent"
        assert values[message][signal] == pytest.approx(expected(D), abs=tol + 1e-9), (name, message, signal)


STOP_CURRENT = {"sofar": 0.1}


@pytest.mark.parametrize("name", ALL)
def test_stale_data_gives_the_stop_encoding_with_alarm_bits(name: str) -> None:
    protocol = registry.create(name, flag_outputs=load_outputs())
    stale = D.as_stale(NOW)
    values = decoded(protocol, stale)
    flat = {f"{m}.{s}": v for m, sig in values.items() for s, v in sig.items()}
    currents = [
        v for k, v in flat.items() if k.split(".")[0] in ("Limits", "CurrentLimits") and "Current" in k
    ]
    assert currents and all(abs(c) == pytest.approx(STOP_CURRENT.get(name, 0.0)) for c in currents), flat
    cvl = [
        v
        for k, v in flat.items()
        if k in ("Limits.ChargeVoltageLimit", "Limits.ChargeVoltage", "VoltageLimits.MaxChargeVoltage")
        or k in ("Limits.MaxChargeVoltage", "Limits.ChargeCutoffVoltage")
    ]
    expected_cvl = 0.1 if name == "sofar" else D.bank.voltage_v  # never 0; Sofar ignores 0 (0.1 V / 0.1 A)
    assert cvl and all(v == pytest.approx(expected_cvl, abs=0.051) for v in cvl), (name, cvl)
    alarm_signals = {
        "pylon": (
            "ProtectionAlarm.ProtSystemError",
            "ProtectionAlarm.AlarmInternalCommFail",
            "Request.ChargeEnable",
        ),
        "sma": ("AlarmsWarnings.AlarmBmsInternal", "AlarmsWarnings.AlarmGeneral"),
        "growatt": (
            "ProtectionWarning.ProtSystemError",
            "ProtectionWarning.WarnInternalCommFail",
            "Limits.ErrorValid",
        ),
        "schneider": ("Status.Stop",),
        "pylon-hv": ("Status.FaultWord",),
        "byd": ("Alarms.AlarmByte",),
    }
    family = {
        "deye": "pylon", "goodwe": "pylon", "sofar": "pylon", "solark": "pylon", "luxpower": "pylon",
        "pylon-v2": "pylon", "victron": "sma",
    }.get(name, name)  # fmt: skip
    for key in alarm_signals[family]:
        if key == "Request.ChargeEnable":
            assert flat[key] == 0 and flat["Request.DischargeEnable"] == 0
        else:
            assert flat[key] == 1, (name, key)
    if name == "pylon-hv":
        assert flat["Forbid.ChargeForbidden"] == 0xAA and flat["Forbid.DischargeForbidden"] == 0xAA
    if name == "schneider":
        assert flat["Status.Faults"] == 1 << 7 and flat["State.State"] == 4


@pytest.mark.parametrize("name", ["pylon", "victron", "deye", "growatt", "byd"])
def test_one_blocked_direction_keeps_the_other(name: str) -> None:
    protocol = registry.create(name, flag_outputs=load_outputs())
    values = decoded(protocol, decision(charge_enabled=False, charge_current_a=0.0, voltage_v=53.1))
    limits = values["Limits"]
    ccl = limits.get("ChargeCurrentLimit", limits.get("MaxChargeCurrent"))
    dcl = limits.get("DischargeCurrentLimit", limits.get("MaxDischargeCurrent"))
    cvl = limits.get("ChargeVoltageLimit", limits.get("ChargeVoltage", limits.get("MaxChargeVoltage")))
    assert ccl == 0 and dcl == pytest.approx(180.0)
    assert cvl == pytest.approx(53.1)  # present voltage, never 0


# -- byte order -------------------------------------------------------------------------------------
def raw(name: str, dbc_id: int, state: ChargeDecision = D, **options: object) -> bytes:
    protocol = registry.create(name, options, flag_outputs=load_outputs())  # type: ignore[arg-type]
    for f in frames_of(protocol, state):
        if protocol.dbc_id(f) == dbc_id:
            return f.data
    raise AssertionError(f"{name} sent no {dbc_id:#x}")


def test_byte_order_little_endian_family() -> None:
    # CVL 55.2 V = 552 = 0x0228; CCL 123.4 A = 1234 = 0x04D2 in bytes 2-3 (SMA: not swapped with DCL)
    for name in ("pylon", "deye", "goodwe", "pylon-v2", "solark", "luxpower", "sma", "victron"):
        assert raw(name, 0x351)[:4] == bytes.fromhex("2802D204"), name


def test_byte_order_big_endian_family() -> None:
    assert raw("growatt", 0x311)[:6] == bytes.fromhex("022804D203DB")
    assert raw("byd", 0x110)[:4] == bytes.fromhex("022801D0")  # 55.2 V, 46.4 V
    assert raw("schneider", 0x321) == (5520).to_bytes(4, "big") + (4640).to_bytes(4, "big")
    assert raw("schneider", 0x323)[4:] == (-2730).to_bytes(4, "big", signed=True)


def test_pylon_hv_byte_order_and_offset_options() -> None:
    big = raw("pylon-hv", 0x4210)
    little = raw("pylon-hv", 0x4210, byte_order="little")
    assert big[:2] == (529).to_bytes(2, "big") and little[:2] == (529).to_bytes(2, "little")
    assert big[2:4] == (30000 - 273).to_bytes(2, "big")  # 30000 offset, -27.3 A
    no_offset = raw("pylon-hv", 0x4210, current_offset=False)
    assert no_offset[2:4] == (-273).to_bytes(2, "big", signed=True)
    assert big[4:6] == (1234).to_bytes(2, "big")  # 23.4 degC + 100 degC offset, 0.1 degC
    protocol = registry.create("pylon-hv", {"address": 1}, flag_outputs=load_outputs())
    ids = {f.arbitration_id for f in protocol.on_frame(CanFrame(0x4200, bytes(8), True), D, NOW).frames}
    assert ids == {0x4211, 0x4221, 0x4231, 0x4241, 0x4251, 0x4281}


# -- the real Pylontech captures (reference 1.6) -----------------------------------------------------
CAPTURES = [
    (
        "pylon.dbc",
        0x351,
        "14 02 74 0E 74 0E CC 01",
        {
            "ChargeVoltageLimit": 53.2,
            "ChargeCurrentLimit": 370.0,
            "DischargeCurrentLimit": 370.0,
            "DischargeVoltageLimit": 46.0,
        },
    ),
    ("pylon.dbc", 0x355, "1A 00 64 00", {"SOC": 26, "SOH": 100}),
    (
        "pylon.dbc",
        0x359,
        "00 00 00 00 0A 50 4E",
        {
            "ModuleCount": 10,
            "TagP": ord("P"),
            "TagN": ord("N"),
            "ProtCellOverVoltage": 0,
            "ProtSystemError": 0,
        },
    ),
    (
        "pylon.dbc",
        0x35C,
        "C0 00",
        {
            "ChargeEnable": 1,
            "DischargeEnable": 1,
            "ForceChargeRequest1": 0,
            "ForceChargeRequest2": 0,
            "FullChargeRequest": 0,
        },
    ),
    (
        "pylon.dbc",
        0x35E,
        "50 59 4C 4F 4E 20 20 20",
        {"Name0": ord("P"), "Name4": ord("N"), "Name7": ord(" ")},
    ),
    ("pylon.dbc", 0x356, "7A 13 F2 FE 6B 01", {"Voltage": 49.86, "Current": -27.0, "Temperature": 36.3}),
    (
        "pylon.dbc",
        0x351,
        "14 02 C0 12 C0 12 C2 01",
        {
            "ChargeVoltageLimit": 53.2,
            "ChargeCurrentLimit": 480.0,
            "DischargeCurrentLimit": 480.0,
            "DischargeVoltageLimit": 45.0,
        },
    ),
    ("pylon_v2.dbc", 0x355, "54 00 60 00 00 00", {"SOC": 84, "SOH": 96}),
    ("pylon_v2.dbc", 0x35A, "00 00 00 00 00 00 00 00", {"AlarmGeneral": 0, "WarningCellImbalance": 0}),
    ("pylon_v2.dbc", 0x35F, "4C 49 01 03 3C 02 AA 00", {"BatteryType": 0x494C, "CapacityAh": 572}),
]


@pytest.mark.parametrize(("file", "ident", "data", "expected"), CAPTURES)
def test_real_pylontech_captures_decode_as_documented(
    file: str, ident: int, data: str, expected: dict[str, float]
) -> None:
    db = cantools.database.load_file(str(DBC_DIR / file), strict=True)
    assert isinstance(db, cantools.database.can.Database)
    values = db.decode_message(ident, bytes.fromhex(data), decode_choices=False)
    assert isinstance(values, dict)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value), key


def test_pylon_reproduces_the_real_capture_byte_for_byte() -> None:
    protocol = registry.create("pylon", {"module_count": 10}, flag_outputs=load_outputs())
    state = decision(
        charge_voltage_v=53.2,
        charge_current_a=370.0,
        discharge_current_a=370.0,
        discharge_voltage_v=46.0,
        soc_pct=26.0,
        soh_pct=100.0,
        voltage_v=49.86,
        current_a=-27.0,
        temperature_c=36.3,
        alarms=frozenset(),
        warnings=frozenset(),
    )
    frames = {f.arbitration_id: f.data for f in protocol.due(state, NOW)}
    assert frames[0x351] == bytes.fromhex("1402740E740ECC01")
    assert frames[0x355] == bytes.fromhex("1A006400")
    assert frames[0x356] == bytes.fromhex("7A13F2FE6B01")
    assert frames[0x359] == bytes.fromhex("000000000A504E")
    assert frames[0x35C] == bytes.fromhex("C000")
    assert frames[0x35E] == b"PYLON   "


def test_pylon_0x359_bit_positions_follow_the_document() -> None:
    protocol = registry.create("pylon", flag_outputs=load_outputs())
    cases = {
        "cell_overvoltage": (0, 0x02),
        "cell_undervoltage": (0, 0x04),
        "charge_overtemperature": (0, 0x08),
        "charge_undertemperature": (0, 0x10),
        "discharge_overcurrent": (0, 0x80),
        "charge_overcurrent": (1, 0x01),
        "fan_fault": (1, 0x08),
    }
    for flag, (byte, mask) in cases.items():
        data = protocol.encode(
            "ProtectionAlarm", decision(alarms=frozenset({flag}), warnings=frozenset()), NOW
        ).data
        assert data[byte] == mask and data[1 - byte] == 0, flag
        warn = protocol.encode(
            "ProtectionAlarm", decision(alarms=frozenset(), warnings=frozenset({flag})), NOW
        ).data
        if flag != "fan_fault":  # a system error has no warning bit on 0x359
            assert warn[2 + byte] == mask and warn[:2] == b"\x00\x00", flag


# -- cadence rules (time stepped, no bus) --------------------------------------------------------------
def run_schedule(protocol: InverterProtocol, seconds: float, step: float = 0.01) -> dict[int, list[float]]:
    times: dict[int, list[float]] = defaultdict(list)
    t = NOW
    while t < NOW + seconds:
        for f in protocol.due(D, t):
            times[f.arbitration_id].append(t - NOW)
        t += step
    return times


@pytest.mark.parametrize("name", ["pylon", "deye", "goodwe", "sofar", "solark", "luxpower", "pylon-v2"])
def test_pylon_family_sends_the_whole_set_every_second(name: str) -> None:
    times = run_schedule(registry.create(name, flag_outputs=load_outputs()), 5.0)
    assert {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= set(times)
    assert all(len(v) == 5 for v in times.values())
    assert all(
        b - a == pytest.approx(1.0, abs=0.011) for v in times.values() for a, b in itertools.pairwise(v)
    )


def test_sma_respects_the_inhibit_time() -> None:
    times = run_schedule(registry.create("sma", flag_outputs=load_outputs()), 5.0)
    assert {0x351, 0x355, 0x356, 0x35A, 0x35B, 0x35E, 0x35F} == set(times)
    gaps = [b - a for v in times.values() for a, b in itertools.pairwise(v)]
    assert gaps and min(gaps) >= 0.2
    assert all(len(v) >= 9 for v in times.values())  # every 500 ms


def test_victron_repeats_0x351_well_within_3_s() -> None:
    times = run_schedule(registry.create("victron", flag_outputs=load_outputs()), 10.0)
    gaps = [b - a for a, b in zip(times[0x351], times[0x351][1:], strict=False)]
    assert len(times[0x351]) >= 9 and max(gaps) < 3.0


def test_schneider_groups_and_29_bit_ids() -> None:
    protocol = registry.create("schneider", flag_outputs=load_outputs())
    times = run_schedule(protocol, 10.0)
    assert len(times[0x321]) == 20 and len(times[0x326]) == 5 and len(times[0x333]) == 1
    assert all(f.is_extended for f in protocol.due(D, NOW + 100))


def test_byd_is_silent_until_the_inverter_speaks() -> None:
    protocol = registry.create("byd", flag_outputs=load_outputs())
    assert run_schedule(protocol, 5.0) == {}
    assert protocol.next_due(NOW) is None
    r = protocol.on_frame(CanFrame(0x091, bytes(8)), D, NOW)
    assert r.keepalive and not r.frames
    times = run_schedule(protocol, 21.0)
    assert len(times[0x110]) == 11 and len(times[0x150]) == 3 and len(times[0x190]) == 1
    identify = protocol.on_frame(CanFrame(0x151, b"\x01" + bytes(7)), D, NOW).frames
    assert [f.arbitration_id for f in identify] == [0x250, 0x2D0, 0x3D0, 0x3D0, 0x3D0, 0x3D0]
    text = b"".join(f.data[1:] for f in identify if f.arbitration_id == 0x3D0).rstrip(b"\x00")
    assert text == b"Battery-Box Premium HVS"
    assert identify[1].data.startswith(b"BYD")


def test_growatt_answers_each_0x301() -> None:
    protocol = registry.create("growatt", flag_outputs=load_outputs())
    assert run_schedule(protocol, 3.0) == {}
    r = protocol.on_frame(CanFrame(0x301, bytes.fromhex("1122334455667788")), D, NOW)
    assert r.keepalive
    assert [f.arbitration_id for f in r.frames] == [0x311, 0x312, 0x313, 0x314, 0x319, 0x320, 0x321]
    assert not protocol.on_frame(CanFrame(0x301, bytes(8), True), D, NOW).frames  # 29-bit is not Growatt LV


def test_pylon_hv_answers_the_0x4200_poll() -> None:
    protocol = registry.create("pylon-hv", flag_outputs=load_outputs())
    system = protocol.on_frame(CanFrame(0x4200, bytes(8), True), D, NOW)
    assert system.keepalive and [f.arbitration_id for f in system.frames] == [
        0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4280,
    ]  # fmt: skip
    ident = protocol.on_frame(CanFrame(0x4200, b"\x02" + bytes(7), True), D, NOW).frames
    assert [f.arbitration_id for f in ident] == [0x7310, 0x7320, 0x7330, 0x7340]
    assert ident[2].data == b"PYLON   "
    assert not protocol.on_frame(CanFrame(0x4201, bytes(8), True), D, NOW).keepalive
    with pytest.raises(LocalProtocolError):
        CanFrame(0x4200, bytes(8), False)  # not an 11-bit id


def test_luxpower_shutdown_command_blocks_until_cleared() -> None:
    protocol = registry.create("luxpower", flag_outputs=load_outputs())
    r = protocol.on_frame(CanFrame(0x300, b"\x01" + bytes(7)), D, NOW)
    assert r.command == "shutdown" and not r.keepalive
    limits = protocol.encode("Limits", D, NOW).data
    assert limits[2:6] == bytes(4)  # CCL = DCL = 0
    assert protocol.encode("Request", D, NOW).data[0] == 0
    assert protocol.on_frame(CanFrame(0x300, b"\x01" + bytes(7)), D, NOW).command is None  # no change
    assert protocol.on_frame(CanFrame(0x300, bytes(8)), D, NOW).command == "shutdown_cleared"
    assert protocol.encode("Request", D, NOW).data[0] == 0xC0


def test_luxpower_redefines_0x35c_force_charge_bits() -> None:
    protocol = registry.create("luxpower", flag_outputs=load_outputs())
    assert protocol.encode("Request", decision(force_charge_1=True), NOW).data[0] == 0xC0 | 0x10
    pylon = registry.create("pylon", flag_outputs=load_outputs())
    assert pylon.encode("Request", decision(force_charge_1=True), NOW).data[0] == 0xC0 | 0x20


def test_sma_marks_unknown_fields_invalid() -> None:
    data = (
        registry.create("sma", flag_outputs=load_outputs())
        .encode("BatteryInfo", decision(full_capacity_ah=None), NOW)
        .data
    )
    assert data == b"\xff" * 8


@pytest.mark.parametrize(
    ("name", "frame", "expected"),
    [
        ("pylon", CanFrame(0x305, bytes(8)), True),
        ("pylon", CanFrame(0x305, bytes(8), True), True),  # Schneider XW sends it 29-bit
        ("sma", CanFrame(0x305, bytes.fromhex("1002F2FFFA006402")), True),
        ("sma", CanFrame(0x306, bytes(8)), True),
        ("victron", CanFrame(0x307, bytes(8)), True),
        ("schneider", CanFrame(0x310, bytes(8), True), True),
        ("schneider", CanFrame(0x310, bytes(8), False), False),
        ("growatt", CanFrame(0x305, bytes(8)), False),
        ("byd", CanFrame(0x151, b"BYD" + bytes(5)), True),
    ],
)
def test_keepalive_detection(name: str, frame: CanFrame, expected: bool) -> None:
    assert registry.create(name, flag_outputs=load_outputs()).on_frame(frame, D, NOW).keepalive is expected


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="no option 'bogus'"):
        registry.create("pylon", {"bogus": 1}, flag_outputs=load_outputs())
    with pytest.raises(ValueError, match="must be like"):
        registry.create("pylon", {"name": 5}, flag_outputs=load_outputs())
    with pytest.raises(ValueError, match="byte_order"):
        registry.create("pylon-hv", {"byte_order": "middle"}, flag_outputs=load_outputs())
    assert (
        registry.create("goodwe", {"module_count": 4}, flag_outputs=load_outputs())
        .encode("ProtectionAlarm", D, NOW)
        .data[4]
        == 4
    )


def test_victron_warns_about_name_quirks() -> None:
    assert registry.create("victron", flag_outputs=load_outputs()).notes() == []
    notes = registry.create("victron", {"name": "PYLON"}, flag_outputs=load_outputs()).notes()
    assert notes and "CVL replaced" in notes[0]


def test_decoding_unknown_ids_is_a_remote_error() -> None:
    db = dbc.load("pylon.dbc")
    with pytest.raises(RemoteProtocolError):
        dbc.decode(db, CanFrame(0x123, bytes(8)))
    with pytest.raises(RemoteProtocolError):
        dbc.decode(db, CanFrame(0x351, bytes(8), True))
    with pytest.raises(LocalProtocolError):
        dbc.encode(db, "Limits", {"ChargeVoltageLimit": 1.0})


@settings(max_examples=60, deadline=None)
@given(
    cvl=st.floats(-1e6, 1e6),
    ccl=st.floats(-1e6, 1e6),
    soc=st.floats(-50, 500),
    volt=st.floats(-1e4, 1e4),
    cur=st.floats(-1e5, 1e5),
    temp=st.floats(-300, 300),
    cap=st.none() | st.floats(0, 1e7),
)
def test_any_decision_encodes_in_every_protocol(
    cvl: float, ccl: float, soc: float, volt: float, cur: float, temp: float, cap: float | None
) -> None:
    state = decision(
        charge_voltage_v=cvl,
        charge_current_a=ccl,
        soc_pct=soc,
        soh_pct=soc,
        voltage_v=volt,
        current_a=cur,
        temperature_c=temp,
        temp_max_c=temp,
        full_capacity_ah=cap,
    )
    for name in ALL:
        for f in frames_of(registry.create(name, flag_outputs=load_outputs()), state):
            assert len(f.data) <= 8 and not math.isnan(f.arbitration_id)


def test_protocol_layer_imports_no_io_library() -> None:
    forbidden = {"can", "asyncio", "serial", "socket", "pymodbus", "gateway"}
    for path in (ROOT / "protocol" / "inverter" / "can").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in forbidden for n in names), (path.name, names)
