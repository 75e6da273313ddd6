"""What the code server's fork server imports once, before it forks any run worker
(``bulk_changes.code_server``): Dagster, the definitions and what a run imports on its
way to its first batch, then every object of them frozen out of the cyclic collector's
reach. A forked run worker starts with all of it: no imports of its own, and its first
full collection (``processing.memory.freeze_startup_objects``) walks only what its run
made, not the imports (80-150 ms each on this host)."""

from __future__ import annotations

import gc
import importlib
import tempfile

# Imported by a run worker after the fork, found with py-spy and sys.modules: Dagster's
# run execution and its SQLite storage, the project's processing path.
RUN_MODULES = (
    "dagster",
    "bulk_changes.definitions",
    "dagster._grpc.impl",
    "dagster._core.execution.api",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.local_compute_log_manager",
    "sqlalchemy.dialects.sqlite",
    "bulk_changes.ops.process",
    "bulk_changes.processing.runner",
    "bulk_changes.threaded_executor",
    # the vendors' clients, imported when a batch makes its first call (requests, the
    # keep-alive connections): 20 ms of a run worker's CPU on the way to that call
    "bulk_changes.resources.jasper",
    "bulk_changes.resources.telegence",
    "bulk_changes.resources.revio",
    # the tenants file's pydantic models, imported when a run first reads its tenant
    # (``tenant_file.load_settings``): 16 ms of a run worker's CPU, its models built
    "bulk_changes.schemas.tenants_file",
    # seen opened by a run worker under strace: its instance, run config and step threads
    "dagster._core.instance.factory",
    "dagster._core.storage.root",
    "dagster._core.system_config.composite_descent",
    "dagster._utils.test.definitions",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "multiprocessing.popen_forkserver",
)


def read_storage_migrations() -> None:
    """Dagster's storage migration scripts read once, here (``code_server.
    read_migrations_once``): each run worker builds its instance from a reference, whose
    run, event log and schedule storages each compare the database's revision with the
    newest script."""
    from bulk_changes.code_server import read_migrations_once
    from bulk_changes.dagster_private import (
        dagster_storage_sql,
        sqlite_event_log_module,
        sqlite_run_storage_module,
        sqlite_schedule_storage_module,
    )

    read_migrations_once()
    for storage in (
        sqlite_run_storage_module,
        sqlite_event_log_module,
        sqlite_schedule_storage_module,
    ):
        config = dagster_storage_sql.get_alembic_config(storage.__file__)
        dagster_storage_sql.ScriptDirectory.from_config(config).as_revision_number("head")


def build_the_repository() -> None:
    """The code location's repository, built once: a run worker finds its job through
    ``Definitions.get_repository_def``, which keeps what it built (in a forked child,
    20-25 ms of CPU to the job without it, 4 ms with it)."""
    from bulk_changes.definitions import defs

    defs.get_repository_def()


def make_a_upath() -> None:
    """Every instance Dagster makes from its reference (each run worker's, at its start)
    gets a defs-state storage on a ``UPath``: the first one imports universal_pathlib and
    fsspec and reads every installed distribution's entry points, twice (about 50 ms of
    a run worker's CPU, strace and a forked child's ``DagsterInstance.from_ref``). Made
    here once, the forked worker finds them done."""
    try:
        from upath import UPath
    except ImportError:  # a Dagster without it makes none
        return
    UPath(tempfile.gettempdir())


def preload(modules: tuple[str, ...] = RUN_MODULES) -> list[str]:
    """Import ``modules`` (those this Dagster or environment lacks are skipped), read
    the storages' migrations, make a UPath, build the repository and keep one engine per
    SQLite database (``sqlite_engines``), then one full collection and ``gc.freeze()``.
    -> the modules not found."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    read_storage_migrations()
    make_a_upath()
    build_the_repository()
    # Dagster's SQLite storage makes a new engine, its compiled statements with it, for
    # every connection: a run worker stores each of its events so (3% of an unconstrained
    # run worker's busy samples under py-spy were the engines made and the INSERT compiled)
    from bulk_changes.sqlite_engines import reuse_sqlite_engines

    reuse_sqlite_engines()
    gc.collect()
    gc.freeze()
    return missing


MISSING = preload()
