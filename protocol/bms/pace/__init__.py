"""PACE BMS family (ASCII `~…\\r` protocol, VER 0x25 and 0x20, incl. EG4's CID1 0x4A variant).

Submodules: `frame` (framing, checksums, incremental decoder), `values` (analog and status payloads,
flags), `commands` (CID2 table, request builders/parsers, every other payload). This package exposes
`FAMILY` for `protocol.bms.registry` and `describe()` for the `decode` command.

Sans-I/O: nothing here may import asyncio, serial, sockets, python-can or pymodbus.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Mapping
from typing import Any

from protocol.bms.base import BmsFamily, Frame
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.boot import CARRIAGE
from protocol.bms.pace.frame import (
    KNOWN_CID1,
    RTN_TEXT,
    PaceDecoder,
    PaceFrame,
    parse_frame,
    rtn_text,
)
from protocol.errors import ProtocolError, RemoteProtocolError

__all__ = ["EXAMPLES", "FAMILY", "PaceDecoder", "PaceFrame", "describe", "jsonable", "parse_frame"]


def jsonable(x: Any) -> Any:
    """JSON-able view of a payload: dataclass fields (units in their names), derived values, flags."""
    if isinstance(x, enum.Enum):
        return x.name.lower()
    if isinstance(x, bool | int | float | str) or x is None:
        return x
    if isinstance(x, bytes):
        return x.hex().upper()
    if isinstance(x, dt.datetime):
        return x.isoformat(sep=" ")
    if isinstance(x, tuple | list):
        return [jsonable(i) for i in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, v.AnalogBlock):
            out.update(
                full_capacity_ah=x.full_capacity_ah,
                cycles=x.cycles,
                design_capacity_ah=x.design_capacity_ah,
                soc_pct=x.soc_pct,
                soh_pct=x.soh_pct,
            )
        if isinstance(x, c.Protocols):
            out.update(can_name=x.can_name, rs485_name=x.rs485_name, mode_name=x.mode_name)
        if isinstance(x, c.GroupValues):
            out["fields"] = {f.name: val for f, val in zip(x.layout.fields, x.values, strict=True)}
        flags = getattr(x, "flags", None)
        if callable(flags):
            out["flags"] = flags().as_dict()
        if hasattr(x, "balancing_cells"):
            out["balancing_cells"] = list(x.balancing_cells)
        return out
    return repr(x)


def _interpretations(frame: PaceFrame) -> list[dict[str, Any]]:
    """Every response payload this INFO decodes as exactly (responses do not name their command)."""
    info = frame.info
    variant = c.variant_of(frame.version, frame.cid1)
    found: list[dict[str, Any]] = []

    def attempt(name: str, fn: Callable[[], Any], exact: Callable[[Any], bool] = lambda _r: True) -> None:
        try:
            result = fn()
        except ProtocolError:
            return
        if exact(result):
            found.append({"as": name, "value": jsonable(result)})

    if not info:
        return [{"as": "acknowledge (or end of history records, or the version answer)", "value": {}}]
    no_trailing: Callable[[Any], bool] = lambda r: not r.trailing  # noqa: E731
    attempt("analog", lambda: v.decode_analog(info, variant=variant), no_trailing)
    attempt("analog_bank", lambda: v.decode_analog(info, bank=True, variant=variant), no_trailing)
    if variant is v.Variant.V25:
        attempt("status", lambda: v.decode_status(info), no_trailing)
        attempt("status_bank", lambda: v.decode_status(info, bank=True), no_trailing)
        attempt("history_record", lambda: c.decode_history(info))
        if len(info) == 6:
            attempt("date_time", lambda: c.decode_datetime(info, variant))
            attempt("capacities", lambda: c.decode_capacities(info))
        if len(info) == 3:
            attempt("protocols", lambda: c.decode_protocols(info))
        if len(info) in (24, 25):
            attempt("system_parameters", lambda: c.decode_system_parameters(info))
        if len(info) == 32:
            attempt("manufacturer", lambda: c.decode_manufacturer_v20(info))
        if len(info) == 2:
            attempt("switch_ack", lambda: c.decode_switch_ack(info))
        if len(info) == 1:
            attempt("pack_count_or_mos_answer", lambda: c.decode_pack_count(info))
        for layout in c.PARAM_GROUPS:
            attempt(
                f"parameters_{layout.key}",
                lambda layout=layout: c.decode_group_read(layout.read, info),  # type: ignore[misc]
                lambda g: not g.extra,
            )
        if len(info) in (20, 40) or all(32 <= b < 127 or b == 0 for b in info):
            attempt("text", lambda: c.decode_text(info))
    elif variant is v.Variant.EG4:
        attempt("status", lambda: v.decode_status_eg4(info))
        if len(info) == 7:
            attempt("date_time", lambda: c.decode_datetime(info, variant))
        attempt("manufacturer", lambda: c.decode_manufacturer_v20(info))
    else:
        attempt("status", lambda: v.decode_status_v20(info), no_trailing)
        if len(info) in (24, 25):
            attempt("system_parameters", lambda: c.decode_system_parameters(info))
        if len(info) == 7:
            attempt("date_time", lambda: c.decode_datetime(info, variant))
        attempt("manufacturer", lambda: c.decode_manufacturer_v20(info))
    return found


def describe(raw: bytes) -> Mapping[str, Any]:
    """Decode one captured frame (request or response) into JSON-able data.

    Raises RemoteProtocolError with a clear message for a bad checksum, length or unknown command.
    """
    frame = parse_frame(raw)
    out: dict[str, Any] = {
        "protocol": "pace",
        "version": f"0x{frame.version:02X}",
        "variant": c.variant_of(frame.version, frame.cid1).value,
        "address": frame.address,
        "cid1": f"0x{frame.cid1:02X}",
        "kind": "request" if frame.is_request else "response",
        "info_hex": frame.info.hex().upper(),
    }
    if frame.is_request:
        req = c.parse_request(frame)
        out["cid2"] = f"0x{frame.command:02X}"
        out["command"] = req.name
        if req.command_value is not None:
            out["command_value"] = req.command_value
            out["whole_bank"] = req.bank
        if req.argument is not None:
            out["argument"] = jsonable(req.argument)
        return out
    if frame.command >= 0x40 and frame.command not in RTN_TEXT:
        # return codes are small numbers; a large unknown CID2 is a command this codec does not know
        raise RemoteProtocolError(f"PACE frame with unknown command CID2 0x{frame.command:02X}")
    out["rtn"] = frame.command
    out["rtn_text"] = rtn_text(frame.command)
    out["interpretations"] = _interpretations(frame)
    return out


def _answer_decoder(req: c.PaceRequest, variant: v.Variant) -> Callable[[bytes], Any] | None:
    """The decoder of the answer to `req` (None: a command whose answer carries no INFO to decode)."""
    cmd = req.cid2
    if cmd == c.Cmd.ANALOG:
        return lambda info: v.decode_analog(info, bank=req.bank, variant=variant)
    if cmd == c.Cmd.STATUS:
        if variant is v.Variant.V25:
            return lambda info: v.decode_status(info, bank=req.bank)
        return v.decode_status_eg4 if variant is v.Variant.EG4 else v.decode_status_v20
    simple: dict[int, Callable[[bytes], Any]] = {
        c.Cmd.PACK_COUNT: c.decode_pack_count,
        c.Cmd.HARDWARE_VERSION: c.decode_text,
        c.Cmd.SERIAL_NUMBER: c.decode_text,
        c.Cmd.V20_SERIAL: c.decode_text,
        c.Cmd.READ_CAPACITIES: c.decode_capacities,
        c.Cmd.READ_PROTOCOLS: c.decode_protocols,
        c.Cmd.SYSTEM_PARAMETERS: c.decode_system_parameters,
        c.Cmd.V20_MANUFACTURER: c.decode_manufacturer_v20,
        c.Cmd.READ_HISTORY: c.decode_history,
        c.Cmd.SWITCH: c.decode_switch_ack,
        c.Cmd.CHARGE_MOS: c.decode_mos_ack,
        c.Cmd.DISCHARGE_MOS: c.decode_mos_ack,
    }
    if cmd in simple:
        return simple[cmd]
    if cmd in (c.Cmd.READ_TIME, c.Cmd.V20_READ_TIME):
        return lambda info: c.decode_datetime(info, variant)
    if cmd in c.GROUPS_BY_READ:
        return lambda info: c.decode_group_read(cmd, info)
    return None


def describe_answer(request_raw: bytes, answer_raw: bytes) -> Mapping[str, Any]:
    """Decode an answer as the answer to `request_raw` (a PACE answer does not name its command, and
    a bank answer is only readable with the request's INFO FF). Raises RemoteProtocolError when the
    first frame is not a request, the second not a response from the same address, or the INFO
    does not decode as that command's answer."""
    req_frame, answer = parse_frame(request_raw), parse_frame(answer_raw)
    if not req_frame.is_request:
        raise RemoteProtocolError("--request: the first frame is a response, not a request")
    out = dict(describe(answer_raw))
    if out["kind"] != "response":
        raise RemoteProtocolError("the answer frame is a request, not a response")
    if answer.address != req_frame.address:
        raise RemoteProtocolError(
            f"the answer comes from address {answer.address}, the request asks address {req_frame.address}"
        )
    req = c.parse_request(req_frame)
    out.pop("interpretations", None)
    out["request"] = {k: val for k, val in describe(request_raw).items() if k not in ("protocol", "kind")}
    out["answer_to"] = req.name
    if answer.command != 0:
        return out  # an error answer: its RTN says it all
    decoder = _answer_decoder(req, c.variant_of(answer.version, answer.cid1))
    if decoder is None:
        if answer.info:
            out["value"] = {"info_hex": answer.info.hex().upper(), "note": "no decoder for this answer"}
        return out
    out["value"] = jsonable(decoder(answer.info))
    return out


EXAMPLES: Mapping[str, bytes] = {
    "v25_analog_request": b"~25014642E00201FD30\r",
    "v25_status_request": b"~25014644E00201FD2E\r",
    "v20_eg4_analog_request": b"~20014A420000FDA2\r",
    "version_probe": b"~2000464F0000FD9A\r",
    "version_answer_v20": b"~200046000000FDB4\r",
    "version_answer_v26": b"~260046000000FDAE\r",
    "v25_ok": b"~250046000000FDAF\r",
    "v25_protocols_read": b"~250046EB0000FD88\r",
    "v25_protocols_answer": b"~25004600A006131400FC6F\r",
    "v25_protocols_write": b"~250046ECA006131400FC47\r",
    "v25_analog_response": (
        b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC60CC7"
        b"060B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4\r"
    ),
}


def _is_probe_answer(frame: Frame) -> bool:
    return isinstance(frame, PaceFrame) and not frame.is_request and frame.cid1 in KNOWN_CID1


FAMILY = BmsFamily(
    name="pace",
    description="PACE ASCII protocol (VER 0x25 and 0x20, incl. EG4 CID1 0x4A), PbmsTools packs",
    new_decoder=PaceDecoder,
    describe=describe,
    examples=EXAMPLES,
    probe_request=c.version_probe,
    is_probe_answer=_is_probe_answer,
    boot=CARRIAGE,
    describe_answer=describe_answer,
)
