"""The tenants-and-accounts file as a Dagster resource (the reading: ``tenant_file``)."""

from __future__ import annotations

import os
import threading

from dagster import ConfigurableResource

from bulk_changes.domain.settings import Settings
from bulk_changes.tenant_file import (  # noqa: F401  (the names callers import from here)
    DEFAULT_PATH,
    default_config_path,
    expand_env,
    load_settings,
)

# path -> (what the file and the environment were when it was read, the settings)
_read: dict[str, tuple[tuple[object, ...], Settings]] = {}
_lock = threading.Lock()


def settings_of(path: str) -> Settings:
    """The settings of the file at ``path``, parsed once per process until the file
    changes (its modification time or size) or the environment its ``${VAR}`` come from
    does: every op and sensor tick of a run worker or daemon asks for them."""
    try:
        stat = os.stat(path)
    except OSError:
        return load_settings(path)  # says why it cannot be read
    version = (stat.st_mtime_ns, stat.st_size, hash(frozenset(os.environ.items())))
    with _lock:
        known = _read.get(path)
        if known is not None and known[0] == version:
            return known[1]
    settings = load_settings(path)
    with _lock:
        _read[path] = (version, settings)
    return settings


class TenantConfig(ConfigurableResource):
    """Tenants and accounts. ``path`` empty: $BULK_CHANGES_TENANTS, else the packaged default."""

    path: str = ""

    def settings(self) -> Settings:
        return settings_of(
            self.path or os.environ.get("BULK_CHANGES_TENANTS") or default_config_path()
        )
