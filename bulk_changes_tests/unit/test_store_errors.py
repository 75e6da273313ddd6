"""The database adapter's errors in the project's terms: a database away is
StoreUnavailable, refused values StoreRefused, and the stage runner fails the batch on
the first (Dagster retries the op) instead of judging a device by it."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.store_errors import TranslatedLimiter, store_errors, store_errors_and_values
from bulk_changes.domain.errors import StoreRefused, StoreUnavailable
from bulk_changes.domain.retry import RetryPolicy
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.processing.runner import StageRunner
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeClients, fake_systems


def _away() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_a_database_without_its_tables_comes_out_as_store_unavailable(tmp_path) -> None:
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    with pytest.raises(StoreUnavailable) as raised:
        repo.completed_steps([1])
    assert isinstance(raised.value.__cause__, OperationalError)


def test_refused_values_come_out_as_store_refused_without_the_statements_values() -> None:
    @store_errors
    def insert() -> None:
        raise IntegrityError(
            "INSERT INTO t VALUES (?)", {"token": "s3cret"}, Exception("UNIQUE failed: t.id")
        )

    with pytest.raises(StoreRefused) as raised:
        insert()
    assert raised.value.reason == "Exception: UNIQUE failed: t.id"
    assert "s3cret" not in str(raised.value)


def test_a_value_the_driver_would_not_send_is_refused_only_where_values_are_written() -> None:
    def send() -> None:
        raise ValueError("A string literal cannot contain NUL (0x00) characters.")

    with pytest.raises(StoreRefused):
        store_errors_and_values(send)()
    with pytest.raises(ValueError):
        store_errors(send)()


class _AwayLimiter:
    @contextmanager
    def slot(self, account_name, limit, lease_seconds=None):
        raise _away()
        yield

    def penalize(self, account_name: str, seconds: float) -> None:
        raise _away()


class _FreeLimiter:
    @contextmanager
    def slot(self, account_name, limit, lease_seconds=None):
        yield "departures"

    def penalize(self, account_name: str, seconds: float) -> None:
        return None


def test_the_limiters_database_errors_come_out_as_store_unavailable() -> None:
    limiter = TranslatedLimiter(_AwayLimiter())
    with pytest.raises(StoreUnavailable), limiter.slot("acct", None):
        pass
    with pytest.raises(StoreUnavailable):
        limiter.penalize("acct", 1.0)


def test_a_calls_own_error_passes_through_the_limiters_slot_unchanged() -> None:
    limiter = TranslatedLimiter(_FreeLimiter())
    with pytest.raises(KeyError), limiter.slot("acct", None) as departures:
        assert departures == "departures"
        raise KeyError("the call's own")


class _StoreAwayAtBegin:
    """The real repository, except that the database goes away when a step begins."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def begin_step(self, device_change_id: int, step: str, run_id: str | None) -> bool:
        raise StoreUnavailable("OperationalError: server closed the connection")

    def __getattr__(self, name: str):
        return getattr(self.repo, name)


def test_a_store_away_during_a_step_fails_the_batch_and_leaves_the_device_open(
    repo, settings, fake_key
) -> None:
    rows = inventory(1, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    request = [{"iccid": rows[0]["iccid"], "username": "ann"}]
    bulk_id = submit(repo, settings, "username_cost_center", "jasper", request).id
    bulk = repo.get_bulk_change(bulk_id)
    runner = StageRunner(
        repo=_StoreAwayAtBegin(repo),
        bulk=bulk,
        tenant=settings.tenant(bulk.tenant_id),
        clients_factory=lambda recorder: FakeClients(fake_key, "jasper"),
        policy=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0),
        run_id="run-1",
        sleep=lambda s: None,
        rng=random.Random(0),
    )
    with pytest.raises(StoreUnavailable):
        runner.run(repo.pending_device_change_ids(bulk_id), STAGE_ORDER)
    assert [c.status for c in repo.device_changes_of(bulk_id)] == ["NEW"]
    assert fake_systems(fake_key)["jasper"].calls == []
