"""The flag meaning -> output table (`outputs.toml`), loaded and validated.

`load_outputs()` returns every output's translation (`protocol.inverter.flags.FlagOutput`, by output
name: "can.pylon", "can.alarms35a", "can.growatt", "can.schneider", "rs485.pylon.0x44",
"rs485.pylon.0x62", "sunspec.802"); `load_meanings()` the per-meaning rows (label, native bits).
Validation: one row per `protocol.bms.base.Meaning` (states included), every output named in every
non-state row, no unknown keys, every target present in its DBC message / SunSpec symbol table / bit
range. A bad file raises `MappingError` naming the row. `parse` checks everything at once (the test
suite runs it on the shipped file); the gateway's cached table checks the shape at load and each
output's targets when that output is first used, so a start-up only reads the DBC files of the
protocols it runs (parsing the SMA and Growatt DBC files to check rows a Pylon CAN gateway never
sends was about 11 ms of every start).

Nothing is read at import time; this package never performs I/O other than reading its own files.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from protocol.bms.base import Meaning
from protocol.inverter.flags import FlagOutput


class MappingError(ValueError):
    """The flag output table is invalid; the message names the row."""


FILE = "outputs.toml"
NATIVE_BITS = 32  # the native map's protection_flags / warning_flags are bitfield32


@dataclass(frozen=True, slots=True)
class MeaningRow:
    meaning: Meaning
    label: str
    native_bits: tuple[int, ...]


def _dbc_signals(file: str, message: str) -> frozenset[str]:
    from protocol.inverter.can import dbc

    return frozenset(s.name for s in dbc.load(file).get_message_by_name(message).signals)


def _pair_names() -> frozenset[str]:
    names = _dbc_signals("sma.dbc", "AlarmsWarnings")
    return frozenset(n[len("Alarm") :] for n in names if n.startswith("Alarm") and f"Warning{n[5:]}" in names)


def _sunspec_symbols() -> frozenset[str]:
    from mappings.modbus import load_sunspec_models

    return frozenset(load_sunspec_models()[802].symbols["Evt1"])


def _bit_range(high: int) -> Callable[[], frozenset[str]]:
    return lambda: frozenset(str(b) for b in range(high))


def _byte_bits() -> frozenset[str]:
    return frozenset(f"{byte}.{bit}" for byte in (1, 2) for bit in range(8))


# output name -> (description, the set of valid targets)
OUTPUTS: dict[str, tuple[str, Callable[[], frozenset[str]]]] = {
    "can.pylon": (
        "pylon.dbc ProtectionAlarm (0x359) signals",
        lambda: _dbc_signals("pylon.dbc", "ProtectionAlarm"),
    ),
    "can.alarms35a": ("0x35A pair names (sma.dbc AlarmsWarnings)", _pair_names),
    "can.growatt": (
        "growatt.dbc ProtectionWarning (0x312) signals",
        lambda: _dbc_signals("growatt.dbc", "ProtectionWarning"),
    ),
    "can.schneider": ("bit of the 0x325 Faults / Warnings words", _bit_range(16)),
    "rs485.pylon.0x44": ("Pylontech RS485 0x44 Status1 bit", _bit_range(8)),
    "rs485.pylon.0x62": ("Pylontech RS485 0x62 byte.bit", _byte_bits),
    "sunspec.802": ("SunSpec 802 Evt1 symbol", _sunspec_symbols),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _read() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MappingError(f"{FILE}: not valid TOML: {err}") from None


def _targets(where: str, value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value)):
        raise MappingError(f"{where}: expected [[protection targets], [warning targets]]")
    out: list[tuple[str, ...]] = []
    for level in value:
        for t in level:
            if not isinstance(t, str):
                raise MappingError(f"{where}: unknown target {t!r}")
        if len(set(level)) != len(level):
            raise MappingError(f"{where}: a target is listed twice")
        out.append(tuple(level))
    return out[0], out[1]


def check_targets(output: FlagOutput) -> FlagOutput:
    """`output` when every target it names exists in its DBC message / symbol table / bit range."""
    valid = OUTPUTS[output.name][1]()
    for table in (output.protection, output.warning):
        for key, targets in table.items():
            for t in targets:
                if t not in valid:
                    raise MappingError(f"{FILE} [meaning.{key}] {output.name}: unknown target {t!r}")
    return output


class CheckedOnUse(Mapping[str, FlagOutput]):
    """The outputs of a shape-checked table; each output's targets are checked on first use."""

    def __init__(self, outputs: Mapping[str, FlagOutput]) -> None:
        self._outputs = outputs
        self._checked: dict[str, FlagOutput] = {}

    def __getitem__(self, name: str) -> FlagOutput:
        checked = self._checked.get(name)
        if checked is None:
            checked = self._checked[name] = check_targets(self._outputs[name])
        return checked

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


def parse(
    data: Mapping[str, Any], *, check: bool = True
) -> tuple[dict[Meaning, MeaningRow], dict[str, FlagOutput]]:
    """Validate a parsed table (see the module docstring); MappingError names the bad row.

    `check=False` leaves the targets' existence to `check_targets` (the shape is always checked).
    """
    rows = data.get("meaning")
    if not isinstance(rows, dict):
        raise MappingError(f"{FILE}: no [meaning.*] rows")
    unknown = set(data) - {"meaning"}
    if unknown:
        raise MappingError(f"{FILE}: unknown top-level keys {sorted(unknown)}")
    known = {m.value for m in Meaning}
    extra = sorted(set(rows) - known)
    if extra:
        raise MappingError(f"{FILE}: rows for unknown meanings {extra}")
    missing = sorted(known - set(rows))
    if missing:
        raise MappingError(f"{FILE}: no row for meanings {missing}")
    protection: dict[str, dict[str, tuple[str, ...]]] = {name: {} for name in OUTPUTS}
    warning: dict[str, dict[str, tuple[str, ...]]] = {name: {} for name in OUTPUTS}
    meanings: dict[Meaning, MeaningRow] = {}
    for key, row in rows.items():
        where = f"{FILE} [meaning.{key}]"
        meaning = Meaning(key)
        if not isinstance(row, dict):
            raise MappingError(f"{where}: not a table")
        label = row.get("label")
        if not isinstance(label, str) or not label:
            raise MappingError(f"{where}: needs a label")
        native = row.get("native")
        if not isinstance(native, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b < NATIVE_BITS for b in native
        ):
            raise MappingError(f"{where}: native must be a list of bits 0..{NATIVE_BITS - 1}")
        outputs = set(row) - {"label", "native"}
        if meaning.is_state:
            if outputs or native:
                raise MappingError(f"{where}: a state meaning has no output bits")
        else:
            if set(outputs) - set(OUTPUTS):
                raise MappingError(f"{where}: unknown outputs {sorted(set(outputs) - set(OUTPUTS))}")
            if set(OUTPUTS) - set(outputs):
                raise MappingError(f"{where}: no entry for outputs {sorted(set(OUTPUTS) - set(outputs))}")
            if not native:
                raise MappingError(f"{where}: needs at least one native bit")
            for name in OUTPUTS:
                p, w = _targets(f"{where} {name}", row[name])
                protection[name][key] = p
                warning[name][key] = w
        if not _NAME.match(key):  # pragma: no cover - Meaning values are snake case
            raise MappingError(f"{where}: not a label-safe name")
        meanings[meaning] = MeaningRow(meaning, label, tuple(native))
    out = {
        name: FlagOutput(name, MappingProxyType(protection[name]), MappingProxyType(warning[name]))
        for name in OUTPUTS
    }
    if check:
        for output in out.values():
            check_targets(output)
    return meanings, out


@cache
def _load() -> tuple[Mapping[Meaning, MeaningRow], Mapping[str, FlagOutput]]:
    meanings, outputs = parse(_read(), check=False)
    return MappingProxyType(meanings), CheckedOnUse(outputs)


def load_outputs() -> Mapping[str, FlagOutput]:
    """Every output's translation, by output name (cached; an output's targets are checked when it
    is first looked up)."""
    return _load()[1]


def load_meanings() -> Mapping[Meaning, MeaningRow]:
    """Every meaning's row: label and native bits (validated, cached)."""
    return _load()[0]


def native_word(meanings: Mapping[Meaning, MeaningRow], active: frozenset[str]) -> int:
    """The native map's bitfield for a set of active meaning names."""
    return sum(1 << b for b in {b for m in active for b in meanings[Meaning(m)].native_bits})
