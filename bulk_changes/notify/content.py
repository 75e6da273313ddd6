"""The content of each email event, read from the AMOP database when it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage

from bulk_changes.db.outbox import Outbox, OutboxEvent
from bulk_changes.db.repository import Repository
from bulk_changes.domain import emails
from bulk_changes.domain import notifications as n
from bulk_changes.domain.step_plans import UPDATE_AMOP


def email_for(
    event: OutboxEvent,
    to: Sequence[str],
    *,
    outbox: Outbox,
    repo: Repository,
    sender: str,
    ui_base_url: str,
    sent_at: datetime,
) -> EmailMessage:
    """The mail of an email event. Facts and counts come from the event (as they were when
    the bulk change became final); device rows from the AMOP database."""
    data = event.data
    if event.type == n.ALERT_RUN_FAILURE:
        return emails.run_failure_email(event.event_id, data, to, sender, sent_at, ui_base_url)
    bulk_id = int(data["bulk_change_id"])
    devices = outbox.device_results(bulk_id)
    if event.type == n.EMAIL_COMPLETION:
        return emails.completion_email(event.event_id, data, devices, to, sender, sent_at)
    if event.type == n.EMAIL_ERRORS:
        return emails.errors_email(event.event_id, data, devices, to, sender, sent_at)
    if event.type == n.EMAIL_USERNAME_REPORT:
        audit = outbox.update_audit(bulk_id, UPDATE_AMOP.name)
        inventory = repo.devices_by_id([d["device_id"] for d in devices if d.get("device_id")])
        lines = emails.username_lines(devices, inventory, audit, data.get("requested_by"))
        return emails.username_report_email(event.event_id, data, lines, to, sender, sent_at)
    raise ValueError(f"no email for event type {event.type}")
