"""The daemon's run queue, nearly free while nothing is queued.

Dagster's run queue (``QueuedRunCoordinatorDaemon``) looks for queued runs every
``dequeue_interval_seconds`` and, at each look, reads the instance's concurrency settings
and every run in progress before it asks for the queued ones: the largest part of an idle
daemon's CPU (docs/benchmarks.md, "Idle"). ``QuietRunQueueDaemon`` (installed by
``python -m bulk_changes.daemon``) changes two things and nothing else:

- each look first asks the run storage for one queued run id (the runs table's status
  index); with none it is done. With one, Dagster's own look runs as before, so a run
  waiting for a run or pool slot starts at the first look after the slot frees. On the
  embedded SQLite storage even that query is skipped while nothing at all was written to
  the runs database since a look that found nothing queued (SQLite's ``PRAGMA
  data_version`` on a connection kept open for it: a few microseconds, where a query on
  a new connection, as Dagster opens one for each, costs about two milliseconds). On
  PostgreSQL the query goes through one connection kept open for it (dagster-postgres
  opens a new connection for every statement: most of a look's CPU), falling back to
  Dagster's own query whenever that connection fails;
- a run submitted in the daemon's own process (the queue sensor's runs, run retries'
  re-executions) wakes the queue at once instead of at the next look. Runs of a sensor
  tick are submitted one after the other, milliseconds apart: the queue waits until
  ``BURST_GAP_SECONDS`` pass without another, so they launch together, as they did.
  Runs queued by another process (the UI's re-execute, the command line) are found by the
  look every ``dequeue_interval_seconds``, as before.

Between looks the thread sleeps until the next look or a wake-up
(``bulk_changes.interval_loops``; Dagster's loop wakes twice a second to see whether it is
time); the daemon's shutdown is seen within ``dequeue_interval_seconds``. ``BULK_CHANGES_RUN_QUEUE=dagster`` keeps Dagster's
run queue.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy
from dagster import DagsterRunStatus, QueuedRunCoordinator, RunsFilter

from bulk_changes.dagster_private import (
    QueuedRunCoordinatorDaemon,
    RunsTable,
    dagster_daemon_controller,
    sqlite_run_storage_module,
)
from bulk_changes.interval_loops import calm_loop

RUN_QUEUE_ENV = "BULK_CHANGES_RUN_QUEUE"
# Runs of one sensor tick are submitted milliseconds apart; wait this long for the next
# before launching, so that they launch together (a launch waits for its worker to start).
BURST_GAP_SECONDS = 0.1
# ... but no longer than this after the first.
BURST_MAX_SECONDS = 1.0


def has_queued_run(instance: Any) -> bool:
    """Whether any run is QUEUED: one id read through the run storage's status index."""
    return bool(
        instance.get_run_ids(filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=1)
    )


class SqliteWrites:
    """Whether another connection committed to a SQLite database since the last call
    (``PRAGMA data_version`` on a connection of its own, which never writes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None

    def __call__(self) -> bool:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, isolation_level=None)
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True  # cannot tell: look
        changed = version != self._version
        self._version = version
        return changed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._version = None


def sqlite_runs_database(instance: Any) -> str | None:
    """The file of the instance's runs database when it is Dagster's SQLite run storage."""
    storage = instance.run_storage
    if not isinstance(storage, sqlite_run_storage_module.SqliteRunStorage):
        return None
    conn_string = str(getattr(storage, "_conn_string", ""))
    prefix = "sqlite:///"
    return conn_string[len(prefix) :] if conn_string.startswith(prefix) else None


class PooledLook:
    """Whether any run is QUEUED, through one connection to the run storage's database
    kept open (``None`` when that fails: the caller asks Dagster's storage instead)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Any = None
        self._query = (
            sqlalchemy.select(RunsTable.c.run_id)
            .where(RunsTable.c.status == DagsterRunStatus.QUEUED.value)
            .limit(1)
        )

    def __call__(self) -> bool | None:
        try:
            if self._engine is None:
                self._engine = sqlalchemy.create_engine(
                    self.url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT"
                )
            with self._engine.connect() as conn:
                return conn.execute(self._query).first() is not None
        except Exception:  # the server restarted, the network dropped: a new one next time
            self.close()
            return None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None


def postgres_runs_url(instance: Any) -> str | None:
    """The URL of the instance's runs database when it is dagster-postgres' run storage
    with a plain password (not a token provider's)."""
    storage = instance.run_storage
    if type(storage).__name__ != "PostgresRunStorage":
        return None
    if getattr(storage, "_token_provider", None) is not None:
        return None
    url = getattr(storage, "postgres_url", None)
    return url if isinstance(url, str) and url else None


class Wakeup:
    """Set by a run's submission in this process; waited on by the run queue."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        """Until set or ``timeout`` seconds; True when set. A wake-up then waits for the rest
        of its burst: until ``BURST_GAP_SECONDS`` pass without another submission (at most
        ``BURST_MAX_SECONDS``)."""
        if not self._event.wait(max(timeout, 0.0)):
            return False
        deadline = time.monotonic() + BURST_MAX_SECONDS
        while True:
            self._event.clear()
            gap = min(BURST_GAP_SECONDS, deadline - time.monotonic())
            if gap <= 0 or not self._event.wait(gap):
                return True


def wake_on_submit(run_coordinator: Any, wakeup: Wakeup) -> bool:
    """Make ``run_coordinator`` (this process's, shared by every daemon thread) set
    ``wakeup`` after each run it queues. False when it is not Dagster's queued run
    coordinator (nothing to wake then)."""
    if not isinstance(run_coordinator, QueuedRunCoordinator):
        return False
    submit: Callable[[Any], Any] = run_coordinator.submit_run
    if getattr(submit, "_bulk_changes_wakeup", None) is wakeup:
        return True

    def submit_run(context: Any) -> Any:
        run = submit(context)
        wakeup.set()  # the run is QUEUED in the storage now
        return run

    submit_run._bulk_changes_wakeup = wakeup  # type: ignore[attr-defined]
    run_coordinator.submit_run = submit_run
    return True


class QuietRunQueueDaemon(QueuedRunCoordinatorDaemon):  # type: ignore[misc]
    """Dagster's run queue, looking for queued runs cheaply and woken by submissions."""

    def __init__(self, interval_seconds: float, **kwargs: Any) -> None:
        super().__init__(interval_seconds, **kwargs)
        self.wakeup = Wakeup()
        self._writes: SqliteWrites | None = None
        self._pooled: PooledLook | None = None
        self._watching = False
        self._none_queued = False  # what the last look found

    def _runs_written(self, instance: Any) -> bool:
        """Whether the runs database may have changed since the last look (always, on
        storage other than SQLite's)."""
        if not self._watching:
            self._watching = True
            path = sqlite_runs_database(instance)
            self._writes = SqliteWrites(path) if path else None
            url = postgres_runs_url(instance)
            self._pooled = PooledLook(url) if url else None
        return self._writes is None or self._writes()

    def run_iteration(
        self, workspace_process_context: Any, fixed_iteration_time: float | None = None
    ) -> Iterator[Any]:
        self.wakeup.clear()  # a run submitted from now on wakes the next pause
        instance = workspace_process_context.instance
        # read before the query: a run queued during it changes the version seen next time
        written = self._runs_written(instance)
        if self._none_queued and not written:
            return
        self._none_queued = False  # (a failed query below leaves the next look to query)
        found = self._pooled() if self._pooled is not None else None
        if not (has_queued_run(instance) if found is None else found):
            self._none_queued = True
            return
        yield from super().run_iteration(
            workspace_process_context, fixed_iteration_time=fixed_iteration_time
        )

    def core_loop(self, workspace_process_context: Any, shutdown_event: Any) -> Iterator[Any]:
        # Dagster's loop, its pause between looks ended by a submission or the shutdown
        wake_on_submit(workspace_process_context.instance.run_coordinator, self.wakeup)
        yield from calm_loop(
            self,
            workspace_process_context,
            lambda seconds: self.wakeup.wait(seconds) or shutdown_event.is_set(),
        )


def use_quiet_run_queue() -> bool:
    """Make the daemon start ``QuietRunQueueDaemon`` as its run queue (unless
    ``BULK_CHANGES_RUN_QUEUE=dagster``). True when it will."""
    if os.environ.get(RUN_QUEUE_ENV, "quiet") == "dagster":
        return False
    dagster_daemon_controller.QueuedRunCoordinatorDaemon = QuietRunQueueDaemon
    return True
