"""`bms-gateway modbus-docs`: write (or check) docs/modbus-registers.md and .csv from the maps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "modbus-docs", help="generate the Modbus register tables (markdown + CSV) from mappings/modbus"
    )
    p.add_argument("--out", type=Path, default=Path("docs"), help="directory to write into (default: docs)")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the files differ")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.north.modbus.docs import render_csv, render_markdown, write_docs

    out: Path = args.out
    if args.check:
        stale = [
            name
            for name, text in (
                ("modbus-registers.md", render_markdown()),
                ("modbus-registers.csv", render_csv()),
            )
            if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{out / name} is out of date; run: bms-gateway modbus-docs --out {out}", file=sys.stderr)
        return 1 if stale else 0
    try:
        written = write_docs(out)
    except OSError as err:  # e.g. --out names a file, or a folder we may not write
        print(f"bms-gateway modbus-docs: cannot write into {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
