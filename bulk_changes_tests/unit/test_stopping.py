"""Stopping a bulk change: the runner makes no call once the run is stopping, a device
closed by a stop gets no further call, and the stop leaves every device final with a
reason. Real SQLite AMOP database, fake API clients."""

from __future__ import annotations

import random

import pytest

from bulk_changes.db import schema as t
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.retry import RetryPolicy
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.processing import stopping
from bulk_changes.processing.runner import StageRunner
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeClients, fake_systems

POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0)


@pytest.fixture(autouse=True)
def clear_stop_signal():
    stopping.RUN_STOPPING.clear()
    yield
    stopping.RUN_STOPPING.clear()


@pytest.fixture
def bulk_id(repo, settings, fake_key):
    rows = inventory(3, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    requests = [
        {"iccid": r["iccid"], "username": f"u{i}", "cost_center_1": "CC"}
        for i, r in enumerate(rows)
    ]
    return submit(repo, settings, "username_cost_center", "jasper", requests).id


def runner(repo, settings, bulk_id, fake_key):
    bulk = repo.get_bulk_change(bulk_id)
    return StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=settings.tenant(bulk.tenant_id),
        clients_factory=lambda recorder: FakeClients(fake_key, "jasper"),
        policy=POLICY,
        run_id="run-1",
        sleep=lambda s: None,
        rng=random.Random(0),
    )


def all_calls(fake_key):
    return [c for system in fake_systems(fake_key).values() for c in system.calls]


def test_a_run_that_is_stopping_makes_no_call(repo, settings, bulk_id, fake_key):
    stopping.RUN_STOPPING.set()
    runner(repo, settings, bulk_id, fake_key).run(
        repo.pending_device_change_ids(bulk_id), STAGE_ORDER
    )
    assert all_calls(fake_key) == []


def test_a_device_closed_by_a_stop_gets_no_further_call(repo, settings, bulk_id, fake_key):
    ids = repo.pending_device_change_ids(bulk_id)
    repo.cancel_bulk_change(bulk_id, stopping.OPERATOR_STOP_REASON)
    runner(repo, settings, bulk_id, fake_key).run(ids, STAGE_ORDER)
    assert all_calls(fake_key) == []
    assert repo.counts(bulk_id) == {"CANCELLED": 3}


def test_begin_step_refuses_a_cancelled_device_change(repo, bulk_id):
    [first, *_] = repo.pending_device_change_ids(bulk_id)
    repo.cancel_bulk_change(bulk_id, stopping.OPERATOR_STOP_REASON)
    assert repo.begin_step(first, "jasper_set_username", "run-1") is False
    assert repo.started_steps([first])[first] == set()


def test_begin_step_opens_a_new_device_change(repo, bulk_id):
    [first, *_] = repo.pending_device_change_ids(bulk_id)
    assert repo.begin_step(first, "jasper_set_username", "run-1") is True
    assert repo.device_changes([first])[0].status == "PROCESSING"


def test_cancel_names_the_steps_a_device_under_way_had_completed(repo, bulk_id):
    [first, *_] = repo.pending_device_change_ids(bulk_id)
    repo.begin_step(first, "jasper_set_username", "run-1")
    with repo.engine.begin() as conn:
        conn.execute(
            t.completed_steps.insert().values(
                device_change_id=first, step="jasper_set_username", completed_at=utc_now()
            )
        )
    repo.cancel_bulk_change(bulk_id, stopping.OPERATOR_STOP_REASON)
    [change] = repo.device_changes([first])
    assert change.status == "CANCELLED"
    assert change.last_error == "stopped by an operator; steps completed: jasper_set_username"


def test_cancel_makes_the_bulk_change_cancelled_once(repo, bulk_id):
    assert repo.cancel_bulk_change(bulk_id, "stopped")[0] is True
    assert repo.cancel_bulk_change(bulk_id, "stopped")[0] is False
    assert repo.get_bulk_change(bulk_id).status == "CANCELLED"
    events = [e for e in repo.audit_of(bulk_id) if e["description"] == "Bulk change stopped"]
    assert len(events) == 1


def test_cancel_leaves_a_final_bulk_change_as_it_is(repo, bulk_id):
    with repo.engine.begin() as conn:
        conn.execute(t.bulk_changes.update().values(status="PROCESSED"))
    assert repo.cancel_bulk_change(bulk_id, "stopped") == (False, {"NEW": 3})
    assert repo.get_bulk_change(bulk_id).status == "PROCESSED"
