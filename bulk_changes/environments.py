"""Resources per environment.

BULK_CHANGES_ENV=local (default): SQLite AMOP database under $BULK_CHANGES_HOME, a local
SQS-compatible server, the simulators. BULK_CHANGES_ENV=production: PostgreSQL and Amazon
SQS from environment variables; credentials only ever through EnvVar.

The resources come in two layers (docs/configuration.md lists every setting):

- the leaves, one per thing an operator may tune or a deployment points at: ``amop_db``,
  ``tenant_config``, ``queue``, ``processing``, ``mail``, ``webhooks``, ``notifications``.
  Their settings have defaults in their classes; an environment variable that is set
  overrides one (the production way). Inside Dagster they are top-level resources
  configured at launch, so the UI shows their values and the Launchpad can change them;
- the resources the ops and sensors take, which nest the leaves (``wire``): ``devices``
  (DeviceWork) and ``notifier`` (Notifier). A nested leaf is the top-level one, set up
  once per step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from dagster import EnvVar

from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import (
    JasperApi,
    ProcessingSettings,
    RevioApi,
    TelegenceApi,
    VendorApis,
)
from bulk_changes.resources.device_work import DeviceWork
from bulk_changes.resources.mail import FileMailer, SmtpMailer
from bulk_changes.resources.notifier import Notifier
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings, WebhookSender

LOCAL_SQS_ENDPOINT = "http://127.0.0.1:9324"
VENDOR_KEYS = ("jasper", "telegence", "revio")

# A resource class and its values -> the resource (outside Dagster: the CLI, the demo), or
# one configured at launch (inside Dagster: shown in the UI, changed in the Launchpad, and
# nested in ``devices`` and ``notifier`` as the same resource).
Make = Callable[..., Any]
# The name of a secret's environment variable -> its value, or an EnvVar inside Dagster.
Secret = Callable[[str], Any]


def env_or(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _emails(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def from_env(**fields: tuple[str, Callable[[str], Any]]) -> dict[str, Any]:
    """``field=(VARIABLE, parse)`` -> the fields whose variable is set, parsed; the others
    keep their resource's default."""
    return {
        field: parse(os.environ[name])
        for field, (name, parse) in fields.items()
        if os.environ.get(name)
    }


def instance(cls: type, **values: Any) -> Any:
    return cls(**values)


def at_launch(cls: Any, **values: Any) -> Any:
    return cls.configure_at_launch(**values)


def notification_leaves(make: Make, secret: Secret) -> dict[str, Any]:
    """Mail, webhooks and delivery settings. Mail goes over SMTP when
    BULK_CHANGES_SMTP_HOST is set; otherwise (the embedded default) each message is written
    as an .eml file under $BULK_CHANGES_HOME/outbox-mail."""
    sender = from_env(from_address=("BULK_CHANGES_MAIL_FROM", str))
    if os.environ.get("BULK_CHANGES_SMTP_HOST"):
        mail = make(
            SmtpMailer,
            host=os.environ["BULK_CHANGES_SMTP_HOST"],
            **from_env(
                port=("BULK_CHANGES_SMTP_PORT", int),
                security=("BULK_CHANGES_SMTP_SECURITY", str),
                username=("BULK_CHANGES_SMTP_USERNAME", str),
                ca_file=("BULK_CHANGES_SMTP_CA_FILE", str),
            ),
            **(
                {"password": secret("BULK_CHANGES_SMTP_PASSWORD")}
                if os.environ.get("BULK_CHANGES_SMTP_PASSWORD")
                else {}
            ),
            **sender,
        )
    else:
        mail = make(FileMailer, **from_env(directory=("BULK_CHANGES_MAIL_DIR", str)), **sender)
    return {
        "mail": mail,
        "webhooks": make(
            WebhookSender, **from_env(read_timeout_seconds=("BULK_CHANGES_WEBHOOK_TIMEOUT", float))
        ),
        "notifications": make(
            NotificationSettings,
            **from_env(
                operator_emails=("BULK_CHANGES_OPERATOR_EMAILS", _emails),
                ui_base_url=("BULK_CHANGES_UI_URL", str),
                base_delay_seconds=("BULK_CHANGES_NOTIFY_BASE_DELAY", float),
                retry_window_hours=("BULK_CHANGES_NOTIFY_RETRY_HOURS", float),
                lease_seconds=("BULK_CHANGES_NOTIFY_LEASE", float),
            ),
        ),
    }


def processing_leaves(make: Make) -> dict[str, Any]:
    return {
        "jasper": JasperApi(),
        "telegence": TelegenceApi(),
        "revio": RevioApi(),
        "processing": make(
            ProcessingSettings,
            **from_env(
                max_attempts=("BULK_CHANGES_MAX_ATTEMPTS", int),
                base_delay_seconds=("BULK_CHANGES_BASE_DELAY", float),
                workers_per_slot=("BULK_CHANGES_WORKERS_PER_SLOT", int),
                max_workers=("BULK_CHANGES_MAX_WORKERS", int),
                switch_interval_seconds=("BULK_CHANGES_SWITCH_INTERVAL", float),
                stop_grace_seconds=("BULK_CHANGES_STOP_GRACE", float),
            ),
        ),
    }


def _pool_size() -> dict[str, Any]:
    """Connections per process to the AMOP database on PostgreSQL, when set
    (docs/production.md); otherwise AmopDatabase's default."""
    return from_env(pool_size=("BULK_CHANGES_DB_POOL_SIZE", int))


def local_leaves(make: Make, secret: Secret) -> dict[str, Any]:
    return {
        # empty: the resource reads BULK_CHANGES_DB_URL (or the SQLite file under the home)
        # when a run uses it, so the URL (and any password in it) is never run config
        "amop_db": make(AmopDatabase, **_pool_size()),
        "tenant_config": make(TenantConfig, **from_env(path=("BULK_CHANGES_TENANTS", str))),
        "queue": SqsQueue(
            endpoint_url=env_or("BULK_CHANGES_SQS_ENDPOINT", LOCAL_SQS_ENDPOINT),
            region_name=env_or("AWS_DEFAULT_REGION", "us-east-1"),
            queue_name=env_or("BULK_CHANGES_QUEUE", "bulk-changes"),
            dead_letter_queue_name=env_or("BULK_CHANGES_DLQ", "bulk-changes-dlq"),
            # the local server accepts any credentials; these are not secrets
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            visibility_timeout_seconds=int(env_or("BULK_CHANGES_VISIBILITY_TIMEOUT", "60")),
            # a local server forgets its queues when it restarts
            create_if_missing=True,
        ),
        **processing_leaves(make),
        **notification_leaves(make, secret),
    }


def production_leaves(make: Make, secret: Secret) -> dict[str, Any]:
    return {
        "amop_db": make(AmopDatabase, url=secret("BULK_CHANGES_DB_URL"), **_pool_size()),
        "tenant_config": make(TenantConfig, path=secret("BULK_CHANGES_TENANTS")),
        "queue": SqsQueue(
            region_name=secret("AWS_REGION"),
            queue_name=env_or("BULK_CHANGES_QUEUE", "bulk-changes"),
            dead_letter_queue_name=env_or("BULK_CHANGES_DLQ", "bulk-changes-dlq"),
            create_if_missing=False,
        ),
        **processing_leaves(make),
        **notification_leaves(make, secret),
    }


def wire(leaves: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves (``jasper``, ``telegence``, ``revio`` folded into ``vendors``) and the
    resources nesting them: ``devices`` for the device ops, ``notifier`` for whatever
    delivers notifications."""
    vendors = VendorApis(**{key: leaves[key] for key in VENDOR_KEYS})
    return {
        **{key: value for key, value in leaves.items() if key not in VENDOR_KEYS},
        "devices": DeviceWork(
            amop_db=leaves["amop_db"],
            tenant_config=leaves["tenant_config"],
            vendors=vendors,
            processing=leaves["processing"],
        ),
        "notifier": Notifier(
            amop_db=leaves["amop_db"],
            tenant_config=leaves["tenant_config"],
            mail=leaves["mail"],
            webhooks=leaves["webhooks"],
            notifications=leaves["notifications"],
        ),
    }


LEAVES_BY_ENV = {"local": local_leaves, "production": production_leaves}


def environment() -> str:
    return env_or("BULK_CHANGES_ENV", "local")


def dagster_resources(env: str | None = None) -> dict[str, Any]:
    """The code location's resources: leaves configured at launch, secrets as EnvVars (the
    UI shows their names only)."""
    return wire(LEAVES_BY_ENV[env or environment()](at_launch, EnvVar))


def local_resources(resolve_now: bool = False) -> dict[str, Any]:
    """Ready-made resources of the local environment (outside Dagster). ``resolve_now``:
    secrets read at once; otherwise an EnvVar."""
    return wire(local_leaves(instance, os.environ.__getitem__ if resolve_now else EnvVar))


def production_resources(resolve_now: bool = False) -> dict[str, Any]:
    """``resolve_now``: read the variables at once (CLI commands run outside Dagster)."""
    return wire(production_leaves(instance, os.environ.__getitem__ if resolve_now else EnvVar))


def resources_for_cli() -> dict[str, Any]:
    if environment() == "production":
        return production_resources(resolve_now=True)
    return local_resources(resolve_now=True)
