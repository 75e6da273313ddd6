"""bulk_changes.code_server: Dagster's code server, its run workers forked from a process
that has imported the code."""

from __future__ import annotations

import logging
import multiprocessing
import threading

import pytest

from bulk_changes import code_server
from bulk_changes.dagster_private import DagsterApiServer


@pytest.fixture
def restored_server_init(monkeypatch: pytest.MonkeyPatch) -> None:
    # the patch is process-wide: undone after each test
    monkeypatch.setattr(DagsterApiServer, "__init__", DagsterApiServer.__init__)


def _server() -> DagsterApiServer:
    from concurrent.futures import ThreadPoolExecutor

    return DagsterApiServer(
        server_termination_event=threading.Event(),
        logger=logging.getLogger("test"),
        server_threadpool_executor=ThreadPoolExecutor(1),  # type: ignore[arg-type]
    )


def test_a_patched_code_server_starts_runs_with_the_given_context(
    restored_server_init: None,
) -> None:
    # (not a forkserver context: the server would start this process's fork server
    # without the preload the tests below look for)
    context = multiprocessing.get_context("spawn")
    code_server.use_forked_run_workers(context)
    assert _server()._mp_ctx is context


def test_an_unpatched_code_server_spawns_its_run_workers(restored_server_init: None) -> None:
    assert _server()._mp_ctx.get_start_method() == "spawn"


def test_spawn_setting_keeps_dagsters_own_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(code_server.START_METHOD_ENV, "spawn")
    assert code_server.run_worker_context().get_start_method() == "spawn"


def test_migration_scripts_are_read_once_and_give_the_same_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import get_alembic_config

    from bulk_changes.dagster_private import dagster_storage_sql

    loaded = dagster_storage_sql.ScriptDirectory
    monkeypatch.setattr(dagster_storage_sql, "ScriptDirectory", loaded)
    config = get_alembic_config(sqlite_run_storage.__file__)
    head = loaded.from_config(config).as_revision_number("head")
    code_server.read_migrations_once()
    once = dagster_storage_sql.ScriptDirectory
    assert once.from_config(config) is once.from_config(config)
    assert once.from_config(config).as_revision_number("head") == head


def _what_a_run_worker_starts_with() -> tuple[bool, int]:
    import gc
    import sys

    return "bulk_changes.definitions" in sys.modules, gc.get_freeze_count()


def _migration_scripts_a_run_worker_reads() -> str:
    from bulk_changes.dagster_private import dagster_storage_sql

    return dagster_storage_sql.ScriptDirectory.__name__


def test_run_workers_start_with_the_definitions_imported_and_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.delenv(code_server.START_METHOD_ENV, raising=False)
    context = code_server.run_worker_context()
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        imported, frozen = pool.submit(_what_a_run_worker_starts_with).result(timeout=120)
    assert imported
    assert frozen > 10_000  # Dagster's and the definitions' objects


def test_run_workers_start_with_the_migration_scripts_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.delenv(code_server.START_METHOD_ENV, raising=False)
    context = code_server.run_worker_context()
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        name = pool.submit(_migration_scripts_a_run_worker_reads).result(timeout=120)
    assert name == "ScriptDirectoryReadOnce"


@pytest.fixture
def restored_grpc_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc._common

    monkeypatch.setattr(grpc._common, "MAXIMUM_WAIT_TIMEOUT", grpc._common.MAXIMUM_WAIT_TIMEOUT)


def test_the_grpc_servers_wait_wakes_once_a_second(restored_grpc_wait: None) -> None:
    import grpc._common

    code_server.wait_for_grpc_stop_calmly()
    assert grpc._common.MAXIMUM_WAIT_TIMEOUT == code_server.GRPC_WAIT_SECONDS == 1.0


def test_a_stopped_grpc_server_still_ends_its_wait(restored_grpc_wait: None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    code_server.wait_for_grpc_stop_calmly(600)
    server = grpc.server(ThreadPoolExecutor(1))
    server.start()
    waiter = threading.Thread(target=server.wait_for_termination)
    waiter.start()
    server.stop(grace=None)
    waiter.join(timeout=60)  # a wait of 600 s between looks: only the stop ends it
    assert not waiter.is_alive()
