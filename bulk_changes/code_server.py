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

Its gRPC server's main thread wakes once a minute, not ten times a second, while it waits
to be stopped (``wait_for_grpc_stop_calmly``), and its cleanup thread looks for dead run
workers every 5 s, not twice a second (``look_for_dead_run_workers_every``).

Every sensor tick it evaluates uses one Dagster instance and one set of built resources,
made at the first tick that needs them and kept while the process lives
(``reuse_sensor_instance_and_resources``): Dagster builds both again for every tick
(from the instance's reference, and each ``ConfigurableResource`` from its config schema),
most of a tick's CPU in the code server when there is nothing to do.

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
# Ctrl+C where a wait cannot be interrupted by a signal; on Linux it can (a SIGTERM or
# SIGINT handler runs, and raises, during the wait), and a stop sets the event the thread
# waits on, so it still ends at once. Once a second cost 0.01-0.02% of a core
# (per-thread CPU, docs/benchmarks.md): nothing needs it sooner.
GRPC_WAIT_SECONDS = 60.0


def wait_for_grpc_stop_calmly(seconds: float = GRPC_WAIT_SECONDS) -> None:
    """Make grpcio's waits (the server's ``wait_for_termination``, a client call's wait
    for its answer) wake every ``seconds`` instead of every 0.1 s while nothing happens;
    each still ends as soon as what it waits for happens."""
    import grpc._common

    grpc._common.MAXIMUM_WAIT_TIMEOUT = seconds


def reuse_sensor_instance_and_resources(context_class: Any = None) -> None:
    """Give each sensor tick the process's one instance for its instance reference, and
    the resources built once for the same resource definitions.

    Dagster makes a ``SensorEvaluationContext`` per tick whose ``instance`` and
    ``resources`` are built when first read and closed when the tick ends: an instance
    from its reference (storages, run launcher, compute log manager) and each resource
    from its config (schema inference, validation, ``EnvVar`` resolution, set-up), most of
    an idle code server's CPU per tick (docs/benchmarks.md). Here they are built once and
    kept. That holds for this project's sensor resources: their set-up keeps nothing per
    tick (engines and the tenants file are cached by the process anyway, the file read
    again when it changes) and the environment they read does not change while the
    process lives (restart the code server to change it, as for the fork server), and
    none has a teardown. Contexts given an instance rather than its reference (tests)
    build theirs as before.

    ``context_class``: Dagster's ``SensorEvaluationContext`` (a subclass in tests)."""
    from bulk_changes.dagster_private import SensorEvaluationContext

    cls = context_class or SensorEvaluationContext
    if cls.__dict__.get("_bulk_changes_shared", False):
        return
    import threading

    from dagster import DagsterInstance, build_resources

    instance_getter = SensorEvaluationContext.instance.fget
    resources_getter = SensorEvaluationContext.resources.fget
    lock = threading.Lock()
    instances: dict[str, Any] = {}
    # (instance reference, resource names and definitions' ids) -> (the resources, the
    # definitions: kept so that their ids are not reused)
    built: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def instance(self: Any) -> Any:
        ref = self._instance_ref
        if self._instance is None and ref is not None:
            key = repr(ref)
            with lock:
                shared = instances.get(key)
                if shared is None:
                    shared = instances[key] = DagsterInstance.from_ref(ref)
            self._instance = shared
        return instance_getter(self)

    def resources(self: Any) -> Any:
        defs, ref = self._resource_defs, self._instance_ref
        if self._resources or not defs or ref is None:
            return resources_getter(self)
        shared = instance(self)
        if shared is not instances.get(repr(ref)):  # an instance given, not its reference
            return resources_getter(self)
        key = (repr(ref), tuple(sorted((name, id(value)) for name, value in defs.items())))
        with lock:
            known = built.get(key)
        if known is None:
            # never left: the resources live with the process (nested resources make a
            # context manager of the whole set, whose exit would call each resource's
            # teardown: none of the project's resources has one, test_code_server)
            made = build_resources(resources=defs, instance=shared).__enter__()
            with lock:
                known = built.setdefault(key, (made, dict(defs)))
        self._resources = known[0]
        return resources_getter(self)

    cls.instance = property(instance)
    cls.resources = property(resources)
    cls._bulk_changes_shared = True


# How often the code server's cleanup thread looks for run workers it started that have
# died, to mark their runs failed: Dagster's 0.5 s, twice a second for the life of the
# server, now every 5 s (a stop still ends its wait at once; dead_run_worker_sensor looks
# too, every minute).
CLEANUP_SECONDS = 5.0


def look_for_dead_run_workers_every(seconds: float = CLEANUP_SECONDS) -> None:
    from bulk_changes.dagster_private import dagster_grpc_server_module

    dagster_grpc_server_module.CLEANUP_TICK = seconds


# Dagster's own tick, used once the server is asked to stop.
STOPPING_CLEANUP_SECONDS = 0.5


def stop_without_waiting_for_a_cleanup_tick() -> None:
    """Make a stop (SIGTERM, Ctrl+C) end the code server as soon as none of its run
    workers is left, not at the cleanup thread's next look.

    On a stop Dagster's server asks to shut down once its runs are done and joins its
    cleanup thread, which ends only after a look finds no run left: with the looks every
    ``CLEANUP_SECONDS`` (above), every stop waited up to 5 s, and a deployment or a test's
    teardown paid it each time. Here the stop looks at once, and later looks (runs still in
    flight) come at Dagster's 0.5 s again."""
    from bulk_changes.dagster_private import DagsterApiServer, dagster_grpc_server_module

    original = DagsterApiServer.cleanup
    if getattr(original, "_bulk_changes_looks_at_once", False):
        return

    def cleanup(self: Any) -> None:
        from bulk_changes.sensors.long_poll import stop_long_polls

        # the queue sensor's tick in flight ends its long poll: the server waits for it
        stop_long_polls()
        dagster_grpc_server_module.CLEANUP_TICK = STOPPING_CLEANUP_SECONDS
        self._shutdown_once_executions_finish_event.set()
        # with no run left this sets the event the cleanup thread waits on: it ends now
        self._check_for_orphaned_runs()
        original(self)

    cleanup._bulk_changes_looks_at_once = True  # type: ignore[attr-defined]
    DagsterApiServer.cleanup = cleanup  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    from bulk_changes.dagster_private import dagster_cli
    from bulk_changes.schema_checks import remember_schema_checks
    from bulk_changes.sqlite_engines import reuse_sqlite_engines

    read_migrations_once()
    reuse_sensor_instance_and_resources()
    remember_schema_checks()
    wait_for_grpc_stop_calmly()
    look_for_dead_run_workers_every()
    stop_without_waiting_for_a_cleanup_tick()
    reuse_sqlite_engines()
    use_forked_run_workers(run_worker_context())
    args = list(sys.argv[1:] if argv is None else argv)
    result = dagster_cli.main(
        args=["api", "grpc", *args], prog_name="dagster", standalone_mode=False
    )
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
