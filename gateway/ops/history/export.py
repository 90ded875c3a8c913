"""CSV and XLSX renderings of a table (header + rows), for history records and recordings.

Both formats hold exactly the same rows and columns; empty cells (a value the pack did not send, a
sample taken while a pack was offline) stay empty in both, never zero. XLSX is written with
openpyxl in write-only mode (constant memory). Timestamps are UTC; the epoch seconds column is kept
next to the readable one so nothing is lost to formatting. Every cell goes through
`gateway.ops.security.cells` (texts a spreadsheet could evaluate are neutralised; numbers stay numbers).

This module never reads a database or a bus; it only formats what it is given.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.ops.security.cells import csv_cell, xlsx_cell

FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([csv_cell(v) for v in header])
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def to_xlsx(header: Sequence[str], rows: Iterable[Sequence[Any]], *, sheet: str = "records") -> bytes:
    from openpyxl import Workbook  # imported here: only exports pay for it

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=sheet[:31] or "records")
    ws.append([xlsx_cell(ws, v) for v in header])
    for row in rows:
        ws.append([xlsx_cell(ws, v) for v in row])
    out = io.BytesIO()
    wb.save(out)
    wb.close()
    return out.getvalue()


def render(
    fmt: str, header: Sequence[str], rows: Iterable[Sequence[Any]], *, sheet: str = "records"
) -> bytes:
    """`fmt` is "csv" or "xlsx" (ValueError otherwise)."""
    if fmt == "csv":
        return to_csv(header, rows)
    if fmt == "xlsx":
        return to_xlsx(header, rows, sheet=sheet)
    raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
