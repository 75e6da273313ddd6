"""The command line as a user runs it: a new process of the installed ``bulk-changes``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# what a user's shell could carry that would point the CLI elsewhere
CLEARED = (
    "BULK_CHANGES_DB_URL",
    "BULK_CHANGES_SQS_ENDPOINT",
    "BULK_CHANGES_QUEUE",
    "BULK_CHANGES_DLQ",
    "BULK_CHANGES_JASPER_URL",
    "BULK_CHANGES_TELEGENCE_URL",
    "BULK_CHANGES_REVIO_URL",
    "BULK_CHANGES_ENV",
    "DAGSTER_HOME",
)


def cli_command() -> list[str]:
    """The console script beside this interpreter, else on PATH, else ``python -m``."""
    script = Path(sys.executable).with_name("bulk-changes")
    if script.exists():
        return [str(script)]
    found = shutil.which("bulk-changes")
    return [found] if found else [sys.executable, "-m", "bulk_changes.cli"]
