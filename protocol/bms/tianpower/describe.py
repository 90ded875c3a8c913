"""Human/JSON description of one captured Tianpower frame (request or response), for `decode`.

Values carry their unit in the key (`voltage_v`, `current_a`, `temperature_c`), flags are listed by
name, parameter tables are decoded through `mappings/bms/tianpower.toml`. A frame that is not valid
raises RemoteProtocolError with a message saying what is wrong (checksum, length, command).

Sans-I/O, no state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

from mappings.bms.params import load_table
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import parse_frame
from protocol.bms.tianpower.realtime import RealtimeData, TempSensor
from protocol.errors import RemoteProtocolError


def _plain(value: Any) -> Any:
    if isinstance(value, enum.IntFlag):
        return [member.name.lower() for member in type(value) if member.name and member in value]
    if isinstance(value, enum.IntEnum):
        return value.name.lower()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex(" ")
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def describe_realtime(rt: RealtimeData) -> dict[str, Any]:
    cells = rt.cell_voltages_v
    temps = []
    for i, t in enumerate(rt.temperatures, 1):
        entry: dict[str, Any] = {
            "sensor": t.sensor.value,
            "tag": f"0x{t.tag:02X}",
            "temperature_c": t.value_c,
        }
        if t.tag == 0x80:
            entry["note"] = "tag 0x80 read as the MOS sensor (inferred from the EG4 capture)"
        if t.sensor is TempSensor.CELL:
            entry["label"] = f"TEMP{i}"
        temps.append(entry)
    flags = rt.flags()
    return {
        "cell_count": len(cells),
        "cell_voltages_v": list(cells),
        "cell_min_v": min(cells),
        "cell_max_v": max(cells),
        "cell_diff_v": round(max(cells) - min(cells), 3),
        "balancing_cells": list(rt.balancing_cells),
        "cells_over_voltage": [i for i, c in enumerate(rt.cells, 1) if c.over_voltage],
        "cells_under_voltage": [i for i, c in enumerate(rt.cells, 1) if c.under_voltage],
        "current_a": rt.current_a,
        "soc_pct": rt.soc_pct,
        "full_capacity_ah": rt.full_capacity_ah,
        "remaining_capacity_ah": rt.remaining_capacity_ah,
        "temperatures": temps,
        "status_bytes": rt.status.hex(" "),
        "protections": [f.name for f in flags if f.kind.value == "protection"],
        "alarms": [f.name for f in flags if f.kind.value == "alarm"],
        "faults": [f.name for f in flags if f.kind.value == "fault"],
        "states": [f.name for f in flags if f.kind.value == "state"],
        "undocumented_bits": list(rt.unknown_bits()),
        "meanings": sorted({f.meaning.value for f in rt.active_flags() if f.level != "state"}),
        "charge_mos_on": rt.charge_mos_on,
        "discharge_mos_on": rt.discharge_mos_on,
        "heater_on": rt.heater_on,
        "cycles": rt.cycles,
        "voltage_v": rt.voltage_v,
        "soh_pct": rt.soh_pct,
        "extra_protection_word": None if rt.extra_protection is None else f"0x{rt.extra_protection:04X}",
        "counters": [
            {"group": f"0x{c.group:02X}", "values": list(c.values), "meaning": c.hypothesis}
            for c in rt.counters
        ],
    }


def guess_table(data: m.ParamTableData) -> m.ParamTable | None:
    """The response does not say which table it is; the record count does for the known firmwares."""
    ids = [r.record for r in data.records]
    if not ids:
        return None
    if max(ids) > 0x2A or len(ids) == 51:
        return m.ParamTable.PROTECTION
    if len(ids) == 43:
        return m.ParamTable.ALARM
    return None


def describe_params(data: m.ParamTableData) -> dict[str, Any]:
    table = data.table if data.table is not None else guess_table(data)
    out: dict[str, Any] = {
        "table": None if table is None else table.name.lower(),
        "table_from": "request"
        if data.table is not None
        else ("record count" if table is not None else None),
        "record_count": len(data.records),
    }
    specs = (
        {}
        if table is None
        else {p.wire["record"]: p for p in load_table("tianpower").where_wire(table=int(table))}
    )
    rows = []
    for r in data.records:
        spec = specs.get(r.record)
        row: dict[str, Any] = {"record": f"0x{r.record:02X}", "raw": r.raw}
        if spec is not None:
            row.update(name=spec.name, label=spec.label, value=spec.from_wire(r.raw), unit=spec.unit)
        rows.append(row)
    out["parameters"] = rows
    return out


def describe_response(resp: m.Response) -> dict[str, Any]:
    if isinstance(resp, RealtimeData):
        return describe_realtime(resp)
    if isinstance(resp, m.ParamTableData):
        return describe_params(resp)
    if isinstance(resp, m.Ack):
        return {"ack": True, "code": resp.code, "ok": resp.ok, "meaning": resp.meaning}
    if isinstance(resp, m.HistoryFrame):
        return {
            "marker": resp.marker,
            "records": [
                {
                    "event_code": r.event_code,
                    "event": r.event,
                    "time": _plain(r.when),
                    "cell_count": r.cell_count,
                    "cell_voltages_v": list(r.cells_v),
                    "temperatures_c": list(r.temperatures_c),
                    "current_a": r.current_a,
                    "voltage_v": r.voltage_v,
                    "soc_pct": r.soc_pct,
                }
                for r in resp.records
            ],
        }
    if isinstance(resp, m.HistoryEnd):
        return {"end_of_data": True}
    if isinstance(resp, m.ClockData):
        return {"time": _plain(resp.when)}
    if isinstance(resp, m.HeaterThreshold):
        return {"which": resp.which, "temperature_c": resp.temperature_c, "prefix": resp.prefix.hex(" ")}
    if isinstance(resp, m.BoardInfo):
        return {"data": resp.data.hex(" "), "text": resp.text, "note": "layout not publicly documented"}
    out = _plain(resp)
    assert isinstance(out, dict)
    out.pop("command", None)
    return out


def _request_details(req: m.Request) -> dict[str, Any]:
    out = _plain(req)
    assert isinstance(out, dict)
    out.pop("address", None)
    out.pop("command", None)
    if isinstance(req, m.WriteParamTable):
        specs = {p.wire["record"]: p for p in load_table("tianpower").where_wire(table=int(req.table))}
        rows = []
        for r in req.records:
            row: dict[str, Any] = {"record": f"0x{r.record:02X}", "raw": r.raw}
            if r.record in specs:
                s = specs[r.record]
                row.update(name=s.name, value=s.from_wire(r.raw), unit=s.unit)
            rows.append(row)
        out["records"] = rows
        out["inferred"] = "parameter-table writes are not publicly documented (mirror of the read format)"
    if isinstance(req, m.WriteCapacity):
        out["capacity_ah"] = round(req.raw * m.CAPACITY_SCALE_AH, 2)
        out["note"] = "0.01 Ah per unit is inferred"
    return out


def describe(raw: bytes) -> Mapping[str, Any]:
    """Describe exactly one frame (see the module docstring)."""
    frame = parse_frame(raw)
    cmd = frame.command
    if cmd not in m.COMMAND_TITLES:
        raise RemoteProtocolError(f"unknown command 0x{cmd:02X} (frame is otherwise valid)")
    head: dict[str, Any] = {
        "protocol": "tianpower",
        "start_byte": f"0x{frame.soi:02X}",
        "address": frame.address,
        "command": f"0x{cmd:02X}",
        "command_name": m.COMMAND_TITLES[cmd],
        "length": len(frame.raw),
    }
    if cmd in m.DANGEROUS_COMMANDS:
        head["dangerous"] = True
    if frame.is_request:
        req = m.parse_request(frame)
        return {**head, "direction": "request", "request": type(req).__name__, **_request_details(req)}
    resp = m.parse_response(frame)
    return {**head, "direction": "response", "response": type(resp).__name__, **describe_response(resp)}


def describe_answer(request_raw: bytes, answer_raw: bytes) -> Mapping[str, Any]:
    """Describe an answer read as the answer to `request_raw`: the request selects layouts the answer
    does not carry (the parameter table of a CMD 0x43 answer). Raises RemoteProtocolError when the
    first frame is not a request, the second not a response to it (address or command differ)."""
    req_frame, frame = parse_frame(request_raw), parse_frame(answer_raw)
    if not req_frame.is_request:
        raise RemoteProtocolError("--request: the first frame is a response, not a request")
    if frame.is_request:
        raise RemoteProtocolError("the answer frame is a request, not a response")
    if (frame.address, frame.command) != (req_frame.address, req_frame.command):
        raise RemoteProtocolError(
            f"the answer (address {frame.address}, command 0x{frame.command:02X}) does not answer the "
            f"request (address {req_frame.address}, command 0x{req_frame.command:02X})"
        )
    req = m.parse_request(req_frame)
    resp = m.parse_response(frame, req)
    head = {k: val for k, val in describe(answer_raw).items() if k in _HEAD_KEYS}
    return {
        **head,
        "direction": "response",
        "request": {"request": type(req).__name__, **_request_details(req)},
        "response": type(resp).__name__,
        **describe_response(resp),
    }


_HEAD_KEYS = ("protocol", "start_byte", "address", "command", "command_name", "length", "dangerous")
