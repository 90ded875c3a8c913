"""`bms-gateway decode --protocol {tianpower,pace} [--request FRAME] HEX...`: decode one captured frame
to JSON.

Generic over the BMS family registry: it calls `FAMILY.describe(bytes, records)`, or, with
`--request`, `FAMILY.describe_answer(request, answer, records)`: the answer read as the answer to
that request (a PACE answer does not name its command, and a bank answer needs the request's INFO
FF; a Tianpower parameter-table answer needs the request's table selector). `records` names
parameter records from the family's table in mappings/ (the codec knows no table). Frames are given
as hex (spaces, `0x` prefixes and `:`/`,` separators allowed) or, for ASCII protocols such as PACE,
as the text itself starting with `~` (a missing trailing carriage return is added).

Exit codes: 0 decoded, 1 the frame is invalid (bad checksum, wrong length, unknown command: the
message says which), 2 the input is not hex / usage error. Never touches a bus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from mappings.bms.params import load_table
from protocol.bms.base import RecordNamer
from protocol.bms.registry import get
from protocol.bms.registry import names as names_of_families
from protocol.errors import RemoteProtocolError

_SEPARATORS = re.compile(r"[\s:,]+")


class InputError(ValueError):
    """The command-line input is not a frame in a form we read."""


def parse_input(parts: list[str]) -> bytes:
    """Bytes of the captured frame given on the command line (see the module docstring)."""
    text = " ".join(parts).strip()
    if not text:
        raise InputError("no frame given")
    if text.startswith("~"):
        ascii_text = text.replace("\\r", "\r")
        if not ascii_text.endswith("\r"):
            ascii_text += "\r"
        if not ascii_text.isascii():
            raise InputError("an ASCII frame must contain only ASCII characters")
        return ascii_text.encode("ascii")
    tokens = [t[2:] if t.lower().startswith("0x") else t for t in _SEPARATORS.split(text) if t]
    digits = "".join(tokens)
    if not re.fullmatch(r"[0-9A-Fa-f]*", digits):
        bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
        raise InputError(f"not hex: unexpected character {bad!r}")
    if len(digits) % 2:
        raise InputError(f"odd number of hex digits ({len(digits)}); every byte needs two")
    if any(len(t) % 2 for t in tokens):
        raise InputError("a byte is split across separators; write two hex digits per byte")
    return bytes.fromhex(digits)


def record_namer(family: str) -> RecordNamer:
    """Names parameter records (table, record id, raw value) from the family's parameter table in
    mappings/ (the codec knows no table): name, label, decoded value and unit."""
    table = load_table(family)
    index = {(p.wire.get("table"), p.wire.get("record")): p for p in table.params if "record" in p.wire}

    def name(table_id: int, record: int, raw: int) -> Mapping[str, Any] | None:
        spec = index.get((table_id, record))
        if spec is None:
            return None
        return {"name": spec.name, "label": spec.label, "value": spec.from_wire(raw), "unit": spec.unit}

    return name


def run(args: argparse.Namespace) -> int:
    try:
        raw = parse_input(args.hex)
    except InputError as err:
        print(f"bms-gateway decode: {err}", file=sys.stderr)
        return 2
    family = get(args.protocol)
    request: bytes | None = None
    if args.request is not None:
        try:
            request = parse_input([args.request])
        except InputError as err:
            print(f"bms-gateway decode: --request: {err}", file=sys.stderr)
            return 2
        if family.describe_answer is None:
            print(f"bms-gateway decode: --request is not supported for {family.name}", file=sys.stderr)
            return 2
    records = record_namer(family.name)
    if request is not None:
        try:  # each frame on its own first, so that a refusal names the frame that is wrong
            family.describe(request, records)
        except RemoteProtocolError as err:
            print(
                f"bms-gateway decode: --request: invalid {family.name} frame ({len(request)} bytes): {err}",
                file=sys.stderr,
            )
            return 1
    try:
        if request is not None and family.describe_answer is not None:
            described: Any = dict(family.describe_answer(request, raw, records))
        else:
            described = dict(family.describe(raw, records))
    except RemoteProtocolError as err:
        print(f"bms-gateway decode: invalid {family.name} frame ({len(raw)} bytes): {err}", file=sys.stderr)
        return 1
    print(json.dumps(described, indent=None if args.compact else 2, ensure_ascii=False, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = sorted(names_of_families())
    parser = subparsers.add_parser(
        "decode",
        help="decode one captured BMS frame (request or response) to JSON",
        description="Decode one captured frame and print it as JSON with units and flag names. "
        "Example: bms-gateway decode --protocol tianpower 7E 01 01 00 FE 0D",
    )
    parser.add_argument("--protocol", required=True, choices=names, help="BMS protocol family")
    parser.add_argument("--compact", action="store_true", help="one-line JSON")
    parser.add_argument(
        "--request",
        metavar="FRAME",
        help="the request this frame answers (one argument: quote hex with spaces); the answer is "
        "then decoded as that command's answer, e.g. a PACE bank answer to INFO FF",
    )
    parser.add_argument(
        "hex",
        nargs="+",
        metavar="HEX",
        help="the frame as hex bytes (spaces allowed) or, for PACE, the ASCII text starting with '~'",
    )
    parser.set_defaults(func=run)
