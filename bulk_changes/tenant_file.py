"""The tenants-and-accounts file, read with ${ENV} expansion.

Apart from the Dagster resource (``resources.tenant_config``) so that the command line
reads it without importing dagster (a second of start-up).
"""

from __future__ import annotations

import os
import re
from importlib import resources as package_files
from pathlib import Path
from typing import Any

import yaml

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.settings import Settings

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_PATH = "bulk_changes/defaults/tenants.yaml"


def default_config_path() -> str:
    return str(package_files.files("bulk_changes").joinpath("defaults/tenants.yaml"))


def expand_env(value: Any, where: str = "") -> Any:
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        raise ConfigurationError(f"{where}: environment variable {name} is not set")

    return _ENV.sub(substitute, value)


def load_settings(path: str | None = None) -> Settings:
    path = path or os.environ.get("BULK_CHANGES_TENANTS") or default_config_path()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read tenant configuration {path}: {exc.strerror}"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from exc
    # pydantic is imported when a file is read, not with this module (the CLI's start-up)
    from bulk_changes.schemas.tenants_file import parse_settings

    try:
        return parse_settings(expand_env(data or {}))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
