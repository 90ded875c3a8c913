"""The simulated packs' history vocabulary, shared by both families: event keys and their codes
(the Tianpower numbering, which the PACE responder reuses for its records), and the pack clock as the
wire carries it. Imports protocol/ only; never gateway/.
"""

from __future__ import annotations

from datetime import datetime

from protocol.bms.tianpower import messages as m

__all__ = ["CODE_EVENTS", "EVENT_CODES", "epoch_of", "event_code", "event_of_code", "pack_time"]

# History event codes (reference 3.A.4); 17-35 are *inferred* (the sources only summarise them).
EVENT_CODES: dict[str, int] = {
    "protection:cell_ov": 1,
    "protection:cell_uv": 2,
    "protection:pack_ov": 3,
    "protection:pack_uv": 4,
    "protection:chg_oc1": 5,
    "protection:chg_oc2": 6,
    "protection:dsg_oc1": 7,
    "protection:dsg_oc2": 8,
    "protection:short_circuit": 9,
    "protection:chg_ot": 10,
    "protection:chg_ut": 11,
    "protection:dsg_ot": 12,
    "protection:dsg_ut": 13,
    "start_charging": 14,
    "start_discharging": 15,
    "timing": 16,
    "alarm:cell_ov": 17,
    "alarm:cell_uv": 18,
    "alarm:pack_ov": 19,
    "alarm:pack_uv": 20,
    "alarm:chg_oc": 21,
    "alarm:dsg_oc": 22,
    "alarm:chg_ot": 23,
    "alarm:chg_ut": 24,
    "alarm:dsg_ot": 25,
    "alarm:dsg_ut": 26,
    "alarm:mos_ot": 27,
    "alarm:soc_low": 28,
    "alarm:cell_diff": 29,
    "alarm:env_ot": 30,
    "alarm:env_ut": 31,
    "protection:mos_ot": 32,
    "protection:env_ot": 33,
    "protection:env_ut": 34,
    "protection:comm_lock": 35,
    "start_system": 36,
    "exit_system": 37,
}
CODE_EVENTS = {v: k for k, v in EVENT_CODES.items()}


def event_code(event: str) -> int:
    if event.startswith("released:"):
        return EVENT_CODES[event.removeprefix("released:")] + m.RELEASE_OFFSET
    return EVENT_CODES[event]


def event_of_code(code: int) -> str:
    """Our event key for a record's event code (the inverse of `event_code`)."""
    if code > m.RELEASE_OFFSET:
        return "released:" + CODE_EVENTS[code - m.RELEASE_OFFSET]
    return CODE_EVENTS[code]


def pack_time(epoch_s: float) -> datetime:
    """The pack's clock as the wire carries it: naive local time, as the vendor tool sets it from
    the PC's clock (and as the gateway reads pack clocks)."""
    return datetime.fromtimestamp(int(epoch_s))


def epoch_of(when: datetime) -> float:
    """Epoch seconds of a naive pack time (local time; a time that does not exist locally, in a DST
    gap, is resolved by the platform)."""
    return when.timestamp()
