"""bulk_changes.run_queue: the daemon's run queue looks for one queued run before Dagster's
whole look, and a run submitted in the daemon wakes it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, instance_for_test

# a queued run must name the code location it comes from (Dagster checks it)
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from bulk_changes import dagster_private, run_queue
from bulk_changes.run_queue import (
    PooledLook,
    QuietRunQueueDaemon,
    SqliteWrites,
    Wakeup,
    has_queued_run,
    postgres_runs_url,
    sqlite_runs_database,
    use_quiet_run_queue,
    wake_on_submit,
)

QUEUED_COORDINATOR = {
    "run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
}


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test(overrides=QUEUED_COORDINATOR) as inst:
        yield inst


ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin(location_name="bulk_changes"),
        repository_name="__repository__",
    ),
    job_name="process_bulk_change",
)


def _add_run(instance: DagsterInstance, status: DagsterRunStatus) -> DagsterRun:
    return instance.add_run(
        DagsterRun(
            job_name="process_bulk_change",
            run_id=str(uuid.uuid4()),
            status=status,
            remote_job_origin=ORIGIN,
        )
    )


def _queue_run(instance: DagsterInstance) -> DagsterRun:
    """A run queued as the daemon's sensor queues one: through the run coordinator."""
    run = _add_run(instance, DagsterRunStatus.NOT_STARTED)
    return instance.run_coordinator.submit_run(SimpleNamespace(dagster_run=run))


def test_no_queued_run_is_found_when_only_other_runs_exist(instance: DagsterInstance) -> None:
    _add_run(instance, DagsterRunStatus.STARTED)
    _add_run(instance, DagsterRunStatus.SUCCESS)
    assert has_queued_run(instance) is False


def test_a_queued_run_is_found(instance: DagsterInstance) -> None:
    _add_run(instance, DagsterRunStatus.SUCCESS)
    _queue_run(instance)
    assert has_queued_run(instance) is True


class _CountingInstance:
    """Answers the queued-run look; counts what Dagster's whole look would read first."""

    run_storage = object()  # not SQLite's: every look queries

    def __init__(self, queued: list[str]) -> None:
        self.queued = queued
        self.concurrency_reads = 0

    def get_run_ids(self, filters: Any = None, limit: int | None = None) -> list[str]:
        return self.queued[:limit]

    @property
    def run_coordinator(self) -> Any:
        self.concurrency_reads += 1
        raise RuntimeError("Dagster's look started")


def test_a_look_with_nothing_queued_does_not_start_dagsters_look() -> None:
    inst = _CountingInstance(queued=[])
    daemon = QuietRunQueueDaemon(interval_seconds=1)
    assert list(daemon.run_iteration(SimpleNamespace(instance=inst))) == []
    assert inst.concurrency_reads == 0


def test_a_look_with_a_queued_run_goes_on_to_dagsters_look() -> None:
    inst = _CountingInstance(queued=["some-run"])
    daemon = QuietRunQueueDaemon(interval_seconds=1)
    with pytest.raises(RuntimeError, match="Dagster's look started"):
        list(daemon.run_iteration(SimpleNamespace(instance=inst)))


def test_a_wait_without_a_submission_ends_unwoken() -> None:
    assert Wakeup().wait(0.01) is False


def test_a_submission_wakes_the_wait() -> None:
    wakeup = Wakeup()
    wakeup.set()
    assert wakeup.wait(600) is True


def test_a_wakeup_waits_for_the_rest_of_its_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    # the runs of one sensor tick are submitted one after the other: all are queued
    # before the queue looks
    monkeypatch.setattr(run_queue, "BURST_GAP_SECONDS", 0.5)
    wakeup = Wakeup()
    submitted: list[int] = []

    def submit_rest() -> None:
        for n in (2, 3):
            submitted.append(n)
            wakeup.set()

    wakeup.set()
    submitted.append(1)
    threading.Timer(0.05, submit_rest).start()
    assert wakeup.wait(600) is True
    assert submitted == [1, 2, 3]


def test_a_run_queued_in_the_daemon_wakes_the_run_queue(instance: DagsterInstance) -> None:
    coordinator = instance.run_coordinator
    wakeup = Wakeup()
    assert wake_on_submit(coordinator, wakeup) is True
    run = _add_run(instance, DagsterRunStatus.NOT_STARTED)
    queued = coordinator.submit_run(SimpleNamespace(dagster_run=run))
    assert queued.status == DagsterRunStatus.QUEUED
    assert wakeup.wait(0) is True


def test_a_coordinator_is_wrapped_once(instance: DagsterInstance) -> None:
    coordinator = instance.run_coordinator
    wakeup = Wakeup()
    wake_on_submit(coordinator, wakeup)
    wrapped = coordinator.submit_run
    wake_on_submit(coordinator, wakeup)
    assert coordinator.submit_run is wrapped


def test_only_dagsters_queued_run_coordinator_is_woken() -> None:
    default = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        }
    }
    with instance_for_test(overrides=default) as default_instance:
        assert wake_on_submit(default_instance.run_coordinator, Wakeup()) is False


def test_the_run_queue_loop_looks_again_when_a_run_is_submitted(
    instance: DagsterInstance,
) -> None:
    daemon = QuietRunQueueDaemon(interval_seconds=600)
    context = SimpleNamespace(instance=instance)
    loop = daemon.core_loop(context, threading.Event())
    markers = [next(loop), next(loop)]  # START_SPAN, END_SPAN: the first look
    assert markers == [dagster_private.SpanMarker.START_SPAN, dagster_private.SpanMarker.END_SPAN]
    after_wait: list[Any] = []
    waiter = threading.Thread(target=lambda: after_wait.extend([next(loop), next(loop)]))
    waiter.start()
    run = _add_run(instance, DagsterRunStatus.NOT_STARTED)
    instance.run_coordinator.submit_run(SimpleNamespace(dagster_run=run))
    waiter.join(timeout=60)  # the interval is 600 s: only the submission ends the wait
    assert not waiter.is_alive()
    assert after_wait == [None, dagster_private.SpanMarker.START_SPAN]
    loop.close()


def test_the_daemon_makes_the_quiet_run_queue_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller = dagster_private.dagster_daemon_controller
    monkeypatch.setattr(
        controller, "QueuedRunCoordinatorDaemon", controller.QueuedRunCoordinatorDaemon
    )
    monkeypatch.setenv(run_queue.RUN_QUEUE_ENV, "dagster")
    assert use_quiet_run_queue() is False
    assert controller.QueuedRunCoordinatorDaemon is dagster_private.QueuedRunCoordinatorDaemon
    monkeypatch.delenv(run_queue.RUN_QUEUE_ENV)
    assert use_quiet_run_queue() is True
    with instance_for_test(overrides=QUEUED_COORDINATOR) as inst:
        made = controller.create_daemon_of_type("QUEUED_RUN_COORDINATOR", inst)
    assert isinstance(made, QuietRunQueueDaemon)
    assert made.interval_seconds == 1


def test_sqlite_writes_are_seen_only_when_another_connection_commits(tmp_path: Any) -> None:
    import sqlite3

    path = str(tmp_path / "runs.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writes = SqliteWrites(path)
    assert writes() is True  # the first look cannot know
    assert writes() is False
    writer.execute("INSERT INTO t VALUES (1)")
    assert writes() is True
    assert writes() is False
    writes.close()
    writer.close()


def test_the_runs_database_of_the_embedded_instance_is_found(instance: DagsterInstance) -> None:
    import os

    path = sqlite_runs_database(instance)
    assert path is not None and path.endswith("runs.db") and os.path.exists(path)


def test_a_run_storage_other_than_sqlite_has_no_runs_database_file() -> None:
    assert sqlite_runs_database(SimpleNamespace(run_storage=object())) is None


def test_on_sqlite_a_look_after_nothing_was_written_skips_the_query(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[bool] = []

    def counting(inst: Any) -> bool:
        queries.append(has_queued_run(inst))
        return queries[-1]

    monkeypatch.setattr(run_queue, "has_queued_run", counting)
    daemon = QuietRunQueueDaemon(interval_seconds=1)
    context = SimpleNamespace(instance=instance)
    list(daemon.run_iteration(context))
    list(daemon.run_iteration(context))
    assert queries == [False]  # the second look saw no write to the runs database
    _add_run(instance, DagsterRunStatus.NOT_STARTED)  # a write (another connection)
    list(daemon.run_iteration(context))
    assert queries == [False, False]  # looked again: still nothing queued


def test_on_sqlite_a_run_queued_by_another_process_is_found_at_the_next_look(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    dagster_looks: list[str] = []

    def dagsters_look(self: Any, *args: Any, **kwargs: Any) -> Iterator[None]:
        dagster_looks.append("look")
        yield None

    monkeypatch.setattr(dagster_private.QueuedRunCoordinatorDaemon, "run_iteration", dagsters_look)
    daemon = QuietRunQueueDaemon(interval_seconds=1)
    context = SimpleNamespace(instance=instance)
    list(daemon.run_iteration(context))
    assert dagster_looks == []
    _queue_run(instance)
    list(daemon.run_iteration(context))
    assert dagster_looks == ["look"]


def test_a_look_through_a_kept_connection_finds_a_queued_run(instance: DagsterInstance) -> None:
    # (PostgreSQL in production; the same query and pool on the test's SQLite database)
    look = PooledLook(f"sqlite:///{sqlite_runs_database(instance)}")
    assert look() is False
    _queue_run(instance)
    assert look() is True
    look.close()


def test_a_look_through_a_failed_connection_leaves_the_answer_to_dagster(tmp_path: Any) -> None:
    look = PooledLook(f"sqlite:///{tmp_path}/missing/runs.db")
    assert look() is None


def test_only_postgres_run_storage_with_a_password_is_looked_at_through_a_kept_connection(
    instance: DagsterInstance,
) -> None:
    from dagster_postgres.run_storage import PostgresRunStorage

    assert postgres_runs_url(instance) is None
    storage = object.__new__(PostgresRunStorage)
    storage.postgres_url = "postgresql+psycopg2://dagster:secret@db:5432/dagster"
    storage._token_provider = None
    assert postgres_runs_url(SimpleNamespace(run_storage=storage)) == storage.postgres_url
    storage._token_provider = object()
    assert postgres_runs_url(SimpleNamespace(run_storage=storage)) is None
