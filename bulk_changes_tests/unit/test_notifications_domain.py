"""Notifications, pure: Standard Webhooks signing, the retry schedule, device groups,
recipients, the events a final bulk change gives rise to, webhook settings, redaction."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from bulk_changes.domain import notifications as n
from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.webhook_signing import (
    SignatureError,
    generate_secret,
    secret_key,
    signature,
    signed_headers,
    verify,
)
from bulk_changes.schemas.tenants_file import parse_webhooks

# The example of the Standard Webhooks specification (and of its reference libraries).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specifications_example():
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_headers_verify_and_tampering_fails():
    secret = generate_secret()
    body = '{"type":"bulk_change.completed"}'
    headers = signed_headers(secret, "msg_1", 1_700_000_000, body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    verify(secret, headers, body, now=1_700_000_010)
    with pytest.raises(SignatureError):
        verify(secret, headers, body.replace("completed", "processing"), now=1_700_000_010)
    with pytest.raises(SignatureError):
        verify(secret, {**headers, "webhook-id": "msg_2"}, body, now=1_700_000_010)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, headers, body, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError):
        verify(generate_secret(), headers, body, now=1_700_000_010)


def test_secrets_are_whsec_base64_of_enough_bytes():
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_" + "QUJD"):
        with pytest.raises(ValueError):
            secret_key(bad)


def test_backoff_is_exponential_capped_and_lasts_at_least_24_hours():
    policy = n.DeliveryPolicy(base_delay_seconds=10, max_delay_seconds=3600)
    assert [policy.delay(a) for a in range(1, 6)] == [10, 20, 40, 80, 160]
    assert policy.delay(30) == 3600
    schedule = policy.schedule()
    assert schedule[0] == 0
    gaps = [b - a for a, b in zip(schedule, schedule[1:], strict=False)]
    assert all(later >= earlier for earlier, later in zip(gaps, gaps[1:], strict=False))
    assert schedule[-1] >= 24 * 3600 and schedule[-2] < 24 * 3600
    assert 25 <= len(schedule) <= 40  # ~2 hours of doubling, then hourly


def test_next_attempt_gives_up_only_after_the_window():
    policy = n.DeliveryPolicy(base_delay_seconds=10, retry_window_seconds=24 * 3600)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    nearly = created + timedelta(hours=23, minutes=59)
    assert policy.next_attempt(20, created, nearly) == nearly + timedelta(seconds=3600)
    assert policy.next_attempt(21, created, created + timedelta(hours=24)) is None


def test_jitter_stays_within_its_fraction():
    policy = n.DeliveryPolicy(base_delay_seconds=100, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(1, rng) for _ in range(200)]
    assert min(delays) >= 90 and max(delays) <= 110 and len(set(delays)) > 100


def test_device_groups_hold_at_most_100_in_order():
    results = [{"device_change_id": i} for i in range(250)]
    groups = n.device_groups(results)
    assert [len(g) for g in groups] == [100, 100, 50]
    assert [r["device_change_id"] for g in groups for r in g] == list(range(250))
    assert n.device_groups([]) == []


def test_recipients_once_each_in_first_seen_order():
    assert n.recipients(["a@x.example", "B@x.example"], ["b@x.example", " c@x.example "]) == [
        "a@x.example",
        "B@x.example",
        "c@x.example",
    ]


def test_final_events_completion_always_username_report_and_errors_when_they_apply():
    assert n.final_events("device_status", {"PROCESSED": 3}) == [n.EMAIL_COMPLETION]
    assert n.final_events("username_cost_center", {"PROCESSED": 2, "ERROR": 1}) == [
        n.EMAIL_COMPLETION,
        n.EMAIL_USERNAME_REPORT,
        n.EMAIL_ERRORS,
    ]
    assert n.final_events("username_cost_center", {"ERROR": 1}) == [
        n.EMAIL_COMPLETION,
        n.EMAIL_ERRORS,
    ]
    assert n.final_events("carrier_rate_plan", {"API_FAILED": 1}) == [
        n.EMAIL_COMPLETION,
        n.EMAIL_ERRORS,
    ]


def test_webhook_body_is_stable_json_with_type_timestamp_data():
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    body = n.webhook_body("bulk_change.completed", created, {"b": 1, "a": [1]})
    assert body == n.webhook_body("bulk_change.completed", created, {"a": [1], "b": 1})
    assert json.loads(body) == {
        "type": "bulk_change.completed",
        "timestamp": "2024-05-01T12:00:00+00:00",
        "data": {"a": [1], "b": 1},
    }
    assert n.new_event_id() != n.new_event_id()


def test_webhooks_settings_parse_and_refuse_bad_entries_without_showing_the_secret():
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    endpoints = parse_webhooks(
        [
            {"url": "https://a.example/hook", "secret": secret},
            {
                "url": "https://b.example/hook",
                "secret": secret,
                "events": ["bulk_change.completed"],
            },
        ],
        "tenant 'acme'",
    )
    assert endpoints[0].events == n.WEBHOOK_EVENTS
    assert endpoints[1].wants("bulk_change.completed")
    assert not endpoints[1].wants("bulk_change.processing")
    assert secret not in repr(endpoints)
    bad_secret = "whsec_not base64 at all"
    with pytest.raises(ConfigurationError) as refused:
        parse_webhooks([{"url": "https://a.example", "secret": bad_secret}], "tenant 'acme'")
    assert bad_secret not in str(refused.value)
    with pytest.raises(ConfigurationError, match="unknown events"):
        parse_webhooks(
            [{"url": "https://a.example", "secret": secret, "events": ["device.exploded"]}], "t"
        )
    with pytest.raises(ConfigurationError, match="http"):
        parse_webhooks([{"url": "ftp://a.example", "secret": secret}], "t")
    with pytest.raises(ConfigurationError, match="twice"):
        parse_webhooks(
            [{"url": "https://a.example", "secret": secret}] * 2,
            "t",
        )


def test_redaction_of_secret_values_and_url_passwords():
    assert n.redact("login failed for s3cr3t-value", ["s3cr3t-value"]) == "login failed for ***"
    assert (
        n.redact_urls("cannot connect to postgresql://amop:hunter22@db:5432/amop")
        == "cannot connect to postgresql://amop:***@db:5432/amop"
    )
