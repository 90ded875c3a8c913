"""Spreadsheet cells that stay data: the one guard every CSV/XLSX writer of the gateway uses.

A text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by
spreadsheet programs (CSV/formula injection). A pack reports its serial number, event names and
other texts by itself, so any exported text may carry one. `csv_cell()` prefixes such a text with
an apostrophe (the spreadsheet convention for "this is text"); `xlsx_cell()` keeps the text as it
is but stores it as a text cell with the quote-prefix style, never as a formula. Numbers stay
numbers: an int/float, and a text that is exactly a decimal number (`-20.0`, `+3.5e-2`), is left
alone; `-50/200` (a set range) is text and is neutralised.

This module never changes a number and never drops a character of a text (the CSV prefix is the
only addition, and `csv_uncell()` removes it again on import).
"""

from __future__ import annotations

import re
from typing import Any

DANGEROUS_LEADS = ("=", "+", "-", "@", "\t", "\r")
PREFIX = "'"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def is_dangerous(text: str) -> bool:
    """True for a text a spreadsheet could evaluate (a decimal number is not dangerous)."""
    return bool(text) and text[0] in DANGEROUS_LEADS and _NUMBER.fullmatch(text) is None


def csv_cell(value: Any) -> Any:
    """The value to hand to `csv.writer`: None as empty, dangerous texts prefixed with `'`."""
    if value is None:
        return ""
    if isinstance(value, str) and is_dangerous(value):
        return PREFIX + value
    return value


def csv_uncell(text: str) -> str:
    """The text `csv_cell` was given (the prefix removed where `csv_cell` would have added it)."""
    if text.startswith(PREFIX) and is_dangerous(text[1:]):
        return text[1:]
    return text


def xlsx_cell(ws: Any, value: Any) -> Any:
    """The value to append to an openpyxl write-only sheet: every text as a text cell (data type
    "s", quote prefix), so `=…` or `#N/A` never becomes a formula or an error value."""
    if not isinstance(value, str):
        return value
    from openpyxl.cell import WriteOnlyCell  # imported here: only XLSX exports pay for it

    cell = WriteOnlyCell(ws, value=value)
    cell.data_type = "s"
    if is_dangerous(value):
        cell.quotePrefix = True
    return cell
