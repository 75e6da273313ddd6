"""Everything that delivers notifications, as one Dagster resource: the one place a
``Dispatcher`` is built (the end-of-run op, the sweep and run-failure sensors, the CLI)."""

# No `from __future__ import annotations`: Dagster tells a nested resource by its field's
# type, which must be a class when the resource class is made, not a string.

from typing import Any

from dagster import ConfigurableResource

from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository
from bulk_changes.notify.dispatcher import Dispatcher
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.mail import Mailer
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings, WebhookSender


class Notifier(ConfigurableResource):
    """The outbox (AMOP database), the tenants' destinations (tenants file), the senders
    (mail, webhooks) and how delivery is retried (notification settings).

    The nested resources are the deployment's top-level ones (``amop_db``, ``tenant_config``,
    ``mail``, ``webhooks``, ``notifications``): their settings are shown and changed there."""

    amop_db: AmopDatabase
    tenant_config: TenantConfig
    mail: Mailer
    webhooks: WebhookSender
    notifications: NotificationSettings

    def dispatcher(self, holder: str, log: Any = None) -> Dispatcher:
        """A dispatcher sending as ``holder`` (its leases on deliveries carry that name)."""
        engine = self.amop_db.engine()
        settings = self.notifications
        return Dispatcher(
            outbox=Outbox(engine),
            repo=Repository(engine),
            settings=self.tenant_config.settings(),
            mailer=self.mail,
            webhooks=self.webhooks,
            policy=settings.policy(),
            holder=holder,
            lease_seconds=settings.lease_seconds,
            operator_emails=settings.operator_emails,
            ui_base_url=settings.ui_base_url,
            log=log,
        )
