"""One table maps each flag meaning to every output (issue 16), walked flag by flag.

For every flag of every family (each Tianpower bit, each PACE v25/v20/EG4 bit, every kind of
per-item warning value) a pack reports that one flag; the real policy decides, and each output is
encoded by its real encoder and decoded back (CAN frames through the shipped DBC with cantools,
the Pylontech RS485 0x44/0x62 bytes, SunSpec Evt1 bits, the native map words, MQTT and metrics
labels). What comes out must be exactly what `mappings/flags/outputs.toml` says for the flag's
meaning at its level, and the policy must block exactly the directions of the flag's table entry.
Golden cases pin the bits the issue named (a shorted NTC is never a short circuit on RS485, a fan
failure is never a high temperature).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.app.config import PolicyConfig
from gateway.core.controls import Controls
from gateway.core.model import ModelView
from gateway.core.policy.engine import ChargeDecision, PolicyEngine
from gateway.north.documents import meanings_doc
from gateway.north.metrics.collector import _meanings
from gateway.north.modbus.native import flag_words
from gateway.north.modbus.sunspec import EVENT_OUTPUT, event_bits
from gateway.north.rs485.service import build_bank_view
from mappings.flags import CheckedOnUse, MappingError, load_meanings, load_outputs, parse
from mappings.modbus import load_native_map, load_sunspec_models
from protocol.bms.base import FlagInfo, Meaning
from protocol.bms.pace import values as pace
from protocol.bms.tianpower import realtime as tianpower
from protocol.inverter.can import dbc, registry
from protocol.inverter.flags import PROTECTION, WARNING
from protocol.inverter.rs485.pylon import module_alarm_block, system_alarm_info
from tests.support.can_policy_fixtures import pack, telemetry, view

NOW = 1_800_000_000.0
OUTPUTS = load_outputs()
SYMBOLS = load_sunspec_models()[802].symbols["Evt1"]


def every_flag() -> Iterator[tuple[str, FlagInfo]]:
    for f in tianpower.FLAG_TABLE:
        yield f"tianpower:{f.name}", f
    for variant, table in pace.status_flag_tables().items():
        for field, bits in table.items():
            for bit, f in enumerate(bits):
                yield f"pace-{variant}:{field}.{bit}:{f.name}", f
    yield f"pace:{pace.BALANCING_FLAG.name}", pace.BALANCING_FLAG
    for f in pace.warning_value_flags():
        yield f"pace:{f.name}", f


FLAGS = list(every_flag())


def view_of(flag: FlagInfo) -> ModelView:
    """Two fresh packs; pack 1 reports exactly `flag` (the table entry itself, as a driver does)."""
    return view([pack(1, replace(telemetry(now=NOW), flags=(flag,))), pack(2, telemetry(now=NOW))], NOW)


def decide(flag: FlagInfo) -> ChargeDecision:
    return PolicyEngine(PolicyConfig()).evaluate(view_of(flag), Controls().state(NOW), NOW)


def expected(output: str, flag: FlagInfo, level: str) -> frozenset[str]:
    """The targets the table gives the flag's meaning at `level` (nothing at the other level)."""
    if flag.level != level:
        return frozenset()
    return frozenset(OUTPUTS[output].table(level).get(flag.meaning.value, ()))


def can_signals(protocol_name: str, message: str, state: ChargeDecision) -> dict[str, float]:
    protocol = registry.create(protocol_name, flag_outputs=OUTPUTS)
    name, values = dbc.decode(protocol.db, protocol.encode(message, state, NOW))
    assert name == message
    return values


@pytest.mark.parametrize(("where", "flag"), FLAGS, ids=[w for w, _ in FLAGS])
def test_every_flag_through_every_output(where: str, flag: FlagInfo) -> None:
    d = decide(flag)
    meaning = flag.meaning.value
    # the policy: the level and the blocked directions come from the flag's table entry
    assert d.alarms == ({meaning} if flag.level == PROTECTION else set()), where
    assert d.warnings == ({meaning} if flag.level == WARNING else set()), where
    assert d.charge_enabled is not flag.blocks.charge and d.discharge_enabled is not flag.blocks.discharge

    # CAN: Pylontech 0x359 (pylon, deye, goodwe, sofar, solark, luxpower, pylon-v2)
    out = OUTPUTS["can.pylon"]
    signals = can_signals("pylon", "ProtectionAlarm", d)
    raised = {s for s in out.targets(PROTECTION) | out.targets(WARNING) if signals[s] == 1.0}
    assert raised == expected("can.pylon", flag, PROTECTION) | expected("can.pylon", flag, WARNING), where

    # CAN: the 0x35A pairs (sma, victron, pylon-v2); "General" is any flag at that level
    pairs = can_signals("sma", "AlarmsWarnings", d)
    for prefix, level in (("Alarm", PROTECTION), ("Warning", WARNING)):
        active = {k[len(prefix) :] for k, x in pairs.items() if k.startswith(prefix) and x == 1.0}
        general = {"General"} if flag.level == level else set()
        assert active == expected("can.alarms35a", flag, level) | general, (where, level)

    # CAN: Growatt 0x312
    out = OUTPUTS["can.growatt"]
    signals = can_signals("growatt", "ProtectionWarning", d)
    raised = {s for s in out.targets(PROTECTION) | out.targets(WARNING) if signals[s] == 1.0}
    assert raised == expected("can.growatt", flag, PROTECTION) | expected("can.growatt", flag, WARNING)

    # CAN: Schneider 0x325 fault / warning words
    status = can_signals("schneider", "Status", d)
    for word, level in (("Faults", PROTECTION), ("Warnings", WARNING)):
        bits = {str(b) for b in range(16) if int(status[word]) >> b & 1}
        assert bits == expected("can.schneider", flag, level), (where, word)

    # RS485 Pylontech: 0x44 Status1 of the pack's module and the 0x62 system alarm bytes
    bank = build_bank_view(view_of(flag), d)
    block = module_alarm_block(bank.modules[0], bank)
    cells = block[0]
    temps = block[1 + cells]
    status1 = block[1 + cells + 1 + temps + 3]
    bits = {str(b) for b in range(8) if status1 >> b & 1}
    assert bits == expected("rs485.pylon.0x44", flag, PROTECTION) | expected(
        "rs485.pylon.0x44", flag, WARNING
    )
    alarm = system_alarm_info(bank)
    for offset, level in ((0, WARNING), (2, PROTECTION)):
        got = {f"{i + 1}.{b}" for i in range(2) for b in range(8) if alarm[offset + i] >> b & 1}
        assert got == expected("rs485.pylon.0x62", flag, level), (where, level)

    # SunSpec 802 Evt1
    evt = event_bits(OUTPUTS[EVENT_OUTPUT], SYMBOLS, (flag,), False)
    want = {
        SYMBOLS[s] for s in expected("sunspec.802", flag, PROTECTION) | expected("sunspec.802", flag, WARNING)
    }
    assert evt == want, where

    # native Modbus map, MQTT and metrics: the meaning itself, at its level
    native = flag_words((flag,))
    bits_of = set(load_meanings()[flag.meaning].native_bits)
    assert native["protection_flags"] == (bits_of if flag.level == PROTECTION else set())
    assert native["warning_flags"] == (bits_of if flag.level == WARNING else set())
    doc = meanings_doc((flag,))
    assert doc == {
        "protection": [meaning] if flag.level == PROTECTION else [],
        "warning": [meaning] if flag.level == WARNING else [],
    }
    assert _meanings((flag,)) == (set() if flag.level == "state" else {(meaning, flag.level)})


# --- golden cases: the bits the issue named, independent of the table --------------------------------


def _rs485(name: str) -> tuple[int, bytes]:
    (flag,) = (f for _, f in FLAGS if f.name == name)
    bank = build_bank_view(view_of(flag), decide(flag))
    block = module_alarm_block(bank.modules[0], bank)
    return block[1 + block[0] + 1 + block[1 + block[0]] + 3], system_alarm_info(bank)


@pytest.mark.parametrize("name", ["NTC_Short_Circuit", "NTC_Disconnected", "NTC fault"])
def test_a_shorted_ntc_never_reaches_an_rs485_inverter_as_a_short_circuit(name: str) -> None:
    status1, alarm = _rs485(name)
    assert not status1 & 0x10  # 0x44 Status1 b4: discharge over-current / short circuit
    assert not alarm[1] & 0x20 and not alarm[3] & 0x20  # 0x62 byte 2 b5: discharge OC / short circuit
    assert alarm[2] == alarm[3] == 0  # nothing at the protection level: it blocks nothing
    assert alarm[1] == 0x08  # the warning: "system / other fault"


def test_a_fan_failure_is_not_a_high_temperature() -> None:
    (fan,) = (f for _, f in FLAGS if f.name == "Hot_Failure")
    d = decide(fan)
    assert d.warnings == {"fan_fault"} and d.charge_enabled and d.discharge_enabled
    pylon = can_signals("pylon", "ProtectionAlarm", d)
    assert pylon["AlarmHighTemperature"] == pylon["ProtCellOverTemperature"] == 0.0
    pairs = can_signals("sma", "AlarmsWarnings", d)
    assert pairs["WarningHighTemperature"] == 2.0 and pairs["WarningBmsInternal"] == 1.0
    status1, alarm = _rs485("Hot_Failure")
    assert not status1 & 0x60 and not alarm[0] & 0x08  # no charge/discharge OT, no cell high temp
    assert event_bits(OUTPUTS[EVENT_OUTPUT], SYMBOLS, (fan,), False) == {SYMBOLS["FAN_ERROR"]}


def test_a_short_circuit_protection_still_is_one() -> None:
    status1, alarm = _rs485("Short_Circuit_Prot")
    assert status1 == 0x10 and alarm[3] & 0x20
    (short,) = (f for _, f in FLAGS if f.name == "Short_Circuit_Prot")
    pylon = can_signals("pylon", "ProtectionAlarm", decide(short))
    assert pylon["ProtDischargeOverCurrent"] == pylon["ProtSystemError"] == 1.0


# --- the table itself ---------------------------------------------------------------------------------


def test_every_meaning_has_a_row_and_every_flag_meaning_is_in_the_table() -> None:
    rows = load_meanings()
    assert set(rows) == set(Meaning)
    for _, f in FLAGS:
        assert f.meaning in rows
        if f.level != "state":
            assert all(f.meaning.value in OUTPUTS[o].protection for o in OUTPUTS)


def test_native_bitfield_names_follow_the_table() -> None:
    bits = {b for row in load_meanings().values() for b in row.native_bits}
    named = set(load_native_map().bitfields["flag_meanings"].values())
    assert bits == named


def _table() -> dict:  # type: ignore[type-arg]
    path = Path(__file__).resolve().parents[2] / "mappings" / "flags" / "outputs.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["meaning"].pop("fan_fault"), "no row for meanings \\['fan_fault'\\]"),
        (lambda t: t["meaning"]["fan_fault"].pop("can.pylon"), "no entry for outputs"),
        (lambda t: t["meaning"]["fan_fault"].update({"can.pylon": [["NoSuchSignal"], []]}), "unknown target"),
        (lambda t: t["meaning"]["fan_fault"].update({"sunspec.802": [["HOT"], []]}), "unknown target"),
        (lambda t: t["meaning"]["fan_fault"].update({"rs485.pylon.0x62": [["3.1"], []]}), "unknown target"),
        (lambda t: t["meaning"]["charging"].update({"can.pylon": [[], []]}), "state meaning has no output"),
        (lambda t: t["meaning"].update({"warp_core": {"label": "x", "native": [1]}}), "unknown meanings"),
        (lambda t: t["meaning"]["fan_fault"].update({"native": [40]}), "native must be"),
    ],
)
def test_a_bad_table_is_refused_naming_the_row(change, message: str) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    change(table)
    with pytest.raises(MappingError, match=message):
        parse(table)


def test_the_gateway_checks_an_outputs_targets_when_it_is_first_used() -> None:
    # What a start-up loads: the shape checked, each output's targets on its first lookup (so a
    # Pylon CAN gateway does not read the SMA and Growatt DBC files to check rows it never sends).
    table = _table()
    table["meaning"]["fan_fault"].update({"can.growatt": [["NoSuchSignal"], []]})
    _, outputs = parse(table, check=False)
    lazy = CheckedOnUse(outputs)
    assert lazy["can.pylon"] is outputs["can.pylon"]
    assert sorted(lazy) == sorted(outputs)
    named = r"\[meaning.fan_fault\] can.growatt: unknown target 'NoSuchSignal'"
    with pytest.raises(MappingError, match=named):
        lazy["can.growatt"]
    with pytest.raises(MappingError, match="unknown target"):
        dict(lazy.items())  # every output, as the docs generator reads them


def test_the_shipped_tables_outputs_are_checked_in_full() -> None:
    assert dict(load_outputs().items()) == parse(_table())[1]


def test_docs_flags_md_is_the_generated_table() -> None:
    from gateway.docs.flags import render

    path = Path(__file__).resolve().parents[2] / "docs" / "flags.md"
    assert path.read_text(encoding="utf-8") == render(), (
        'docs/flags.md is out of date: python -c "from gateway.docs.flags import render; '
        "print(render(), end='')\" > docs/flags.md"
    )
