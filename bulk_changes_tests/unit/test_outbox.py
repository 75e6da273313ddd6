"""The outbox: events written with the state change that causes them, device results in
groups with each device exactly once, and the dispatcher's order, retries, leases and
redelivery (on fakes of mail and webhooks, with a clock the test moves)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bulk_changes.db.outbox import Outbox
from bulk_changes.domain import notifications as n
from bulk_changes.domain.notifications import DeliveryPolicy
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes_tests.conftest import inventory, submit
from bulk_changes_tests.notify_fakes import FakeMailer, FakeWebhookSender, sent
from bulk_changes_tests.notify_helpers import (
    OTHER_SECRET,
    WEBHOOK_SECRET,
    Clock,
    dispatcher,
    tenants_file,
)

HOOK = "https://hooks.acme.example/bulk"
HOOK_2 = "https://erp.acme.example/in?token=abc"


def bulk_change(repo, settings, n_devices=3, change_type="device_status", extra_rows=()):
    rows = inventory(n_devices, "jasper")
    repo.upsert_devices("acme", rows)
    if change_type == "device_status":
        requests = [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows]
    else:
        requests = [{"iccid": r["iccid"], "username": f"u{i}"} for i, r in enumerate(rows)]
    result = submit(repo, settings, change_type, "jasper", requests + list(extra_rows))
    changes = [c for c in repo.device_changes_of(result.id) if c.status == "NEW"]
    return result.id, changes


def finish(repo, bulk_id, change, status=DeviceStatus.PROCESSED, reason=None):
    assert repo.finish_device_change(
        bulk_change_id=bulk_id, device_change_id=change.id, status=status, reason=reason, step=None
    )


def events(repo, bulk_id):
    return Outbox(repo.engine).events(bulk_id)


def reported_ids(repo, bulk_id):
    return [
        d["device_change_id"]
        for e in events(repo, bulk_id)
        if e.type == n.DEVICE_CHANGES_COMPLETED
        for d in e.data["devices"]
    ]


def test_processing_event_once_when_the_bulk_change_moves_to_processing(repo, settings):
    bulk_id, _ = bulk_change(repo, settings)
    assert events(repo, bulk_id) == []
    repo.start_processing(bulk_id, "run-1", False)
    repo.start_processing(bulk_id, "run-2", False)  # already PROCESSING: no new event
    (event,) = events(repo, bulk_id)
    assert event.type == n.BULK_CHANGE_PROCESSING and event.event_id.startswith("msg_")
    body = json.loads(event.payload)
    assert body["type"] == "bulk_change.processing"
    assert body["data"]["bulk_change_id"] == bulk_id and body["data"]["devices"] == 3


def test_every_device_exactly_once_across_groups_from_batches_and_finalize(repo, settings):
    bulk_id, changes = bulk_change(repo, settings, 250, extra_rows=[{"iccid": "123"}])
    repo.start_processing(bulk_id, "run-1", False)
    batches = [changes[i : i + 100] for i in range(0, 250, 100)]
    # batch 0: all final; reported, and again (a retried op) without repeats
    for change in batches[0]:
        finish(repo, bulk_id, change)
    assert repo.report_final_devices(bulk_id, [c.id for c in batches[0]]) == 100
    assert repo.report_final_devices(bulk_id, [c.id for c in batches[0]]) == 0
    # batch 1: half final when its op ends; the rest finish later (finalize's leftovers)
    for change in batches[1][:50]:
        finish(repo, bulk_id, change, DeviceStatus.ERROR, "refused")
    assert repo.report_final_devices(bulk_id, [c.id for c in batches[1]]) == 50
    for change in batches[1][50:] + batches[2]:
        finish(repo, bulk_id, change, DeviceStatus.API_FAILED, "down")
    status, counts, changed = repo.finalize(bulk_id)
    assert changed and status == "PROCESSED_WITH_ERRORS"
    assert repo.finalize(bulk_id)[2] is False  # final once: no second set of events

    all_changes = repo.device_changes_of(bulk_id)
    ids = reported_ids(repo, bulk_id)
    assert Counter(ids) == Counter(c.id for c in all_changes)  # 251: the intake error too
    kinds = [e.type for e in events(repo, bulk_id)]
    groups = [e for e in events(repo, bulk_id) if e.type == n.DEVICE_CHANGES_COMPLETED]
    assert all(len(g.data["devices"]) <= 100 for g in groups)
    assert [g.data["group"] for g in groups] == list(range(1, len(groups) + 1))
    assert kinds[0] == n.BULK_CHANGE_PROCESSING
    # (no username report: a device_status change)
    assert kinds[-3:] == [n.BULK_CHANGE_COMPLETED, n.EMAIL_COMPLETION, n.EMAIL_ERRORS]
    completed = next(e for e in events(repo, bulk_id) if e.type == n.BULK_CHANGE_COMPLETED)
    assert completed.data["counts"] == {"PROCESSED": 100, "ERROR": 51, "API_FAILED": 100}
    assert completed.data["status"] == "PROCESSED_WITH_ERRORS"
    assert kinds.index(n.BULK_CHANGE_COMPLETED) > max(
        i for i, k in enumerate(kinds) if k == n.DEVICE_CHANGES_COMPLETED
    )
    assert Counter(k for k in kinds if k.startswith("email.")) == {
        n.EMAIL_COMPLETION: 1,
        n.EMAIL_ERRORS: 1,
    }


def test_no_event_unless_the_state_changes(repo, settings):
    bulk_id, changes = bulk_change(repo, settings, 2)
    repo.start_processing(bulk_id, "run-1", False)
    finish(repo, bulk_id, changes[0])
    status, _, changed = repo.finalize(bulk_id)  # one device still open: not final
    assert status == "PROCESSING" and not changed
    assert [e.type for e in events(repo, bulk_id)] == [n.BULK_CHANGE_PROCESSING]


def test_a_retry_of_failed_devices_reports_their_new_results_and_completes_again(repo, settings):
    bulk_id, changes = bulk_change(repo, settings, 2)
    repo.start_processing(bulk_id, "run-1", False)
    finish(repo, bulk_id, changes[0])
    finish(repo, bulk_id, changes[1], DeviceStatus.API_FAILED, "down")
    repo.finalize(bulk_id)
    assert repo.start_processing(bulk_id, "run-2", True) == 1
    finish(repo, bulk_id, changes[1])
    repo.finalize(bulk_id)
    kinds = [e.type for e in events(repo, bulk_id)]
    assert kinds.count(n.BULK_CHANGE_PROCESSING) == 2
    assert kinds.count(n.BULK_CHANGE_COMPLETED) == 2
    assert Counter(reported_ids(repo, bulk_id)) == {changes[0].id: 1, changes[1].id: 2}
    last = [e for e in events(repo, bulk_id) if e.type == n.BULK_CHANGE_COMPLETED][-1]
    assert last.data["status"] == "PROCESSED"


# ---- the dispatcher --------------------------------------------------------------------


@pytest.fixture
def hooks_file(tmp_path):
    return tenants_file(
        tmp_path,
        {
            "acme": [
                {"url": HOOK, "secret": WEBHOOK_SECRET},
                {"url": HOOK_2, "secret": OTHER_SECRET, "events": ["bulk_change.completed"]},
            ]
        },
    )


def final_bulk_change(repo, settings, change_type="device_status", fail_first=True):
    bulk_id, changes = bulk_change(repo, settings, 3, change_type)
    repo.start_processing(bulk_id, "run-1", False)
    for i, change in enumerate(changes):
        if i == 0 and fail_first:
            finish(repo, bulk_id, change, DeviceStatus.ERROR, "refused")
        else:
            finish(repo, bulk_id, change)
    repo.report_final_devices(bulk_id, [c.id for c in changes])
    repo.finalize(bulk_id)
    return bulk_id


def test_dispatcher_delivers_each_event_to_its_subscribers_and_mails_the_recipients(
    repo, settings, hooks_file, fake_key
):
    bulk_id = final_bulk_change(repo, settings)
    d = dispatcher(repo, hooks_file, FakeMailer(key=fake_key), FakeWebhookSender(key=fake_key))
    report = d.deliver(bulk_id)
    box = sent(fake_key)
    kinds = [(w["url"], json.loads(w["body"])["type"]) for w in box.webhooks]
    assert kinds == [
        (HOOK, "bulk_change.processing"),
        (HOOK, "device_changes.completed"),
        (HOOK, "bulk_change.completed"),
        (HOOK_2, "bulk_change.completed"),
    ]
    assert {w["secret"] for w in box.webhooks if w["url"] == HOOK_2} == {OTHER_SECRET}
    subjects = [m["Subject"] for m in box.mails]
    assert len(subjects) == 2 and subjects[0].startswith(f"Bulk change {bulk_id} PROCESSED_WITH")
    assert "1 device(s) failed" in subjects[1]
    assert box.mails[0]["To"] == "ops@acme.example"
    assert report.delivered == 6 and report.failed_attempts == 0
    assert d.deliver(bulk_id).delivered == 0  # nothing twice


def test_receiver_down_then_back_gets_everything_in_order_with_the_same_ids(
    repo, settings, hooks_file, fake_key
):
    final_bulk_change(repo, settings)
    clock = Clock()
    box = sent(fake_key)
    box.webhooks_down = True
    d = dispatcher(
        repo, hooks_file, FakeMailer(key=fake_key), FakeWebhookSender(key=fake_key), clock=clock
    )
    report = d.deliver()
    # one failed attempt per endpoint; the endpoint's other events wait behind it
    assert report.failed_attempts == 2 and report.delivered == 2  # the 2 mails
    outbox = Outbox(repo.engine)
    waiting = outbox.pending()
    assert [p.attempts for p in waiting] == [1, 0, 0, 1]
    first_ids = [p.event.event_id for p in waiting]
    assert d.deliver().failed_attempts == 0  # not due yet: nothing tried
    clock.advance(10)
    assert d.deliver().failed_attempts == 2
    clock.advance(20)
    box.webhooks_down = False
    report = d.deliver()
    assert report.delivered == 4 and outbox.pending() == []
    received = [w["event_id"] for w in box.webhooks]
    assert received == first_ids
    types = [json.loads(w["body"])["type"] for w in box.webhooks if w["url"] == HOOK]
    assert types == ["bulk_change.processing", "device_changes.completed", "bulk_change.completed"]
    attempts = outbox.attempts(waiting[0].id)
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "delivered"]
    assert "receiver down" in attempts[0]["error"] and attempts[0]["status_code"] == 503


def test_a_delivery_that_keeps_failing_for_24_hours_is_marked_failed_then_redelivered(
    repo, settings, hooks_file, fake_key
):
    final_bulk_change(repo, settings, fail_first=False)
    clock = Clock()
    box = sent(fake_key)
    box.webhooks_down = True
    d = dispatcher(
        repo,
        hooks_file,
        FakeMailer(key=fake_key),
        FakeWebhookSender(key=fake_key),
        clock=clock,
        policy=DeliveryPolicy(base_delay_seconds=10, max_delay_seconds=3600, jitter=0.0),
    )
    tries = 0
    outbox = Outbox(repo.engine)
    d.plan()
    while [p for p in outbox.pending() if p.channel == n.WEBHOOK] and tries < 200:
        d.deliver()
        clock.advance(3600)
        tries += 1
    failed = outbox.failed(n.WEBHOOK)
    # each endpoint's first event retried for 24 hours; the events queued behind it, as
    # old by then, failed at their first attempt
    assert len(failed) == 4
    head = failed[0]
    attempts = outbox.attempts(head.id)
    span = (attempts[-1]["started_at"] - attempts[0]["started_at"]).total_seconds()
    assert len(attempts) >= 24 and span >= 23 * 3600
    assert head.attempts == len(attempts)
    box.webhooks_down = False
    outcome, after = d.redeliver(head)
    assert outcome == "delivered" and after.status == "DELIVERED"
    assert [w["event_id"] for w in box.webhooks] == [head.event.event_id]
    # a failed one that fails again stays failed
    box.webhooks_down = True
    outcome, after = d.redeliver(failed[1])
    assert outcome == "failed" and after.status == "FAILED"


def test_one_sender_at_a_time_per_delivery_and_a_dead_senders_lease_runs_out(
    repo, settings, hooks_file, fake_key
):
    final_bulk_change(repo, settings)
    clock = Clock()
    args = (repo, hooks_file, FakeMailer(key=fake_key), FakeWebhookSender(key=fake_key))
    first = dispatcher(*args, clock=clock, holder="dead-run", lease_seconds=60)
    second = dispatcher(*args, clock=clock, holder="sensor", lease_seconds=60)
    first.plan()
    outbox = Outbox(repo.engine)
    head = outbox.pending()[0]
    assert outbox.claim(head, "dead-run", 60, at=clock()) is not None  # then it died
    report = second.deliver()
    assert report.busy == 0 and head.event.event_id not in [
        w["event_id"] for w in sent(fake_key).webhooks
    ]
    clock.advance(61)
    second.deliver()
    ids = [w["event_id"] for w in sent(fake_key).webhooks]
    assert ids.count(head.event.event_id) == 1
    outcomes = [a["outcome"] for a in outbox.attempts(head.id)]
    assert outcomes == ["interrupted", "delivered"]


class LeakySender:
    """A sender whose errors quote the secret it was given, and an API key."""

    def send(self, url, secret, event_id, body, timestamp=None):
        raise RuntimeError(f"boom with {secret} and sim-jasper-key")


def test_stored_errors_never_hold_secrets(repo, settings, hooks_file, fake_key):
    final_bulk_change(repo, settings)
    d = dispatcher(repo, hooks_file, FakeMailer(key=fake_key), LeakySender())
    d.deliver()
    errors = [p.last_error for p in Outbox(repo.engine).pending() if p.last_error]
    assert errors and all(WEBHOOK_SECRET not in e and "sim-jasper-key" not in e for e in errors)
    assert all("***" in e for e in errors)


def test_no_destination_no_delivery(repo, settings, tmp_path, fake_key):
    bulk_id, changes = bulk_change(repo, settings, 1)
    no_hooks = tenants_file(tmp_path)
    repo.start_processing(bulk_id, "run-1", False)
    finish(repo, bulk_id, changes[0])
    repo.finalize(bulk_id)
    d = dispatcher(repo, no_hooks, FakeMailer(key=fake_key), FakeWebhookSender(key=fake_key))
    d.deliver()
    notes = Outbox(repo.engine).notifications_of(bulk_id)
    assert all(e["planned"] for e in notes)
    webhook_events = [e for e in notes if e["type"] in n.WEBHOOK_EVENTS]
    assert webhook_events and all(e["deliveries"] == [] for e in webhook_events)
    assert sent(fake_key).webhooks == [] and len(sent(fake_key).mails) == 1


class SlowSender:
    """Each send takes 5 (fake) seconds, then fails: a receiver that times out."""

    def __init__(self, ticks):
        self.ticks = ticks
        self.calls = 0

    def send(self, url, secret, event_id, body, timestamp=None):
        self.calls += 1
        self.ticks[0] += 5.0
        raise TimeoutError("no answer within 5 s")


def test_a_slow_receiver_costs_one_timeout_per_pass_within_the_time_budget(
    repo, settings, tmp_path, fake_key
):
    hooks = tenants_file(
        tmp_path,
        {"acme": [{"url": f"https://slow{i}.example", "secret": WEBHOOK_SECRET} for i in range(6)]},
    )
    for _ in range(3):
        final_bulk_change(repo, settings)
    ticks = [0.0]
    slow = SlowSender(ticks)
    d = dispatcher(repo, hooks, FakeMailer(key=fake_key), slow)
    d.monotonic = lambda: ticks[0]
    report = d.deliver(budget_seconds=12)
    # 6 endpoints x 3 bulk changes queued; each endpoint tried once at most, and the pass
    # stops once 12 s are spent: 3 timeouts, not 18
    assert slow.calls == 3 and report.out_of_time
    assert report.failed_attempts == 3
