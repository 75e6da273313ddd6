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


def write_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], path: Any, file_format: str
) -> None:
    """A table as a CSV or .xlsx file (``bulk-changes export``), every cell through
    :func:`safe_cell`: openpyxl stores a text starting with "=" as a formula. ``.xlsx``
    cells are written as text, so ICCIDs stay whole. openpyxl is imported only for .xlsx."""
    if file_format == "csv":
        with open(path, "w", encoding="utf-8", newline="") as out:
            write_rows(out, headers, rows)
    elif file_format == "xlsx":
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("devices")
        sheet.append([str(safe_cell(h)) for h in headers])
        for row in rows:
            sheet.append([str(safe_cell(c)) for c in row])
        book.save(path)
    else:
        raise ValueError(f"unknown export format {file_format!r}: csv or xlsx")
