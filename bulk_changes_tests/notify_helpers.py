"""Builders for notification tests: a tenants file with webhook endpoints, a dispatcher on
fakes with a clock the test moves."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository
from bulk_changes.domain.notifications import DeliveryPolicy
from bulk_changes.notify.dispatcher import Dispatcher
from bulk_changes.resources.tenant_config import default_config_path, load_settings

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret-32bytes").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-webhook-secret-of-32-byte").decode()


def tenants_file(
    tmp_path: Path,
    webhooks: dict[str, list[dict[str, Any]]] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """The packaged tenants file with ``webhooks`` per tenant id (and other settings)."""
    data = yaml.safe_load(Path(default_config_path()).read_text())
    for tenant in data["tenants"]:
        if webhooks and tenant["id"] in webhooks:
            tenant["webhooks"] = webhooks[tenant["id"]]
    for path, value in (overrides or {}).items():
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / f"tenants-{random.randrange(10**9)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def dispatcher(
    repo: Repository,
    settings_path: Path,
    mailer: Any,
    webhooks: Any,
    *,
    clock: Clock | None = None,
    holder: str = "test",
    policy: DeliveryPolicy | None = None,
    lease_seconds: float = 60.0,
    operator_emails: tuple[str, ...] = (),
) -> Dispatcher:
    return Dispatcher(
        outbox=Outbox(repo.engine),
        repo=repo,
        settings=load_settings(str(settings_path)),
        mailer=mailer,
        webhooks=webhooks,
        policy=policy or DeliveryPolicy(base_delay_seconds=10, jitter=0.0),
        holder=holder,
        lease_seconds=lease_seconds,
        operator_emails=operator_emails,
        ui_base_url="https://dagster.example",
        clock=clock or Clock(),
        rng=random.Random(1),
    )
