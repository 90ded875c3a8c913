"""Tianpower / Basengreen binary BMS protocol (`7E ADR CMD LEN DATA CHK 0D`), sans-I/O.

- `frame`: framing, checksum, the incremental decoder (`TianpowerDecoder`).
- `realtime`: CMD 0x01 TLV groups, the status flag table, `RealtimeData` decode/encode.
- `messages`: every other command, typed requests and responses, builders and parsers both ways.
- `describe`: JSON-able description of one captured frame (the `decode` command).

`FAMILY` is this protocol's registry entry (`protocol.bms.registry`). Nothing here performs I/O.
"""

from __future__ import annotations

from types import MappingProxyType

from protocol.bms.base import BmsFamily, Frame
from protocol.bms.tianpower.boot import CARRIAGE
from protocol.bms.tianpower.describe import describe, describe_answer
from protocol.bms.tianpower.frame import (
    SOI,
    SOI_ALT,
    TianpowerDecoder,
    TpFrame,
    build_frame,
    checksum,
    parse_frame,
)
from protocol.bms.tianpower.messages import (
    Ack,
    Cmd,
    ReadRequest,
    encode_request,
    parse_request,
    parse_response,
)
from protocol.bms.tianpower.realtime import RealtimeData, decode_realtime, encode_realtime_data


def request_realtime(address: int, *, soi: int = SOI) -> bytes:
    """`7E ADR 01 00 CHK 0D`: the realtime read (also the probe used by scan)."""
    return encode_request(ReadRequest(address, Cmd.REALTIME), soi=soi)


def is_probe_answer(frame: Frame) -> bool:
    return (
        frame.command == Cmd.REALTIME
        and not frame.is_request
        and isinstance(frame, TpFrame)
        and bool(frame.data)
    )


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


# Golden frames: public captures (docs/protocols.md "Sources") and request vectors computed with
# the verified checksum, plus responses built by our own builders for the commands without a public capture.
EXAMPLES = MappingProxyType(
    {
        "realtime_request_adr1": _hex("7E 01 01 00 FE 0D"),
        "realtime_request_adr0": _hex("7E 00 01 00 00 0D"),
        "version_request": _hex("7E 01 33 00 FE 0D"),
        "barcode_request": _hex("7E 01 42 00 FC 0D"),
        "sn_read_request": _hex("7E 01 DC 03 06 00 00 C2 0D"),
        "revov_realtime_request": _hex("7C 01 01 00 02 0D"),
        "revov_barcode_request": _hex("7C 01 42 00 80 0D"),
        "revov_06_request": _hex("7C 01 06 00 F8 0D"),
        "protection_table_request": _hex("7E 01 43 E0 7E 0D"),
        "alarm_table_request": _hex("7E 01 43 00 FE 0D"),
        "clock_read_request": _hex("7E 01 45 00 FE 0D"),
        "clock_write_request": _hex("7E 01 CF 06 19 03 12 16 30 13 50 0D"),
        "charge_mos_off_request": _hex("7E 01 D3 01 02 FA 0D"),
        "forced_sleep_request": _hex("7E 01 CD 02 00 01 FE 0D"),
        "heater_on_request": _hex("7E 01 E3 01 01 F8 0D"),
        "heater_on_temp_read_request": _hex("7E 01 F1 00 FE 0D"),
        "heater_on_temp_write_request": _hex("7E 01 F2 02 00 37 12 0D"),
        "board_info_request": _hex("7E 01 DC 01 06 C6 0D"),
        "record_count_request": _hex("7E 01 D0 01 19 DE 0D"),
        "short_circuit_counter_request": _hex("7E 01 39 02 00 00 FE 0D"),
        "basengreen_realtime_response": _hex(
            "7E 01 01 7C 01 10 0D 44 0D 41 0D 40 0D 41 0D 40 0D 3F 0D 40 0D 41 0D 43 0D 42 0D 42 0D 42 0D 43"
            "0D 42 0D 42 0D 45 02 01 75 30 03 01 27 0F 04 01 6D 60 05 06 00 47 00 48 00 48 00 47 40 48 20 4B"
            "06 05 00 00 00 00 00 00 00 00 00 00 07 01 00 1C 08 01 15 35 09 01 27 10 0A 01 00 00 0B 01 00 00"
            "1A 05 0C 01 00 00 19 5D 0D 01 00 2B 27 EF 0E 01 00 40 00 00 0F 01 00 05 75 06 10 01 00 04 4B A2"
            "62 0D"
        ),
        "eg4_realtime_response": _hex(
            "7E 01 01 58 01 10 0C F3 0C F4 0C F3 0C F3 0C F4 0C F4 0C F4 0C F4 0C F4 0C F4 0C F4 0C F4 0C F4"
            "0C F4 0C F4 0C F4 02 01 75 30 03 01 22 9C 04 01 27 10 05 06 00 41 00 41 00 40 00 40 80 42 20 42"
            "06 05 00 00 00 00 00 00 00 00 00 00 07 01 00 01 08 01 14 B9 09 01 27 10 0A 01 00 00 3C 0D"
        ),
        "ack_ok": build_frame(1, Cmd.MOS, b"\x00"),
        "version_response": build_frame(1, Cmd.VERSION, b"HY-CW007-B200LT55-V1.0.0"),
        "clock_response": build_frame(1, Cmd.READ_CLOCK, _hex("18 05 09 0B 1D 26")),
        "record_count_response": build_frame(1, Cmd.STORAGE, _hex("19 00 00 00 23")),
        "end_of_records_response": build_frame(
            1, Cmd.STORAGE, _hex("1A 00 00 00 00 00 00 00 00 00 00 00 00")
        ),
    }
)

FAMILY = BmsFamily(
    name="tianpower",
    description="Tianpower / Basengreen LT55 binary protocol (7E ADR CMD LEN DATA CHK 0D, XOR^SUM)",
    new_decoder=TianpowerDecoder,
    describe=describe,
    examples=EXAMPLES,
    probe_request=request_realtime,
    is_probe_answer=is_probe_answer,
    boot=CARRIAGE,
    describe_answer=describe_answer,
)

__all__ = [
    "EXAMPLES",
    "FAMILY",
    "SOI",
    "SOI_ALT",
    "Ack",
    "Cmd",
    "RealtimeData",
    "TianpowerDecoder",
    "TpFrame",
    "build_frame",
    "checksum",
    "decode_realtime",
    "describe",
    "encode_realtime_data",
    "encode_request",
    "is_probe_answer",
    "parse_frame",
    "parse_request",
    "parse_response",
    "request_realtime",
]
