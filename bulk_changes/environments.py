"""Resources per environment.

BULK_CHANGES_ENV=local (default): SQLite AMOP database under $BULK_CHANGES_HOME, a local
SQS-compatible server, the simulators. BULK_CHANGES_ENV=production: PostgreSQL and Amazon
SQS from environment variables; credentials only ever through EnvVar.
"""

from __future__ import annotations

import os

from dagster import EnvVar

from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import JasperApi, ProcessingSettings, RevioApi, TelegenceApi
from bulk_changes.resources.mail import FileMailer, Mailer, SmtpMailer
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings, WebhookSender

LOCAL_SQS_ENDPOINT = "http://127.0.0.1:9324"


def env_or(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _emails(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def notification_resources(env) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Mail, webhooks and delivery settings. Mail goes over SMTP when
    BULK_CHANGES_SMTP_HOST is set; otherwise (the embedded default) each message is written
    as an .eml file under $BULK_CHANGES_HOME/outbox-mail. ``env`` reads a secret (an
    EnvVar inside Dagster)."""
    sender = env_or("BULK_CHANGES_MAIL_FROM", "bulk-changes@localhost")
    mail: Mailer
    if os.environ.get("BULK_CHANGES_SMTP_HOST"):
        mail = SmtpMailer(
            host=os.environ["BULK_CHANGES_SMTP_HOST"],
            port=int(env_or("BULK_CHANGES_SMTP_PORT", "587")),
            security=env_or("BULK_CHANGES_SMTP_SECURITY", "starttls"),
            username=env_or("BULK_CHANGES_SMTP_USERNAME", ""),
            password=(
                env("BULK_CHANGES_SMTP_PASSWORD")
                if os.environ.get("BULK_CHANGES_SMTP_PASSWORD")
                else ""
            ),
            ca_file=env_or("BULK_CHANGES_SMTP_CA_FILE", ""),
            from_address=sender,
        )
    else:
        mail = FileMailer(directory=env_or("BULK_CHANGES_MAIL_DIR", ""), from_address=sender)
    return {
        "mail": mail,
        "webhooks": WebhookSender(
            read_timeout_seconds=float(env_or("BULK_CHANGES_WEBHOOK_TIMEOUT", "5")),
        ),
        "notifications": NotificationSettings(
            operator_emails=_emails(env_or("BULK_CHANGES_OPERATOR_EMAILS", "")),
            ui_base_url=env_or("BULK_CHANGES_UI_URL", "http://127.0.0.1:3000"),
            base_delay_seconds=float(env_or("BULK_CHANGES_NOTIFY_BASE_DELAY", "10")),
            retry_window_hours=float(env_or("BULK_CHANGES_NOTIFY_RETRY_HOURS", "24")),
            lease_seconds=float(env_or("BULK_CHANGES_NOTIFY_LEASE", "60")),
        ),
    }


def local_resources(resolve_now: bool = False) -> dict[str, object]:
    """``resolve_now``: secrets read at once (CLI commands run outside Dagster); otherwise
    an EnvVar, which the Dagster UI shows by name only."""

    def secret(name: str):  # type: ignore[no-untyped-def]
        return os.environ[name] if resolve_now else EnvVar(name)

    return {
        # empty: the resource reads BULK_CHANGES_DB_URL (or the SQLite file under the home)
        # when a run uses it, so the URL (and any password in it) is never run config
        "amop_db": AmopDatabase(),
        "tenant_config": TenantConfig(path=env_or("BULK_CHANGES_TENANTS", "")),
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
        "jasper": JasperApi(),
        "telegence": TelegenceApi(),
        "revio": RevioApi(),
        "processing": ProcessingSettings(
            max_attempts=int(env_or("BULK_CHANGES_MAX_ATTEMPTS", "5")),
            base_delay_seconds=float(env_or("BULK_CHANGES_BASE_DELAY", "0.5")),
        ),
        **notification_resources(secret),
    }


def production_resources(resolve_now: bool = False) -> dict[str, object]:
    """``resolve_now``: read the variables at once (CLI commands run outside Dagster)."""

    def env(name: str):  # type: ignore[no-untyped-def]
        return os.environ[name] if resolve_now else EnvVar(name)

    return {
        "amop_db": AmopDatabase(url=env("BULK_CHANGES_DB_URL")),
        "tenant_config": TenantConfig(path=env("BULK_CHANGES_TENANTS")),
        "queue": SqsQueue(
            region_name=env("AWS_REGION"),
            queue_name=env_or("BULK_CHANGES_QUEUE", "bulk-changes"),
            dead_letter_queue_name=env_or("BULK_CHANGES_DLQ", "bulk-changes-dlq"),
            create_if_missing=False,
        ),
        "jasper": JasperApi(),
        "telegence": TelegenceApi(),
        "revio": RevioApi(),
        "processing": ProcessingSettings(),
        **notification_resources(env),
    }


RESOURCES_BY_ENV = {"local": local_resources, "production": production_resources}


def resources_for_cli() -> dict[str, object]:
    env = env_or("BULK_CHANGES_ENV", "local")
    return (
        production_resources(resolve_now=True)
        if env == "production"
        else local_resources(resolve_now=True)
    )
