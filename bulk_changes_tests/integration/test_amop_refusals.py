"""A device whose AMOP update the database refuses, after the external systems changed:
the stage runner with the real clients over HTTP to the simulators, on PostgreSQL (which
refuses a NUL character in text; intake refuses it now, but rows stored before, or any
value a column cannot hold, reach the update all the same)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text, update

from bulk_changes.db import schema as t
from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.intake import inventory_rows
from bulk_changes.simulators import SimulatorSet, start_simulators
from bulk_changes.simulators.seeding import seed_from_inventory_rows
from bulk_changes_tests.integration.test_unknown_outcomes import (
    devices,
    jasper_rows,
    run_device_changes,
    settings_for,
    submit,
)


@pytest.fixture(scope="module")
def sims() -> Iterator[SimulatorSet]:
    sims = start_simulators()
    yield sims
    sims.stop()


@pytest.fixture
def repo(pg_database: str, sims: SimulatorSet) -> Iterator[Repository]:
    engine = make_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    sims.reset(settings=True)
    rows = devices(40)
    repo = Repository(engine)
    repo.upsert_devices("acme", inventory_rows(rows, "test"))
    seed_from_inventory_rows(sims, rows)
    yield repo
    engine.dispose()


def poison_username(repo: Repository, bulk_id: int, iccid: str) -> None:
    """What intake refuses today, as a row stored before it did would hold it."""
    [change] = [c for c in repo.device_changes_of(bulk_id) if c.device_key == iccid]
    request = {**change.request, "username": "bad\x00name"}
    with repo.engine.begin() as conn:
        conn.execute(
            update(t.device_changes)
            .where(t.device_changes.c.id == change.id)
            .values(request=json.dumps(request))
        )


def jasper_puts(sims: SimulatorSet) -> Counter[str]:
    return Counter(
        call["key"]
        for call in sims.jasper.calls()
        if call["method"] == "PUT" and 200 <= call["status"] < 300
    )


def refused_run(repo: Repository, sims: SimulatorSet) -> tuple[int, str, Any]:
    settings = settings_for(sims)
    rows = jasper_rows(5)
    bulk_id = submit(repo, settings, "username_cost_center", "jasper", rows)
    bad = rows[2]["iccid"]
    poison_username(repo, bulk_id, bad)
    run_device_changes(repo, settings, bulk_id, "jasper")
    return bulk_id, bad, settings


def test_a_refused_inventory_update_fails_that_device_only(repo, sims) -> None:
    bulk_id, bad, _ = refused_run(repo, sims)
    statuses = {c.device_key: c.status for c in repo.device_changes_of(bulk_id)}
    assert statuses.pop(bad) == "API_FAILED"
    assert set(statuses.values()) == {"PROCESSED"}


def test_a_refused_inventory_update_names_the_database_and_keeps_the_vendor_step(
    repo, sims
) -> None:
    bulk_id, bad, _ = refused_run(repo, sims)
    [change] = [c for c in repo.device_changes_of(bulk_id) if c.device_key == bad]
    assert "the AMOP database refused the inventory update" in change.last_error
    assert "\x00" not in change.last_error
    assert "jasper.set_username" in repo.completed_steps([change.id])[change.id]


def test_retrying_a_refused_inventory_update_does_not_call_the_vendor_again(repo, sims) -> None:
    bulk_id, bad, settings = refused_run(repo, sims)
    [change] = [c for c in repo.device_changes_of(bulk_id) if c.device_key == bad]
    with repo.engine.begin() as conn:  # the operator fixes the value, then retries
        conn.execute(
            update(t.device_changes)
            .where(t.device_changes.c.id == change.id)
            .values(request=json.dumps({**change.request, "username": "good-name"}))
        )
    repo.start_processing(bulk_id, "run-retry", retry_failed_only=True)
    run_device_changes(repo, settings, bulk_id, "jasper")
    assert repo.counts(bulk_id) == {"PROCESSED": 5}
    assert jasper_puts(sims)[bad] == 1
