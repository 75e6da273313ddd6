"""Delivers the outbox: plans each event's deliveries, then sends what is due, in order.

- Per destination and bulk change, events go out in the order they were written: a
  delivery waits while an earlier one to the same destination is pending.
- One sender at a time per delivery (a lease in the AMOP database): the end-of-run op and
  the sweep sensor never send the same delivery at once; a sender that died frees it
  when its lease runs out, and the next attempt carries the same event id.
- Every attempt is recorded; a failure is retried on the policy's back-off until the
  retry window (24 hours) has passed, then the delivery is marked failed.
- A destination that failed in this pass is not tried again in it; the pass stops when
  its time budget is spent (whatever is left goes to the next sweep).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bulk_changes.db.outbox import FAILED, Delivery, Outbox, OutboxEvent
from bulk_changes.db.repository import Repository
from bulk_changes.domain import notifications as n
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.settings import Secret, Settings, Tenant, WebhookEndpoint
from bulk_changes.notify.content import email_for

DELIVERED, FAILED_NOW, BUSY = "delivered", "failed", "busy"


@dataclass
class DispatchReport:
    planned: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    waiting: int = 0
    busy: int = 0
    out_of_time: bool = False
    errors: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "events_planned": self.planned,
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "marked_failed": self.gave_up,
            "waiting": self.waiting,
            "held_by_another_sender": self.busy,
            "out_of_time": self.out_of_time,
        }

    def summary(self) -> str:
        return (
            f"{self.delivered} delivered, {self.failed_attempts} failed attempt(s) "
            f"({self.gave_up} marked failed), {self.waiting} waiting, {self.busy} busy, "
            f"{self.planned} event(s) planned" + (", out of time" if self.out_of_time else "")
        )


def _secret_values(settings: Settings) -> list[str]:
    values: list[str] = []
    for account in settings.accounts.values():
        values += [v.reveal() for v in vars(account).values() if isinstance(v, Secret)]
    for tenant in settings.tenants.values():
        values += [w.secret.reveal() for w in tenant.webhooks]
    return values


class Dispatcher:
    def __init__(
        self,
        *,
        outbox: Outbox,
        repo: Repository,
        settings: Settings,
        mailer: Any,
        webhooks: Any,
        policy: n.DeliveryPolicy,
        holder: str,
        lease_seconds: float = 60.0,
        operator_emails: Sequence[str] = (),
        ui_base_url: str = "http://127.0.0.1:3000",
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        log: Any = None,
    ) -> None:
        self.outbox = outbox
        self.repo = repo
        self.settings = settings
        self.mailer = mailer
        self.webhooks = webhooks
        self.policy = policy
        self.holder = holder[:128]
        self.lease_seconds = lease_seconds
        self.operator_emails = list(operator_emails)
        self.ui_base_url = ui_base_url
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self.log = log or logging.getLogger(__name__)
        self._secrets = _secret_values(settings) + [str(getattr(mailer, "password", "") or "")]

    # ---- planning ----------------------------------------------------------------------

    def _tenant(self, tenant_id: str | None) -> Tenant | None:
        return self.settings.tenants.get(tenant_id or "")

    def targets(self, event: OutboxEvent) -> list[tuple[str, str]]:
        """Where an event goes, by the configuration as it is now."""
        tenant = self._tenant(event.tenant_id)
        if event.type in n.WEBHOOK_EVENTS:
            if tenant is None:
                return []
            return [(n.WEBHOOK, w.url) for w in tenant.webhooks if w.wants(event.type)]
        if event.type == n.ALERT_RUN_FAILURE:
            to = n.recipients(self.operator_emails)
        else:
            to = n.recipients(event.data.get("notify") or [], tenant.notify if tenant else ())
        return [(n.EMAIL, ", ".join(to))] if to else []

    def plan(self, limit: int = 500) -> int:
        planned = 0
        for event in self.outbox.unplanned(limit):
            if self.outbox.plan(event, self.targets(event), at=self.clock()):
                planned += 1
        return planned

    # ---- delivering --------------------------------------------------------------------

    def deliver(
        self, bulk_change_id: int | None = None, budget_seconds: float = 30.0
    ) -> DispatchReport:
        """One pass: plan new events, then send what is due (of one bulk change, or all)."""
        started = self.monotonic()
        report = DispatchReport(planned=self.plan())
        lines: dict[tuple[str, str, str], list[Delivery]] = {}
        for delivery in self.outbox.pending(bulk_change_id):
            event = delivery.event
            scope = (
                f"bulk:{event.bulk_change_id}"
                if event.bulk_change_id is not None
                else f"event:{event.row_id}"
            )
            lines.setdefault((delivery.channel, delivery.target, scope), []).append(delivery)
        down: set[tuple[str, str]] = set()
        for (channel, target, _), queue in lines.items():
            destination = (channel, target if channel == n.WEBHOOK else "*")
            for delivery in queue:
                if self.monotonic() - started > budget_seconds:
                    report.out_of_time = True
                    return report
                at = self.clock()
                if destination in down or delivery.next_attempt_at > at or delivery.busy(at):
                    report.waiting += len(queue) - queue.index(delivery)
                    break
                outcome = self._attempt(delivery, report)
                if outcome == BUSY:
                    break
                if outcome == FAILED_NOW:
                    down.add(destination)
                    report.waiting += len(queue) - queue.index(delivery) - 1
                    break
        return report

    def redeliver(self, delivery: Delivery) -> tuple[str, Delivery]:
        """Send one delivery again now, whatever its state (same event id). A failed one
        that fails again stays failed; a pending one keeps its schedule."""
        report = DispatchReport()
        outcome = self._attempt(delivery, report, force=True)
        return outcome, self.outbox.get(delivery.id) or delivery

    def _attempt(self, delivery: Delivery, report: DispatchReport, force: bool = False) -> str:
        at = self.clock()
        attempt_id = self.outbox.claim(
            delivery, self.holder, self.lease_seconds, at=at, force=force
        )
        if attempt_id is None:
            report.busy += 1
            return BUSY
        event = self.outbox.event(delivery.event.row_id)  # with its body
        started = time.monotonic()
        try:
            status_code = self._send(delivery, event, at)
        except Exception as exc:  # every failure is recorded and retried, none escapes
            elapsed = (time.monotonic() - started) * 1000
            error = self.redact(str(exc) or type(exc).__name__)
            attempts = delivery.attempts + 1
            retry_at = (
                None
                if force and delivery.status == FAILED
                else self.policy.next_attempt(attempts, event.created_at, self.clock(), self.rng)
            )
            self.outbox.record_failed(
                delivery,
                attempt_id,
                error=error,
                status_code=getattr(exc, "status", None),
                duration_ms=elapsed,
                next_attempt_at=retry_at,
            )
            report.failed_attempts += 1
            report.gave_up += retry_at is None
            report.errors.append(error)
            self.log.warning(
                f"{delivery.channel} {event.type} {event.event_id} to {self.where(delivery)}: "
                f"attempt {attempts} failed ({error}); "
                + (f"next at {retry_at.isoformat()}" if retry_at else "marked failed")
            )
            return FAILED_NOW
        elapsed = (time.monotonic() - started) * 1000
        self.outbox.record_delivered(
            delivery, attempt_id, status_code=status_code, duration_ms=elapsed
        )
        report.delivered += 1
        self.log.info(
            f"{delivery.channel} {event.type} {event.event_id} delivered to {self.where(delivery)}"
        )
        return DELIVERED

    def _send(self, delivery: Delivery, event: OutboxEvent, at: datetime) -> int | None:
        if delivery.channel == n.WEBHOOK:
            endpoint = self.endpoint(event.tenant_id, delivery.target)
            # the timestamp is the real time of this attempt (receivers check it)
            return int(
                self.webhooks.send(
                    endpoint.url, endpoint.secret.reveal(), event.event_id, event.payload
                )
            )
        message = email_for(
            event,
            delivery.target.split(", "),
            outbox=self.outbox,
            repo=self.repo,
            sender=getattr(self.mailer, "from_address", "bulk-changes@localhost"),
            ui_base_url=self.ui_base_url,
            sent_at=at,
        )
        self.mailer.send(message)
        return None

    def endpoint(self, tenant_id: str | None, url: str) -> WebhookEndpoint:
        tenant = self._tenant(tenant_id)
        for endpoint in tenant.webhooks if tenant else ():
            if endpoint.url == url:
                return endpoint
        raise ConfigurationError(
            f"tenant {tenant_id!r} has no webhook endpoint {self.where_url(url)} any more"
        )

    # ---- what may be shown -------------------------------------------------------------

    def redact(self, text: str) -> str:
        return n.redact(text, self._secrets) or ""

    @staticmethod
    def where_url(url: str) -> str:
        return url.split("?", 1)[0]

    def where(self, delivery: Delivery) -> str:
        return self.where_url(delivery.target) if delivery.channel == n.WEBHOOK else delivery.target
