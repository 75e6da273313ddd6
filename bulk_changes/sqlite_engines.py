"""One SQLAlchemy engine per SQLite database and process, for Dagster's SQLite storage.

Dagster's SQLite storages (the embedded default instance: runs, schedules and sensor
ticks, event logs) create a new SQLAlchemy engine for every connection they open. An
engine holds SQLAlchemy's cache of compiled statements, so every query of an idle daemon
(the run queue every second, each sensor tick's bookkeeping, heartbeats) is compiled
again, and the storage's schema checks (the tables and columns it reflects) start from
nothing: about half of the idle daemon's CPU (py-spy, docs/benchmarks.md, "Idle").

``reuse_sqlite_engines()`` makes those modules' ``create_engine`` return the engine
already made for the same database and arguments. The engines keep Dagster's ``NullPool``
(each connection is still a new SQLite connection, opened and closed as before: nothing
is shared between threads or across a fork), so what is kept is the compiled statements.
At most ``MAX_ENGINES`` are kept (an event log has one database per run), the least
recently used dropped. PostgreSQL storage is untouched (its engine is made once).

Used by ``bulk_changes.code_server`` and ``bulk_changes.daemon`` (the processes that live
for days); ``BULK_CHANGES_SQLITE_ENGINES=new`` keeps Dagster's way.

``keep_sqlite_connections()`` (the daemon's, after ``reuse_sqlite_engines``) also keeps
the connections of the runs and schedules databases (``runs.db``, ``schedules.db``: the
run queue, heartbeats, each sensor tick's bookkeeping) open in a pool instead of opening
a new SQLite connection, and reading the schema again, for every statement: 0.5 ms ->
0.1 ms for the sensor loop's read of the sensors' states, 2 ms -> 0.4 ms for a run
record. A connection is used by one thread at a time (taken from the pool for one
statement or transaction and given back, rolled back if anything was left open);
``KEPT_CONNECTIONS`` stay open, more are opened when more threads need one at once and
closed after use, as before. Nothing is kept between transactions but the open file: a
connection sees every other process's commits at its next statement, as a new one does.
The event logs' databases (one per run) keep Dagster's way.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

MAX_ENGINES = 64
SETTING_ENV = "BULK_CHANGES_SQLITE_ENGINES"
KEPT_CONNECTIONS = 2


class EngineCache:
    """``create_engine`` with the engines it made kept by their arguments."""

    def __init__(self, create: Any, size: int = MAX_ENGINES) -> None:
        self.create = create
        self.size = size
        # True: engines asked for with NullPool get a pool that keeps connections
        self.keep_connections = False
        self.engines: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def __call__(self, url: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            key = (str(url), args, _frozen(kwargs))
        except TypeError:  # an argument that cannot be a key: as Dagster does
            return self.create(url, *args, **kwargs)
        with self.lock:
            engine = self.engines.get(key)
            if engine is not None:
                self.engines.move_to_end(key)
                return engine
        engine = self.create(url, *args, **self._pooled(kwargs))
        with self.lock:
            kept = self.engines.setdefault(key, engine)
            self.engines.move_to_end(key)
            while len(self.engines) > self.size:
                self.engines.popitem(last=False)
        return kept

    def _pooled(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from sqlalchemy.pool import NullPool, QueuePool

        if not self.keep_connections or kwargs.get("poolclass") is not NullPool:
            return kwargs
        connect_args = {**kwargs.get("connect_args", {}), "check_same_thread": False}
        return {
            **kwargs,
            "poolclass": QueuePool,
            "pool_size": KEPT_CONNECTIONS,
            "max_overflow": -1,  # no bound: a thread never waits for another's connection
            "connect_args": connect_args,
        }


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    hash(value)
    return value


def reuse_sqlite_engines() -> bool:
    """Patch Dagster's SQLite storage modules (once per process); False if the setting
    keeps Dagster's way."""
    if os.environ.get(SETTING_ENV, "reuse") == "new":
        return False
    from bulk_changes import dagster_private

    for module in (
        dagster_private.sqlite_run_storage_module,
        dagster_private.sqlite_schedule_storage_module,
        dagster_private.sqlite_event_log_module,
        dagster_private.consolidated_sqlite_event_log_module,
    ):
        current = module.create_engine
        if not isinstance(current, EngineCache):
            module.create_engine = EngineCache(current)
    return True


def keep_sqlite_connections() -> bool:
    """Keep the runs and schedules databases' connections open (see above); False when
    the engines are Dagster's (``reuse_sqlite_engines`` not in effect)."""
    from bulk_changes import dagster_private

    done = False
    for module in (
        dagster_private.sqlite_run_storage_module,
        dagster_private.sqlite_schedule_storage_module,
    ):
        if isinstance(module.create_engine, EngineCache):
            module.create_engine.keep_connections = True
            done = True
    return done
