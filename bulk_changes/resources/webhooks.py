"""Sending webhooks (signed, Standard Webhooks) and the settings of notification delivery."""

from __future__ import annotations

import time

import requests
from dagster import ConfigurableResource

from bulk_changes.domain.errors import (
    ConnectionFailed,
    Rejected,
    ServerError,
    Throttled,
    TimeoutError_,
)
from bulk_changes.domain.notifications import DeliveryPolicy
from bulk_changes.domain.webhook_signing import signed_headers


class WebhookSender(ConfigurableResource):
    """POSTs one event to one endpoint with short timeouts; a 2xx is delivered, anything
    else (other statuses, redirects, timeouts, refused connections) an error to retry."""

    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 5.0
    user_agent: str = "bulk-changes-webhooks/1"

    def send(
        self, url: str, secret: str, event_id: str, body: str, timestamp: int | None = None
    ) -> int:
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "content-type": "application/json",
            "user-agent": self.user_agent,
            **signed_headers(secret, event_id, stamp, body),
        }
        try:
            response = requests.post(
                url,
                data=body.encode("utf-8"),
                headers=headers,
                timeout=(self.connect_timeout_seconds, self.read_timeout_seconds),
                allow_redirects=False,
            )
        except requests.Timeout:
            raise TimeoutError_(
                f"no answer within {self.read_timeout_seconds} s", system="webhook"
            ) from None
        except requests.ConnectionError as exc:
            raise ConnectionFailed(
                f"cannot connect: {type(exc).__name__}", system="webhook"
            ) from None
        except requests.RequestException as exc:
            raise ConnectionFailed(f"{type(exc).__name__}", system="webhook") from None
        status = response.status_code
        if 200 <= status < 300:
            return status
        detail = response.text[:200].strip() or response.reason or ""
        if status == 429:
            raise Throttled(detail, system="webhook", status=status)
        if status >= 500:
            raise ServerError(detail, system="webhook", status=status)
        raise Rejected(detail, system="webhook", status=status)


class NotificationSettings(ConfigurableResource):
    """How notifications are delivered: retry schedule, leases, time budgets, operators."""

    base_delay_seconds: float = 10.0
    max_delay_seconds: float = 3600.0
    retry_window_hours: float = 24.0
    # A sender holds a delivery this long; a sender that died frees it when it runs out.
    lease_seconds: float = 60.0
    # Time the end-of-run op and each sensor tick spend delivering at most.
    op_budget_seconds: float = 30.0
    sensor_budget_seconds: float = 40.0
    operator_emails: list[str] = []
    # Links in alerts: the Dagster UI's address as operators reach it.
    ui_base_url: str = "http://127.0.0.1:3000"

    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            base_delay_seconds=self.base_delay_seconds,
            max_delay_seconds=self.max_delay_seconds,
            retry_window_seconds=self.retry_window_hours * 3600.0,
        )
