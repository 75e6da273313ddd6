"""Where the embedded default keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """$BULK_CHANGES_HOME, else ./.bulk_changes (the demo's working folder)."""
    return Path(os.environ.get("BULK_CHANGES_HOME") or Path.cwd() / ".bulk_changes").resolve()


def default_database_url() -> str:
    return os.environ.get("BULK_CHANGES_DB_URL") or f"sqlite:///{home() / 'amop.sqlite'}"


def default_instance_yaml() -> Path:
    """The embedded default's Dagster instance configuration (a file of the package)."""
    return Path(__file__).resolve().parent / "defaults" / "dagster.yaml"
