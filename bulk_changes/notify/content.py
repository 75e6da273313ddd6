"""The content of each email event, read from the AMOP database when it is sent."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from email.message import EmailMessage
from itertools import chain
from typing import Any

from bulk_changes.db.inventory import Inventory
from bulk_changes.db.outbox import Outbox, OutboxEvent
from bulk_changes.domain import notifications as n
from bulk_changes.domain.step_plans import UPDATE_AMOP
from bulk_changes.notify import email_values, emails


def email_for(
    event: OutboxEvent,
    to: Sequence[str],
    *,
    outbox: Outbox,
    repo: Inventory,
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
    # A page of devices at a time: a bulk change of 100,000 devices read at once was
    # 100 MB, its mail about 16
    pages = outbox.device_result_pages(bulk_id)
    if event.type == n.EMAIL_COMPLETION:
        devices = chain.from_iterable(pages)
        return emails.completion_email(event.event_id, data, devices, to, sender, sent_at)
    if event.type == n.EMAIL_ERRORS:
        devices = chain.from_iterable(pages)
        return emails.errors_email(event.event_id, data, devices, to, sender, sent_at)
    if event.type == n.EMAIL_USERNAME_REPORT:
        lines = _username_lines(pages, outbox, repo, bulk_id, data.get("requested_by"))
        return emails.username_report_email(event.event_id, data, lines, to, sender, sent_at)
    raise ValueError(f"no email for event type {event.type}")


def _username_lines(
    pages: Iterable[list[dict[str, Any]]],
    outbox: Outbox,
    repo: Inventory,
    bulk_id: int,
    changed_by: str | None,
) -> Iterator[email_values.UsernameLine]:
    for devices in pages:
        audit = outbox.update_audit(bulk_id, UPDATE_AMOP.name, [d["id"] for d in devices])
        inventory = repo.devices_by_id([d["device_id"] for d in devices if d.get("device_id")])
        yield from email_values.username_lines(devices, inventory, audit, changed_by)
