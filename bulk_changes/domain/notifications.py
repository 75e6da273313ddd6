"""Notifications: the events of the outbox, their webhook bodies, device groups, recipients
and the retry schedule of a delivery. Pure: no I/O.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Webhook events (a tenant's endpoints subscribe to some or all of them).
BULK_CHANGE_PROCESSING = "bulk_change.processing"
DEVICE_CHANGES_COMPLETED = "device_changes.completed"
BULK_CHANGE_COMPLETED = "bulk_change.completed"
WEBHOOK_EVENTS: tuple[str, ...] = (
    BULK_CHANGE_PROCESSING,
    DEVICE_CHANGES_COMPLETED,
    BULK_CHANGE_COMPLETED,
)

# Emails (to the bulk change's notify addresses and the tenant's; alerts to operators).
EMAIL_COMPLETION = "email.completion"
EMAIL_ERRORS = "email.errors"
EMAIL_USERNAME_REPORT = "email.username_report"
ALERT_RUN_FAILURE = "alert.run_failure"
EMAIL_EVENTS: tuple[str, ...] = (
    EMAIL_COMPLETION,
    EMAIL_ERRORS,
    EMAIL_USERNAME_REPORT,
    ALERT_RUN_FAILURE,
)

# Device results go out in groups of at most this many per device_changes.completed event.
GROUP_SIZE = 100

WEBHOOK = "webhook"
EMAIL = "email"


def new_event_id() -> str:
    """A stable id for one event: the ``webhook-id`` of every attempt, the Message-ID of a mail."""
    return f"msg_{uuid.uuid4().hex}"


def webhook_body(event_type: str, created_at: datetime, data: Mapping[str, Any]) -> str:
    """The exact body sent for an event, stored once so every retry sends the same bytes."""
    return json.dumps(
        {"type": event_type, "timestamp": created_at.isoformat(), "data": dict(data)},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


def device_groups(
    results: Sequence[Mapping[str, Any]], size: int = GROUP_SIZE
) -> list[list[Mapping[str, Any]]]:
    """Split device results into groups of at most ``size``, in the order given."""
    if size < 1:
        raise ValueError("group size must be at least 1")
    return [list(results[i : i + size]) for i in range(0, len(results), size)]


def recipients(*lists: Iterable[str]) -> list[str]:
    """Addresses from several lists, each once (case-insensitive), in first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for addresses in lists:
        for address in addresses:
            address = address.strip()
            if address and address.lower() not in seen:
                seen.add(address.lower())
                out.append(address)
    return out


def failed_count(counts: Mapping[str, int]) -> int:
    """Devices that ended API_FAILED or ERROR (what the error notification is about)."""
    return int(counts.get("API_FAILED", 0)) + int(counts.get("ERROR", 0))


def final_events(change_type: str, counts: Mapping[str, int]) -> list[str]:
    """The emails a bulk change that just became final gives rise to, in order."""
    events = [EMAIL_COMPLETION]
    if change_type == "username_cost_center" and counts.get("PROCESSED", 0):
        events.append(EMAIL_USERNAME_REPORT)
    if failed_count(counts):
        events.append(EMAIL_ERRORS)
    return events


# ---- retries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryPolicy:
    """How a failed delivery is retried: exponential back-off up to ``max_delay``, for at
    least ``retry_window`` after the event was written, then it is marked failed."""

    base_delay_seconds: float = 10.0
    max_delay_seconds: float = 3600.0
    retry_window_seconds: float = 24 * 3600.0
    jitter: float = 0.1  # +- this fraction of the delay

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Wait after the ``attempts``-th failed attempt (1, 2, ...)."""
        exponent = min(max(attempts, 1) - 1, 32)
        delay = min(self.base_delay_seconds * float(2**exponent), self.max_delay_seconds)
        if rng is not None and self.jitter:
            delay *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(delay, 0.0)

    def next_attempt(
        self,
        attempts: int,
        created_at: datetime,
        now: datetime,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after a failed attempt at ``now``; None: give up (failed)."""
        if (now - created_at).total_seconds() >= self.retry_window_seconds:
            return None
        return now + timedelta(seconds=self.delay(attempts, rng))

    def schedule(self) -> list[float]:
        """Seconds after the event at which each attempt happens when every attempt fails
        at once (no jitter): the whole retry schedule, for documentation and tests."""
        times = [0.0]
        attempts = 1
        while times[-1] < self.retry_window_seconds:
            times.append(times[-1] + self.delay(attempts))
            attempts += 1
        return times


# ---- payloads -----------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def duration_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 3)


def bulk_change_data(bulk: Mapping[str, Any]) -> dict[str, Any]:
    """The part of every bulk-change event that says which bulk change it is."""
    return {
        "bulk_change_id": bulk["id"],
        "tenant": bulk["tenant_id"],
        "change_type": bulk["change_type"],
        "integration": bulk["integration"],
        "requested_by": bulk.get("requested_by"),
    }


def processing_data(bulk: Mapping[str, Any], devices: int) -> dict[str, Any]:
    return {
        **bulk_change_data(bulk),
        "status": "PROCESSING",
        "started_at": _iso(bulk.get("started_at")),
        "devices": devices,
    }


def completed_data(
    bulk: Mapping[str, Any], status: str, counts: Mapping[str, int]
) -> dict[str, Any]:
    return {
        **bulk_change_data(bulk),
        "status": status,
        "counts": dict(sorted(counts.items())),
        "devices": sum(counts.values()),
        "created_at": _iso(bulk.get("created_at")),
        "started_at": _iso(bulk.get("started_at")),
        "finished_at": _iso(bulk.get("finished_at")),
        "duration_seconds": duration_seconds(bulk.get("started_at"), bulk.get("finished_at")),
    }


def device_result(change: Mapping[str, Any]) -> dict[str, Any]:
    """One device's result as webhooks carry it."""
    return {
        "device_change_id": change["id"],
        "row": change["row_number"],
        "device": change.get("device_key"),
        "status": change["status"],
        "reason": change.get("last_error"),
        "attempts": change.get("attempts", 0),
        "finished_at": _iso(change.get("finished_at")),
    }


def group_data(
    bulk: Mapping[str, Any], group: int, results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    return {**bulk_change_data(bulk), "group": group, "devices": list(results)}


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """``text`` with every secret value replaced by ``***`` (error messages we store)."""
    if text is None:
        return None
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I
)


def redact_urls(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
