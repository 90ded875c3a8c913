"""Every status bit of every family has its meaning as data (issue 16): a neutral meaning, a
severity, the direction it blocks and a source, decoded through the real codecs bit by bit.

A bit that decodes to no table entry, an entry without a source, or a name-suggested meaning that
a source contradicts fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from protocol.bms.base import Blocks, FlagInfo, FlagKind, Meaning
from protocol.bms.pace import values as v
from protocol.bms.tianpower import realtime as tp

# --- Tianpower / Basengreen: 10 status bytes of group 0x06 and the 16-bit group 0x0A word ---------


def _tianpower(status: bytes, extra: int) -> tp.RealtimeData:
    return tp.RealtimeData(
        cells=(tp.CellReading(3.3),) * 4,
        current_a=0.0,
        soc_pct=50.0,
        full_capacity_ah=100.0,
        temperatures=(),
        status=status,
        cycles=1,
        voltage_v=13.2,
        soh_pct=100.0,
        extra_protection=extra,
    )


def _tianpower_bits() -> Iterator[tuple[str, tp.RealtimeData]]:
    for byte in range(tp.STATUS_BYTES):
        for bit in range(8):
            status = bytearray(tp.STATUS_BYTES)
            status[byte] = 1 << bit
            yield f"B{byte}.{bit}", _tianpower(bytes(status), 0)
    for bit in range(16):
        yield f"extra.{bit}", _tianpower(bytes(tp.STATUS_BYTES), 1 << bit)


@pytest.mark.parametrize(
    ("where", "rt"), list(_tianpower_bits()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_tianpower_bit_decodes_to_one_explicit_meaning(where: str, rt: tp.RealtimeData) -> None:
    (flag,) = rt.active_flags()
    assert isinstance(flag.meaning, Meaning) and flag.source, where
    assert tp.FLAG_INFO_BY_NAME[flag.name] == flag  # the one table the codec and the gateway share


# --- PACE: v25, v20 (PACE/Pylon layout) and EG4 status answers -------------------------------------

V25_FIELDS = tuple(v.V25_STATUS_BITS)
V20_FIELDS = tuple(v.V20_STATUS_BITS)
EG4_FIELDS = tuple(v.EG4_STATUS_BITS)


def _v25(field: str, value: int) -> v.StatusBlock:
    block = v.StatusBlock(cell_warnings=(0,) * 16, temp_warnings=(0,) * 6, **{field: value})
    answer = v.decode_status(v.encode_status(v.StatusResponse(0, 1, (block,))))  # through the wire
    return answer.packs[0]


def _v20(field: str, value: int) -> v.StatusV20:
    s = v.StatusV20(0, 1, (0,) * 16, (0,) * 4, **{field: value})
    return v.decode_status_v20(v.encode_status_v20(s))


def _eg4(field: str, value: int) -> v.StatusEg4:
    s = v.StatusEg4(0x10, 1, (0,) * 16, (0,) * 6, **{field: value})
    return v.decode_status_eg4(v.encode_status_eg4(s))


def _pace_bits() -> Iterator[tuple[str, Callable[[], v.Flags]]]:
    for variant, fields, make in (
        ("v25", V25_FIELDS, _v25),
        ("v20", V20_FIELDS, _v20),
        ("eg4", EG4_FIELDS, _eg4),
    ):
        for field in fields:
            width = len(v.status_flag_tables()[variant][field])
            for bit in range(width):
                yield (
                    f"{variant}.{field}.{bit}",
                    lambda make=make, field=field, bit=bit: make(field, 1 << bit).flags(),  # type: ignore[misc]
                )


@pytest.mark.parametrize(
    ("where", "decode"), list(_pace_bits()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_pace_bit_decodes_to_one_explicit_meaning(where: str, decode: Callable[[], v.Flags]) -> None:
    flags = decode()
    (flag,) = flags.items
    assert isinstance(flag.meaning, Meaning) and flag.source, where
    names = flags.protections | flags.alarms | flags.faults | flags.states
    assert names == {flag.name}  # the display sets and the meanings are the same flags


def test_every_pace_bit_table_covers_its_whole_field() -> None:
    for variant, table in v.status_flag_tables().items():
        for field, bits in table.items():
            assert len(bits) in (8, 16), (variant, field)
            assert all(isinstance(f, FlagInfo) for f in bits)


@pytest.mark.parametrize("value", range(1, 256))
def test_every_warning_value_of_every_subject_has_a_meaning(value: int) -> None:
    block = v.StatusBlock(
        cell_warnings=(value,),
        temp_warnings=(value,),
        charge_current_warning=value,
        total_voltage_warning=value,
        discharge_current_warning=value,
    )
    items = block.flags().items
    assert len(items) == 5
    assert all(isinstance(f.meaning, Meaning) and f.source for f in items)
    eg4 = v.StatusEg4(0x10, 1, (value,), (value, 0, 0), current_warning=value).flags().items
    assert all(isinstance(f.meaning, Meaning) and f.source for f in eg4) and len(eg4) == 3


# --- what the sources say, where the name says something else ---------------------------------------


@pytest.mark.parametrize(
    ("name", "meaning", "kind", "blocks"),
    [
        ("Hot_Failure", Meaning.FAN_FAULT, FlagKind.FAULT, Blocks.NONE),  # bms_proto: fan_on_failure
        ("NTC_Short_Circuit", Meaning.NTC_FAULT, FlagKind.FAULT, Blocks.NONE),  # a sensor, not a short
        ("NTC_Disconnected", Meaning.NTC_FAULT, FlagKind.FAULT, Blocks.NONE),
        ("Current_Module_Fault", Meaning.MEASUREMENT_FAULT, FlagKind.FAULT, Blocks.BOTH),  # ADC_MOD_Fault
        ("Cell_Low_Vol_Fault", Meaning.CELL_UNDERVOLTAGE, FlagKind.FAULT, Blocks.DISCHARGE),
        ("Fire_fighting_Alarm", Meaning.FIRE, FlagKind.FAULT, Blocks.BOTH),
        ("Short_Circuit_Prot", Meaning.SHORT_CIRCUIT, FlagKind.PROTECTION, Blocks.BOTH),
        ("CHG_Low_Temp_Block", Meaning.CHARGE_UNDERTEMPERATURE, FlagKind.PROTECTION, Blocks.CHARGE),
        ("Full_Cha_Prot", Meaning.FULL, FlagKind.PROTECTION, Blocks.CHARGE),
    ],
)
def test_tianpower_meanings_follow_the_sources(
    name: str, meaning: Meaning, kind: FlagKind, blocks: Blocks
) -> None:
    f = tp.FLAG_INFO_BY_NAME[name]
    assert (f.meaning, f.kind, f.blocks) == (meaning, kind, blocks)


def test_pace_sensor_fault_is_not_a_short_circuit() -> None:
    (ntc,) = _v25("fault", 0x04).flags().items
    assert ntc.meaning is Meaning.NTC_FAULT and ntc.blocks is Blocks.NONE
    fault = v.warning_value_flag("Temperature 2", 0xF0)
    high = v.warning_value_flag("Temperature 2", 2)
    assert fault is not None and fault.meaning is Meaning.NTC_FAULT and "inferred" in fault.source
    assert high is not None and high.meaning is Meaning.SENSOR_OVERTEMPERATURE


def test_v20_temperature_protections_are_over_temperatures_as_pylontech_documents() -> None:
    (dsg,) = _v20("status1", 0x20).flags().items
    (chg,) = _v20("status1", 0x40).flags().items
    assert dsg.meaning is Meaning.DISCHARGE_OVERTEMPERATURE and dsg.blocks is Blocks.DISCHARGE
    assert chg.meaning is Meaning.CHARGE_OVERTEMPERATURE and chg.blocks is Blocks.CHARGE


def test_a_flag_entry_refuses_an_inconsistent_severity() -> None:
    good = tp.FLAG_INFO_BY_NAME["CELL_OV_Alarm"]
    with pytest.raises(ValueError, match="never blocks"):
        replace(good, blocks=Blocks.CHARGE)
    with pytest.raises(ValueError, match="blocks at least one direction"):
        replace(tp.FLAG_INFO_BY_NAME["CELL_OV_Prot"], blocks=Blocks.NONE)
    with pytest.raises(ValueError, match="no source"):
        replace(good, source="")
    with pytest.raises(ValueError, match="state meaning"):
        replace(good, meaning=Meaning.CHARGING)
