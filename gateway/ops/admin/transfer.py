"""Parameter files: export a pack's parameters as JSON, CSV, XML or XLSX, parse them back, diff them.

Every format carries the vendor tool's columns (manual 4.4.3): No., Name, Data, Unit, Set Range.
`Data` is written with exactly the decimals of the parameter's wire step, so export -> import is
lossless. CSV cells a spreadsheet could evaluate (`-50/200` set ranges, a name starting with `=`)
are written with a `'` prefix (`gateway.ops.security.cells`) and read back without it. The tool's
own XML schema is not published: our XML uses its column names as elements of
one `<Row>` per parameter (*inferred* layout; files from the vendor tool may need conversion).

Import validates every row against the family's parameter table (unknown names, values outside
the Set Range) and reports all problems at once; nothing here talks to a pack.

Per-pack state (`per_pack = true` in the table: Tianpower's full and remaining capacity) is left
out of exports and skipped on import unless the caller asks for it: cloning pack 1's file onto
pack 2 must not overwrite pack 2's own capacity.

This module must never perform I/O other than on the strings it is given.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.ops.security.cells import csv_cell, csv_uncell
from mappings.bms.params import ParameterTable, ParameterValueError, ParamSpec

FORMATS = ("json", "csv", "xml", "xlsx")
COLUMNS = ("No.", "Name", "Data", "Unit", "Set Range")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "xml": "application/xml",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
XLSX_MAGIC = b"PK\x03\x04"  # an XLSX file is a ZIP archive
MAX_FILE_BYTES = 1_000_000
_XML_TAGS = {"No.": "No", "Name": "Name", "Data": "Data", "Unit": "Unit", "Set Range": "SetRange"}


class ImportFormatError(ValueError):
    """The file cannot be read as a parameter file (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class Row:
    no: int
    name: str
    data: str  # the value as text, decimals of the wire step
    unit: str
    set_range: str  # "min/max" as the vendor tool shows it


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int  # 1-based data row in the file
    name: str
    value: object
    message: str


@dataclass(frozen=True, slots=True)
class DiffRow:
    name: str
    current: float | None
    new: float
    unit: str
    set_range: str


def format_value(spec: ParamSpec, value: float) -> str:
    return f"{value:.{spec.decimals}f}"


def set_range(spec: ParamSpec) -> str:
    return f"{spec.min:g}/{spec.max:g}"


def format_of_name(filename: str) -> str | None:
    """The format a file name's extension stands for (`p1.xlsx` -> "xlsx"), or None."""
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    return ext if ext in FORMATS else None


def rows_of(table: ParameterTable, values: Mapping[str, float], *, per_pack: bool = False) -> list[Row]:
    """The export rows, in table order, of the parameters that have a value (per-pack state only
    with `per_pack`)."""
    out: list[Row] = []
    for spec in table:
        if spec.per_pack and not per_pack:
            continue
        if spec.name in values:
            v = values[spec.name]
            out.append(Row(len(out) + 1, spec.name, format_value(spec, v), spec.unit, set_range(spec)))
    return out


def render_file(
    fmt: str,
    table: ParameterTable,
    values: Mapping[str, float],
    meta: Mapping[str, Any],
    *,
    per_pack: bool = False,
) -> bytes:
    """The file in `fmt` (json | csv | xml as UTF-8 text, xlsx as a workbook)."""
    if fmt == "xlsx":
        return _render_xlsx(rows_of(table, values, per_pack=per_pack), meta)
    return render(fmt, table, values, meta, per_pack=per_pack).encode("utf-8")


def _render_xlsx(rows: list[Row], meta: Mapping[str, Any]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Parameters"
    ws.append(list(COLUMNS))
    for r in rows:
        ws.append([r.no, r.name, r.data, r.unit, r.set_range])  # Data as text: exactly its decimals
    info = wb.create_sheet("Info")
    for key, value in meta.items():
        info.append([str(key), str(value)])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def render(
    fmt: str,
    table: ParameterTable,
    values: Mapping[str, float],
    meta: Mapping[str, Any],
    *,
    per_pack: bool = False,
) -> str:
    """The file text in `fmt` (json | csv | xml); `meta` (pack, family, read time) goes in a header."""
    rows = rows_of(table, values, per_pack=per_pack)
    if fmt == "json":
        doc = {
            **meta,
            "columns": list(COLUMNS),
            "parameters": [
                {"No.": r.no, "Name": r.name, "Data": r.data, "Unit": r.unit, "Set Range": r.set_range}
                for r in rows
            ],
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([csv_cell(v) for v in (r.no, r.name, r.data, r.unit, r.set_range)])
        return buf.getvalue()
    if fmt == "xml":
        root = ET.Element("Parameters", {k: str(v) for k, v in meta.items()})
        for r in rows:
            el = ET.SubElement(root, "Row")
            for col, text in zip(COLUMNS, (str(r.no), r.name, r.data, r.unit, r.set_range), strict=True):
                ET.SubElement(el, _XML_TAGS[col]).text = text
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: json, csv, xml (xlsx: render_file)")


def parse_file(data: bytes, fmt: str | None = None) -> list[tuple[str, str]]:
    """(Name, Data) pairs of a parameter file given as bytes: XLSX (by `fmt` or its ZIP signature),
    else UTF-8 text in JSON, CSV or XML."""
    if len(data) > MAX_FILE_BYTES:
        raise ImportFormatError(f"file larger than {MAX_FILE_BYTES} bytes")
    if fmt == "xlsx" or (fmt is None and data.startswith(XLSX_MAGIC)):
        return _parse_xlsx(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportFormatError("the file is not UTF-8 text (nor an XLSX workbook)") from None
    return parse(text, fmt)


def _parse_xlsx(data: bytes) -> list[tuple[str, str]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise ImportFormatError(f"not a readable XLSX workbook: {err}") from None
    try:
        ws = wb["Parameters"] if "Parameters" in wb.sheetnames else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        cols = [str(c).strip() if c is not None else "" for c in (header or ())]
        if "Name" not in cols or "Data" not in cols:
            raise ImportFormatError(f"XLSX: the first row needs the columns Name and Data (got {cols})")
        ni, di = cols.index("Name"), cols.index("Data")
        out = []
        for i, rec in enumerate(rows, 1):
            if rec is None or all(c is None or str(c).strip() == "" for c in rec):
                continue
            name = rec[ni] if ni < len(rec) else None
            value = rec[di] if di < len(rec) else None
            out.append(_pair(f"XLSX row {i}", name, value))
    finally:
        wb.close()
    if not out:
        raise ImportFormatError("XLSX: no rows with Name and Data")
    return out


def detect_format(text: str) -> str:
    s = text.lstrip("\ufeff \t\r\n")
    if s.startswith("{"):
        return "json"
    if s.startswith("<"):
        return "xml"
    return "csv"


def parse(text: str, fmt: str | None = None) -> list[tuple[str, str]]:
    """(Name, Data) pairs of a parameter file, in file order (ImportFormatError when unreadable)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ImportFormatError(f"file larger than {MAX_FILE_BYTES} bytes")
    fmt = fmt or detect_format(text)
    if fmt == "json":
        return _parse_json(text)
    if fmt == "csv":
        return _parse_csv(text)
    if fmt == "xml":
        return _parse_xml(text)
    raise ImportFormatError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _pair(where: str, name: object, data: object) -> tuple[str, str]:
    if not isinstance(name, str) or not name.strip():
        raise ImportFormatError(f"{where}: missing Name")
    if isinstance(data, bool) or not isinstance(data, str | int | float):
        raise ImportFormatError(f"{where} ({name}): Data must be a number, got {data!r}")
    return name.strip(), str(data).strip()


def _parse_json(text: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ImportFormatError(f"not valid JSON: {err}") from None
    items = doc.get("parameters") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ImportFormatError('JSON: expected an object with a "parameters" list')
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ImportFormatError(f"JSON row {i}: expected an object with Name and Data")
        out.append(_pair(f"JSON row {i}", item.get("Name"), item.get("Data")))
    return out


def _parse_csv(text: str) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFormatError("CSV: empty file") from None
    except csv.Error as err:
        raise ImportFormatError(f"CSV: {err}") from None
    cols = [h.strip() for h in header]
    if "Name" not in cols or "Data" not in cols:
        raise ImportFormatError(f"CSV: the header needs the columns Name and Data (got {', '.join(cols)})")
    ni, di = cols.index("Name"), cols.index("Data")
    out = []
    try:
        for i, rec in enumerate(reader, 1):
            if not any(c.strip() for c in rec):
                continue
            if len(rec) <= max(ni, di):
                raise ImportFormatError(f"CSV row {i}: expected {len(cols)} columns, got {len(rec)}")
            out.append(_pair(f"CSV row {i}", csv_uncell(rec[ni]), csv_uncell(rec[di])))
    except csv.Error as err:
        raise ImportFormatError(f"CSV: {err}") from None
    return out


def _parse_xml(text: str) -> list[tuple[str, str]]:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ImportFormatError("XML: document type declarations are not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ImportFormatError(f"not valid XML: {err}") from None
    out = []
    for i, row in enumerate(root.iter("Row"), 1):
        out.append(_pair(f"XML row {i}", row.findtext("Name"), row.findtext("Data")))
    if not out:
        raise ImportFormatError("XML: no <Row> elements with Name and Data")
    return out


def per_pack_rows(table: ParameterTable, pairs: list[tuple[str, str]]) -> list[RowProblem]:
    """The rows naming per-pack state (skipped on import unless asked for), with the reason."""
    return [
        RowProblem(
            i,
            name,
            data,
            f"{name} is this pack's own state (per-pack); skipped (include it explicitly to write it)",
        )
        for i, (name, data) in enumerate(pairs, 1)
        if name in table and table.get(name).per_pack
    ]


def validate_rows(
    table: ParameterTable, pairs: list[tuple[str, str]], *, per_pack: bool = True
) -> tuple[dict[str, float], list[RowProblem]]:
    """Values by name, and every problem (unknown name, not a number, outside the Set Range, twice).
    Without `per_pack`, rows of per-pack state are left out (see `per_pack_rows`)."""
    values: dict[str, float] = {}
    problems: list[RowProblem] = []
    seen: set[str] = set()
    for i, (name, data) in enumerate(pairs, 1):
        if name not in table:
            problems.append(RowProblem(i, name, data, f"unknown parameter {name!r} for {table.family}"))
            continue
        name = table.canonical(name)  # an alias (e.g. PACE's older "Cell OV Alarm") reads as the name
        if not per_pack and table.get(name).per_pack:
            continue
        if name in seen:
            problems.append(RowProblem(i, name, data, f"{name} appears more than once"))
            continue
        seen.add(name)
        try:
            number = float(data)
        except ValueError:
            problems.append(RowProblem(i, name, data, f"{name}: {data!r} is not a number"))
            continue
        if not math.isfinite(number):
            problems.append(RowProblem(i, name, data, f"{name}: {data!r} is not a finite number"))
            continue
        try:
            values[name] = table.get(name).validate(number)
        except ParameterValueError as err:
            problems.append(RowProblem(i, name, data, str(err)))
    return values, problems


def same_value(spec: ParamSpec, a: float, b: float) -> bool:
    """Equal on the wire grid (half a wire step of slack for float formatting)."""
    return abs(a - b) <= abs(spec.scale) / 2 * 0.999 + 1e-9


def diff(table: ParameterTable, current: Mapping[str, float], new: Mapping[str, float]) -> list[DiffRow]:
    """The rows whose new value differs from the current one (or whose current value is unknown)."""
    out = []
    for name, value in new.items():
        spec = table.get(name)
        cur = current.get(name)
        if cur is None or not same_value(spec, cur, value):
            out.append(DiffRow(name, cur, value, spec.unit, set_range(spec)))
    return out
