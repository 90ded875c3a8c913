"""`bms-gateway can-decode --protocol NAME FILE|-`: decode a candump log through our DBC files.

For integrators checking what their inverter sees: every frame of a `candump -l` log
(`(1700000000.000000) can0 351#1402740E740ECC01`) or of candump's screen output
(`can0  351   [8]  14 02 74 0E 74 0E CC 01`) is decoded with the selected protocol's DBC, one line
per frame (or JSON lines with `--json`). Frames the protocol does not define are shown as
unknown; malformed lines are reported on stderr with their line number and skipped.
`--option KEY=VALUE` passes protocol options (e.g. `byte_order=little` for pylon-hv).

Exit codes: 0 every line was read, 1 some lines were malformed or the file is unreadable,
2 usage error (unknown protocol or option). Never touches a bus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from mappings.flags import load_outputs
from protocol.errors import RemoteProtocolError
from protocol.inverter.can import dbc, registry
from protocol.inverter.can.base import CanFrame, InverterProtocol, OptionValue

_LOG_LINE = re.compile(r"^\((?P<ts>[0-9.]+)\)\s+(?P<iface>\S+)\s+(?P<id>[0-9A-Fa-f]{1,8})#(?P<data>\S*)")
_SCREEN_LINE = re.compile(
    r"^\s*(?:\((?P<ts>[0-9.]+)\)\s+)?(?P<iface>\S+)\s+(?P<id>[0-9A-Fa-f]{1,8})\s+\[(?P<dlc>\d)\]\s*(?P<data>(?:[0-9A-Fa-f]{2}\s*)*)$"
)


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    line: int
    timestamp: float | None
    interface: str
    frame: CanFrame


class LineError(ValueError):
    pass


def parse_line(text: str, number: int) -> LoggedFrame | None:
    """One log line -> frame; None for blank/comment/remote/FD lines; LineError when malformed."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    m = _LOG_LINE.match(text)
    if m is not None:
        data = m["data"]
        if data.startswith("#") or data.upper().startswith("R"):
            return None  # CAN FD (##) or remote frame
        if len(data) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", data):
            raise LineError(f"line {number}: bad data {data!r}")
        payload = bytes.fromhex(data)
        extended = len(m["id"]) > 3
    else:
        m = _SCREEN_LINE.match(text)
        if m is None:
            raise LineError(f"line {number}: not a candump line: {text[:60]!r}")
        payload = bytes.fromhex(m["data"].replace(" ", ""))
        if len(payload) != int(m["dlc"]):
            raise LineError(f"line {number}: [{m['dlc']}] but {len(payload)} data bytes")
        extended = len(m["id"]) > 3
    ident = int(m["id"], 16)
    try:
        frame = CanFrame(ident, payload, extended)
    except Exception as err:
        raise LineError(f"line {number}: {err}") from None
    ts = float(m["ts"]) if m["ts"] else None
    return LoggedFrame(number, ts, m["iface"], frame)


def read_frames(lines: Iterable[str], errors: list[str]) -> Iterator[LoggedFrame]:
    for number, text in enumerate(lines, 1):
        try:
            item = parse_line(text, number)
        except LineError as err:
            errors.append(str(err))
            continue
        if item is not None:
            yield item


def describe(protocol: InverterProtocol, item: LoggedFrame) -> dict[str, object]:
    f = item.frame
    out: dict[str, object] = {
        "line": item.line,
        "timestamp": item.timestamp,
        "interface": item.interface,
        "id": f"{f.arbitration_id:08X}" if f.is_extended else f"{f.arbitration_id:03X}",
        "data": f.data.hex().upper(),
    }
    try:
        name, values = dbc.decode(protocol.db, CanFrame(protocol.dbc_id(f), f.data, f.is_extended))
    except RemoteProtocolError as err:
        out["message"] = None
        out["error"] = str(err)
        return out
    out["message"] = name
    out["signals"] = {k: (int(v) if float(v).is_integer() else round(v, 6)) for k, v in values.items()}
    return out


def _format(d: dict[str, object]) -> str:
    head = f"{d['timestamp'] if d['timestamp'] is not None else '-'} {d['interface']} {d['id']}#{d['data']}"
    if d["message"] is None:
        return f"{head}  (unknown: {d['error']})"
    signals = d["signals"]
    assert isinstance(signals, dict)
    return f"{head}  {d['message']}: " + " ".join(f"{k}={v}" for k, v in signals.items())


def _options(pairs: list[str]) -> dict[str, OptionValue]:
    out: dict[str, OptionValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        parsed: OptionValue = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        elif re.fullmatch(r"-?\d+", value):
            parsed = int(value)
        elif re.fullmatch(r"-?\d+\.\d*", value):
            parsed = float(value)
        out[key] = parsed
    return out


def decode_stream(protocol: InverterProtocol, stream: TextIO, out: TextIO, *, as_json: bool) -> list[str]:
    errors: list[str] = []
    for item in read_frames(stream, errors):
        d = describe(protocol, item)
        out.write((json.dumps(d) if as_json else _format(d)) + "\n")
    return errors


def run(args: argparse.Namespace) -> int:
    try:
        protocol = registry.create(args.protocol, _options(args.option), flag_outputs=load_outputs())
    except (KeyError, ValueError) as err:
        print(f"bms-gateway can-decode: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            errors = decode_stream(protocol, sys.stdin, sys.stdout, as_json=args.json)
        else:
            with open(args.file, encoding="utf-8", errors="replace") as stream:
                errors = decode_stream(protocol, stream, sys.stdout, as_json=args.json)
    except OSError as err:
        print(f"bms-gateway can-decode: cannot read {args.file}: {err.strerror or err}", file=sys.stderr)
        return 1
    for e in errors:
        print(f"bms-gateway can-decode: {e}", file=sys.stderr)
    return 1 if errors else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "can-decode",
        help="decode a candump log through an inverter protocol's DBC",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--protocol", required=True, help=f"one of: {', '.join(registry.names())}")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="protocol option")
    p.add_argument("--json", action="store_true", help="one JSON object per frame")
    p.add_argument("file", help="candump log file, or - for stdin")
    p.set_defaults(func=run)
