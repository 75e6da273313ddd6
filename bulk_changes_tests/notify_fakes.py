"""Fakes of the mail and webhook resources: they keep what was sent, and fail on request.

State lives in NOTIFY_FAKES by the resource's ``key`` (Dagster rebuilds resources from
their config, so nothing can be kept on the instance)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from bulk_changes.domain.errors import ConnectionFailed, ServerError
from bulk_changes.resources.mail import Mailer
from bulk_changes.resources.webhooks import WebhookSender


@dataclass
class Sent:
    mails: list[EmailMessage] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    mail_down: bool = False
    webhooks_down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


NOTIFY_FAKES: dict[str, Sent] = {}


def sent(key: str) -> Sent:
    return NOTIFY_FAKES.setdefault(key, Sent())


class FakeMailer(Mailer):
    key: str = "default"

    def send(self, message: EmailMessage) -> str:
        state = sent(self.key)
        if state.mail_down:
            raise ConnectionFailed("mail server down", system="smtp")
        with state.lock:
            state.mails.append(message)
        return "fake"


class FakeWebhookSender(WebhookSender):
    key: str = "default"

    def send(self, url, secret, event_id, body, timestamp=None) -> int:  # type: ignore[override]
        state = sent(self.key)
        if state.webhooks_down:
            raise ServerError("receiver down", system="webhook", status=503)
        with state.lock:
            state.webhooks.append(
                {"url": url, "secret": secret, "event_id": event_id, "body": body}
            )
        return 200
