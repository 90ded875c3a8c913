"""Active flags by name, looked up in the codecs' own flag tables (tests name a flag; its meaning,
severity and blocked direction come from the table, as in production)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from protocol.bms.base import FlagInfo, FlagKind
from protocol.bms.pace import values as pace
from protocol.bms.tianpower import realtime as tianpower


@cache
def table() -> dict[str, FlagInfo]:
    """Every named flag of every family (Tianpower names, then PACE v25, v20, EG4)."""
    out: dict[str, FlagInfo] = dict(tianpower.FLAG_INFO_BY_NAME)
    for variant in pace.status_flag_tables().values():
        for bits in variant.values():
            for f in bits:
                out.setdefault(f.name, f)
    out.setdefault(pace.BALANCING_FLAG.name, pace.BALANCING_FLAG)
    for f in pace.warning_value_flags():
        out.setdefault(f.name, f)
    return out


def named(*names: str) -> tuple[FlagInfo, ...]:
    """The table entries of `names` (KeyError for a name no family has)."""
    known = table()
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"no family has the flags {missing}")
    return tuple(known[n] for n in names)


def by_kind(
    protections: Iterable[str] = (), alarms: Iterable[str] = (), faults: Iterable[str] = ()
) -> tuple[FlagInfo, ...]:
    """Flags named per severity; AssertionError when the table gives a name another severity."""
    out: list[FlagInfo] = []
    for kind, names in (
        (FlagKind.PROTECTION, protections),
        (FlagKind.ALARM, alarms),
        (FlagKind.FAULT, faults),
    ):
        for f in named(*names):
            assert f.kind is kind, f"{f.name!r} is a {f.kind}, not a {kind}"
            out.append(f)
    return tuple(out)
