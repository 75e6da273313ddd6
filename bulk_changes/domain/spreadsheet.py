"""CSV cells a spreadsheet will not execute.

A cell that starts with ``=``, ``+``, ``-`` or ``@`` is a formula to Excel, LibreOffice and
Google Sheets (``=HYPERLINK(...)``, ``+cmd|' /C calc'!A0``, ``@SUM(...)``, ``-2+3``), and a
leading tab or carriage return can hide one. Usernames and cost centers come from tenants'
files and end up in the CSVs the project mails and exports, so every CSV the project writes
goes through :func:`safe_cell`: OWASP's rule (CSV injection), a leading ``'`` that makes the
spreadsheet show the text as text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a cell: text that would start a formula gets a leading ``'``.

    Numbers stay numbers: a spreadsheet reads ``-5`` written from an int as a number, never
    as a formula, and the column keeps sorting as numbers.
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in headers])
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])


def to_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    write_rows(out, headers, rows)
    return out.getvalue()


def write_frame(frame: Any, path: Any, file_format: str) -> None:
    """A pandas DataFrame as a CSV or .xlsx file (``bulk-changes export``), every cell
    through :func:`safe_cell`: openpyxl stores a text starting with "=" as a formula.
    ``.xlsx`` cells are written as text, so ICCIDs stay whole. pandas is the caller's: it
    is not imported here."""
    safe = frame.map(safe_cell)
    if file_format == "csv":
        safe.to_csv(path, index=False, lineterminator="\r\n")
    elif file_format == "xlsx":
        safe.astype(str).to_excel(path, index=False, sheet_name="devices", engine="openpyxl")
    else:
        raise ValueError(f"unknown export format {file_format!r}: csv or xlsx")
