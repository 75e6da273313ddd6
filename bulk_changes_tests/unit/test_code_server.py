"""bulk_changes.code_server: Dagster's code server, its run workers forked from a process
that has imported the code."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from dagster import (
    ConfigurableResource,
    DagsterInstance,
    InitResourceContext,
    SensorEvaluationContext,
)

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


def test_the_grpc_servers_wait_wakes_once_a_minute(restored_grpc_wait: None) -> None:
    import grpc._common

    code_server.wait_for_grpc_stop_calmly()
    assert grpc._common.MAXIMUM_WAIT_TIMEOUT == code_server.GRPC_WAIT_SECONDS == 60.0


def test_a_signal_ends_the_grpc_servers_wait_at_once(restored_grpc_wait: None) -> None:
    # the code server's stop on SIGTERM / Ctrl+C: its handler runs during the long wait
    import os
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    class Stopped(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    code_server.wait_for_grpc_stop_calmly()
    server = grpc.server(ThreadPoolExecutor(1))
    server.start()
    previous = signal.signal(signal.SIGTERM, stop)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    try:
        timer.start()
        with pytest.raises(Stopped):
            server.wait_for_termination()
        assert time.monotonic() - started < 5
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
        server.stop(grace=None)


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


class _Counted(ConfigurableResource):
    builds: ClassVar[list[int]] = []

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.builds.append(1)


@pytest.fixture
def shared_context(tmp_path: Path) -> Iterator[tuple[type, Any]]:
    class Context(SensorEvaluationContext):
        pass

    code_server.reuse_sensor_instance_and_resources(Context)
    _Counted.builds.clear()
    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        yield Context, instance


def _instance_ref(tmp_path: Path) -> Any:
    home = tmp_path / "home"
    home.mkdir()
    return DagsterInstance.local_temp(str(home)).get_ref()


def _tick(context_class: type, ref: Any, resources: dict[str, Any]) -> tuple[Any, Any]:
    with context_class(ref, resources=resources, sensor_name="s") as context:
        return context.instance, context.resources.counted


def test_sensor_ticks_of_the_code_server_share_one_instance(
    shared_context: tuple[type, Any], tmp_path: Path
) -> None:
    context_class, _ = shared_context
    ref = _instance_ref(tmp_path)
    resources = {"counted": _Counted()}

    first, _ = _tick(context_class, ref, resources)
    second, _ = _tick(context_class, ref, resources)

    assert first is second


def test_sensor_ticks_of_the_code_server_build_their_resources_once(
    shared_context: tuple[type, Any], tmp_path: Path
) -> None:
    context_class, _ = shared_context
    ref = _instance_ref(tmp_path)
    resources = {"counted": _Counted()}

    _, first = _tick(context_class, ref, resources)
    _, second = _tick(context_class, ref, resources)

    assert first is second and len(_Counted.builds) == 1


def test_a_sensor_context_given_an_instance_builds_its_own_resources(
    shared_context: tuple[type, Any],
) -> None:
    context_class, instance = shared_context
    resources = {"counted": _Counted()}

    for _ in range(2):
        with context_class(
            None, instance=instance, resources=resources, sensor_name="s"
        ) as context:
            assert context.resources.counted is not None

    assert len(_Counted.builds) == 2


def test_no_resource_of_the_project_has_a_teardown() -> None:
    # the code server keeps its sensors' resources built for the life of the process:
    # a resource that tears something down after each tick would need building per tick
    import bulk_changes.definitions as definitions

    def kept_as_built(resource: Any) -> bool:
        cls = getattr(resource, "resource_cls", type(resource))  # configured at launch
        return all(
            getattr(cls, name) is getattr(ConfigurableResource, name)
            for name in ("teardown_after_execution", "yield_for_execution")
        )

    resources = definitions.defs.resources or {}
    offenders = [key for key, resource in resources.items() if not kept_as_built(resource)]
    assert resources and offenders == []


def test_the_code_server_looks_for_dead_run_workers_every_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bulk_changes.dagster_private import dagster_grpc_server_module

    monkeypatch.setattr(dagster_grpc_server_module, "CLEANUP_TICK", 0.5)
    code_server.look_for_dead_run_workers_every()
    assert dagster_grpc_server_module.CLEANUP_TICK == code_server.CLEANUP_SECONDS == 5.0


@pytest.fixture
def restored_server_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    from bulk_changes.dagster_private import dagster_grpc_server_module
    from bulk_changes.sensors import long_poll

    # the patches are process-wide: undone after each test (a stop also ends this
    # process's long polls: later tests' sensors listen again)
    monkeypatch.setattr(DagsterApiServer, "cleanup", DagsterApiServer.cleanup)
    monkeypatch.setattr(dagster_grpc_server_module, "CLEANUP_TICK", 3600.0)
    monkeypatch.setattr(long_poll, "_stopping", False)


def server_with_no_run(executions: dict[str, Any]) -> DagsterApiServer:
    """A DagsterApiServer's state as it serves (its cleanup thread looking), without gRPC."""
    import contextlib

    server = object.__new__(DagsterApiServer)
    server._shutdown_once_executions_finish_event = threading.Event()
    server._server_termination_event = threading.Event()
    server._execution_lock = threading.Lock()
    server._executions = executions
    server._exit_stack = contextlib.ExitStack()
    server._DagsterApiServer__heartbeat_thread = None  # type: ignore[attr-defined]
    looking = threading.Thread(target=server._cleanup_thread, daemon=True)
    server._DagsterApiServer__cleanup_thread = looking  # type: ignore[attr-defined]
    looking.start()
    return server


def test_a_stop_with_no_run_left_ends_the_code_server_before_the_next_cleanup_look(
    restored_server_cleanup: None,
) -> None:
    # the cleanup thread's next look is an hour away: only a look made by the stop ends it
    code_server.stop_without_waiting_for_a_cleanup_tick()
    server = server_with_no_run({})
    stopping = threading.Thread(target=server.cleanup, daemon=True)
    stopping.start()
    stopping.join(30)
    assert not stopping.is_alive()
    assert server._server_termination_event.is_set()


def test_a_stop_with_a_run_worker_alive_waits_for_it(
    restored_server_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulk_changes.dagster_private import dagster_grpc_server_module

    monkeypatch.setattr(dagster_grpc_server_module, "CLEANUP_TICK", 1.0)

    class Alive:
        def is_alive(self) -> bool:
            return True

    code_server.stop_without_waiting_for_a_cleanup_tick()
    server = server_with_no_run({"a-run": (Alive(), None)})
    stopping = threading.Thread(target=server.cleanup, daemon=True)
    stopping.start()
    stopping.join(1)
    assert stopping.is_alive() and not server._server_termination_event.is_set()
    with server._execution_lock:
        server._executions.clear()  # the run worker ended and was cleared
    stopping.join(30)
    assert not stopping.is_alive()
