"""The code server, with run workers forked from a process that has imported the code.

    python -m bulk_changes.code_server -m bulk_changes.definitions -h 127.0.0.1 -p 4266

takes the arguments of ``dagster api grpc`` and serves the same code location. The one
difference: Dagster's code server starts each run worker with ``multiprocessing``'s
*spawn*, a new interpreter that imports Dagster and the definitions again before the run
can start (1.5-3 CPU-seconds and as many seconds of wall time on this 2-core host, the
largest part of a message's way to its first vendor call). Here run workers come from a
*forkserver* that imported Dagster and ``bulk_changes.definitions`` once, when the code
server started: a run worker is a fork of it, its imports done (docs/benchmarks.md,
"From a message to the first vendor call").

The fork server is a single-threaded process started by the code server (a fork of the
multi-threaded gRPC server itself would not be safe). It reads the environment once, at
start: restart the code server to load new code or settings, as a deployment does anyway.
``BULK_CHANGES_RUN_WORKER_START=spawn`` keeps Dagster's own way.

Its gRPC server's main thread wakes once a second, not ten times, while it waits to be
stopped (``wait_for_grpc_stop_calmly``).

On the embedded SQLite instance it also keeps one SQLAlchemy engine per database
(``bulk_changes.sqlite_engines``): each sensor tick builds an instance whose storage
otherwise makes a new engine, and compiles its statements again, for every query.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys
from collections.abc import Sequence
from typing import Any

# What the fork server imports (and freezes) before it forks the first run worker.
PRELOAD = ("bulk_changes.run_worker_preload",)
START_METHOD_ENV = "BULK_CHANGES_RUN_WORKER_START"


def run_worker_context(preload: Sequence[str] = PRELOAD) -> Any:
    """The multiprocessing context run workers are started with: a forkserver whose
    process imports ``preload`` when it starts (``use_forked_run_workers`` starts it
    with the code server, not at the first run)."""
    if os.environ.get(START_METHOD_ENV, "forkserver") == "spawn":
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def use_forked_run_workers(context: Any) -> None:
    """Make Dagster's code server start its run workers with ``context``."""
    from bulk_changes.dagster_private import DagsterApiServer

    original = DagsterApiServer.__init__
    if getattr(original, "_bulk_changes_context", None) is not None:
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # read by StartRun for every run's Process, Queue and Event
        self._mp_ctx = context
        if context.get_start_method() == "forkserver":
            # now, with the environment the server has once set up (a run worker gets
            # the fork server's), and before the first run, not during it
            multiprocessing.forkserver.ensure_running()

    __init__._bulk_changes_context = context  # type: ignore[attr-defined]
    DagsterApiServer.__init__ = __init__  # type: ignore[method-assign]


def read_migrations_once() -> None:
    """Read each of Dagster's storage migration folders once per process.

    Every sensor tick builds a Dagster instance from its reference (the code server's
    resources need one), and building its SQLite storage compares the database's schema
    revision with the newest migration script, which alembic finds by reading every script
    of the folder again: 70% of an idle code server's CPU (py-spy, docs/benchmarks.md). The
    scripts are the installed package's and do not change while the process lives; the
    database's revision is still read every time."""
    from bulk_changes.dagster_private import dagster_storage_sql

    loaded = dagster_storage_sql.ScriptDirectory
    if getattr(loaded, "_bulk_changes_once", False):
        return
    found: dict[str, Any] = {}

    class ScriptDirectoryReadOnce(loaded):  # type: ignore[misc, valid-type]
        _bulk_changes_once = True

        @classmethod
        def from_config(cls, config: Any) -> Any:
            location = str(config.get_main_option("script_location"))
            if location not in found:
                found[location] = loaded.from_config(config)
            return found[location]

    dagster_storage_sql.ScriptDirectory = ScriptDirectoryReadOnce


# How long the gRPC server's main thread sleeps between looks at whether the server has
# stopped: grpcio's 0.1 s (ten wake-ups a second, 0.1% of a core while idle) is there for
# Ctrl+C where a wait cannot be interrupted by a signal; on Linux it can, and a stop sets
# the event the thread waits on, so it still ends at once.
GRPC_WAIT_SECONDS = 1.0


def wait_for_grpc_stop_calmly(seconds: float = GRPC_WAIT_SECONDS) -> None:
    """Make grpcio's waits (the server's ``wait_for_termination``, a client call's wait
    for its answer) wake every ``seconds`` instead of every 0.1 s while nothing happens;
    each still ends as soon as what it waits for happens."""
    import grpc._common

    grpc._common.MAXIMUM_WAIT_TIMEOUT = seconds


def main(argv: Sequence[str] | None = None) -> int:
    from bulk_changes.dagster_private import dagster_cli
    from bulk_changes.schema_checks import remember_schema_checks
    from bulk_changes.sqlite_engines import reuse_sqlite_engines

    read_migrations_once()
    remember_schema_checks()
    wait_for_grpc_stop_calmly()
    reuse_sqlite_engines()
    use_forked_run_workers(run_worker_context())
    args = list(sys.argv[1:] if argv is None else argv)
    result = dagster_cli.main(
        args=["api", "grpc", *args], prog_name="dagster", standalone_mode=False
    )
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
