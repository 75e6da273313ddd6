"""Every CSV the project writes goes through ``bulk_changes.domain.spreadsheet``, which
neutralises cells a spreadsheet would execute. A new writer elsewhere (``csv.writer``,
``csv.DictWriter``, pandas' ``to_csv``/``to_excel``) would write usernames such as
``=HYPERLINK(...)`` as formulas: this test names it."""

from __future__ import annotations

import re
from pathlib import Path

import bulk_changes

PACKAGE = Path(bulk_changes.__file__).parent
ALLOWED = {PACKAGE / "domain" / "spreadsheet.py"}
WRITERS = re.compile(r"\bcsv\.(writer|DictWriter)\b|\.to_csv\(|\.to_excel\(|\bDictWriter\(")


def test_no_csv_writer_bypasses_the_spreadsheet_module():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ALLOWED
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if WRITERS.search(line)
    ]
    assert not found, (
        "write CSV through bulk_changes.domain.spreadsheet (safe_cell, write_rows, to_csv):\n"
        + "\n".join(found)
    )
