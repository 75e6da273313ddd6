"""Where the embedded default keeps its files, and the settings its home holds.

The home is $BULK_CHANGES_HOME, else ./.bulk_changes. ``bulk-changes demo`` writes
``settings.json`` there (its AMOP database, queue endpoint, simulators' addresses) so the
CLI run beside it finds the same database and queue with nothing set; a variable set in
the environment still wins.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

SETTINGS_FILE = "settings.json"


def home() -> Path:
    """$BULK_CHANGES_HOME, else ./.bulk_changes (the demo's working folder)."""
    return Path(os.environ.get("BULK_CHANGES_HOME") or Path.cwd() / ".bulk_changes").resolve()


def default_database_url() -> str:
    return os.environ.get("BULK_CHANGES_DB_URL") or f"sqlite:///{home() / 'amop.sqlite'}"


def default_instance_yaml() -> Path:
    """The embedded default's Dagster instance configuration (a file of the package)."""
    return Path(__file__).resolve().parent / "defaults" / "dagster.yaml"


def settings_path() -> Path:
    return home() / SETTINGS_FILE


def write_home_settings(values: dict[str, str], directory: Path | None = None) -> Path:
    """Write the home's settings (atomically: a CLI reading at that moment sees the old
    or the new file, never half of one)."""
    target = (directory or home()) / SETTINGS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(target)
    return target


def load_home_settings() -> dict[str, str]:
    """Apply the home's settings to this process's environment (variables already set
    win). -> what the file holds ({} without one)."""
    path = settings_path()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable settings ({exc}); delete it or fix it") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it or fix it")
    for name, value in values.items():
        if (
            name.startswith(("BULK_CHANGES_", "AWS_", "DAGSTER_HOME"))
            and name != "BULK_CHANGES_HOME"
        ):
            os.environ.setdefault(name, str(value))
    return {str(k): str(v) for k, v in values.items()}


def redacted_url(url: str) -> str:
    """A database URL without its password (printed in messages)."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another backend or an in-memory database)."""
    match = re.match(r"^sqlite(?:\+\w+)?:///(.*)$", url)
    if not match or match.group(1) in ("", ":memory:"):
        return None
    return Path(match.group(1).split("?", 1)[0])


def describe_home() -> str:
    """Which home and database this process uses: said with every CLI error."""
    settings = settings_path()
    source = f"settings from {settings}" if settings.exists() else "no settings file"
    return f"home {home()} ({source}); AMOP database {redacted_url(default_database_url())}"
