"""The tenants-and-accounts file as a Dagster resource (the reading: ``tenant_file``)."""

from __future__ import annotations

from dagster import ConfigurableResource

from bulk_changes.domain.settings import Settings
from bulk_changes.tenant_file import (  # noqa: F401  (the names callers import from here)
    DEFAULT_PATH,
    default_config_path,
    expand_env,
    load_settings,
)


class TenantConfig(ConfigurableResource):
    """Tenants and accounts. ``path`` empty: $BULK_CHANGES_TENANTS, else the packaged default."""

    path: str = ""

    def settings(self) -> Settings:
        return load_settings(self.path or None)
