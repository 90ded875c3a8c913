"""How one inverter-facing output shows the neutral flag meanings: meaning -> bits, per level.

The charge decision carries the active meanings (`protocol.bms.base.Meaning` values) at two levels:
"protection" (the flag blocks a direction: the inverter must stop it) and "warning" (a problem that
does not stop the pack). Each output (a CAN protocol's alarm signals, the Pylontech RS485 0x44 and
0x62 bits, the SunSpec 802 event bits) translates them through one `FlagOutput`: for each meaning
the targets (signal names, bit numbers, symbol names) it raises at each level.

The data comes from `mappings/flags/outputs.toml` (loaded and validated by `mappings.flags`); the
gateway hands it to the encoders. This module holds only the type and must never import mappings/,
the gateway or anything with I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROTECTION = "protection"
WARNING = "warning"
LEVELS = (PROTECTION, WARNING)


@dataclass(frozen=True, slots=True)
class FlagOutput:
    """One output's translation: for each level, meaning -> the targets it raises."""

    name: str  # "can.pylon", "rs485.pylon.0x62", "sunspec.802", ...
    protection: Mapping[str, tuple[str, ...]]
    warning: Mapping[str, tuple[str, ...]]

    def table(self, level: str) -> Mapping[str, tuple[str, ...]]:
        if level == PROTECTION:
            return self.protection
        if level == WARNING:
            return self.warning
        raise ValueError(f"unknown flag level {level!r}")

    def raised(self, level: str, meanings: Iterable[str]) -> frozenset[str]:
        """The targets the active `meanings` raise at `level` (a meaning without targets raises none)."""
        table = self.table(level)
        return frozenset(t for m in meanings for t in table.get(m, ()))

    def targets(self, level: str) -> frozenset[str]:
        """Every target any meaning can raise at `level` (what this output supports)."""
        return frozenset(t for ts in self.table(level).values() for t in ts)

    def bits(self, level: str, meanings: Iterable[str]) -> int:
        """For outputs whose targets are bit numbers: the word with the raised bits set."""
        return sum(1 << b for b in {int(t) for t in self.raised(level, meanings)})


FlagOutputs = Mapping[str, FlagOutput]
"""Every output's translation, by output name (what `mappings.flags.load_outputs()` returns)."""


def require(outputs: FlagOutputs, name: str) -> FlagOutput:
    """The translation of output `name`; KeyError naming it when the table lacks it."""
    try:
        return outputs[name]
    except KeyError:
        raise KeyError(f"the flag output table has no output {name!r}") from None
