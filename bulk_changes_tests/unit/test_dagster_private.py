"""The private Dagster names the threaded executor relies on are all in one module, and an
upgrade that changes one of them fails here, naming it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import bulk_changes
from bulk_changes import dagster_private

PACKAGE = Path(bulk_changes.__file__).parent


def _resolve(dotted: str) -> object:
    obj: object = dagster_private
    for part in dotted.split("."):
        obj = (
            inspect.getattr_static(obj, part) if obj is not dagster_private else getattr(obj, part)
        )
    return obj


@pytest.mark.parametrize("name", sorted(dagster_private.SIGNATURES))
def test_private_callable_keeps_its_signature(name: str) -> None:
    target = _resolve(name)
    if isinstance(target, (classmethod, staticmethod)):
        target = target.__func__
    assert list(inspect.signature(target).parameters) == dagster_private.SIGNATURES[name], (
        f"dagster changed {name}: read its new code and adapt threaded_executor.py"
    )


@pytest.mark.parametrize("name", dagster_private.ATTRIBUTES)
def test_private_attribute_still_exists(name: str) -> None:
    _resolve(name)  # raises AttributeError, naming it, when an upgrade removed it


def test_every_private_name_exported_is_checked() -> None:
    checked = {n.split(".")[0] for n in [*dagster_private.SIGNATURES, *dagster_private.ATTRIBUTES]}
    # dagster_cli: the `dagster` command itself (bulk_changes.code_server runs `api grpc`)
    exceptions = {"DagsterExecutionInterruptedError", "Executor", "ExecutionPlan", "dagster_cli"}
    unchecked = set(dagster_private.__all__) - checked - exceptions
    assert not unchecked, f"private names used but not checked: {sorted(unchecked)}"


def test_code_server_starts_run_workers_from_its_multiprocessing_context() -> None:
    # bulk_changes.code_server replaces ``_mp_ctx`` to fork run workers from a preloaded
    # process: an upgrade that starts them some other way would silently undo that
    start_run = inspect.getsource(dagster_private.DagsterApiServer.StartRun)
    assert "self._mp_ctx.Process(" in start_run
    init = inspect.getsource(dagster_private.DagsterApiServer.__init__)
    assert "self._mp_ctx = " in init


def test_storage_checks_its_revision_through_the_module_script_directory() -> None:
    # bulk_changes.code_server replaces the module's ScriptDirectory with one that reads
    # the migration scripts once
    check = inspect.getsource(dagster_private.dagster_storage_sql.check_alembic_revision)
    assert "ScriptDirectory.from_config(" in check


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
            found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dagster._")]
    return found


def test_no_other_module_imports_dagster_internals() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): modules
        for path in PACKAGE.rglob("*.py")
        if path.name != "dagster_private.py" and (modules := _private_imports(path))
    }
    assert offenders == {}


def test_a_code_server_watch_reads_the_module_watch_interval_when_it_starts() -> None:
    # bulk_changes.daemon sets the module's WATCH_INTERVAL: an upgrade that binds it
    # elsewhere would silently watch every second again
    source = inspect.getsource(dagster_private.dagster_server_watcher)
    assert '"watch_interval", WATCH_INTERVAL)' in source


def test_sqlite_storages_make_their_engines_with_their_modules_create_engine() -> None:
    # bulk_changes.sqlite_engines replaces each module's create_engine
    for module, storage in (
        (dagster_private.sqlite_run_storage_module, "SqliteRunStorage"),
        (dagster_private.sqlite_schedule_storage_module, "SqliteScheduleStorage"),
        (dagster_private.sqlite_event_log_module, "SqliteEventLogStorage"),
    ):
        assert "create_engine(" in inspect.getsource(getattr(module, storage))


def test_sqlite_run_storage_keeps_its_connection_string() -> None:
    # bulk_changes.run_queue finds the runs database's file from it (without it the run
    # queue queries at every look: slower, not wrong)
    init = inspect.getsource(dagster_private.sqlite_run_storage_module.SqliteRunStorage.__init__)
    assert "self._conn_string = conn_string" in init


def test_the_daemon_controller_makes_its_run_queue_from_the_module_name() -> None:
    # bulk_changes.run_queue replaces the name to make the daemon start its subclass
    made = inspect.getsource(dagster_private.dagster_daemon_controller.create_daemon_of_type)
    assert "return QueuedRunCoordinatorDaemon(" in made


def test_the_runs_table_has_the_columns_the_run_queue_reads() -> None:
    # bulk_changes.run_queue looks for a queued run with its own connection on PostgreSQL
    columns = dagster_private.RunsTable.c
    assert {"run_id", "status"} <= set(columns.keys())


def test_sensor_context_properties_use_what_the_code_server_fills() -> None:
    # bulk_changes.code_server fills ``_instance`` and ``_resources`` (from ``_instance_ref``
    # and ``_resource_defs``) and then lets these properties answer: they must still build
    # only what is not there
    context = dagster_private.SensorEvaluationContext
    instance = inspect.getsource(context.instance.fget)
    assert "if not self._instance:" in instance and "self._instance_ref" in instance
    resources = inspect.getsource(context.resources.fget)
    assert "if not self._resources:" in resources and "self._resource_defs" in resources


def test_the_daemon_controller_refreshes_its_workspace_through_the_method() -> None:
    # bulk_changes.daemon replaces WorkspaceProcessContext.refresh_workspace, which the
    # controller calls every minute; it reads a loaded location's gRPC ``client``
    freshness = inspect.getsource(
        dagster_private.dagster_daemon_controller.DagsterDaemonController.check_workspace_freshness
    )
    assert "self._workspace_process_context.refresh_workspace()" in freshness
    init = inspect.getsource(dagster_private.GrpcServerCodeLocation.__init__)
    assert "self.client = DagsterGrpcClient(" in init


def test_the_code_servers_cleanup_thread_reads_the_module_tick_at_each_wait() -> None:
    # bulk_changes.code_server sets the module's CLEANUP_TICK
    cleanup = inspect.getsource(dagster_private.DagsterApiServer._cleanup_thread)
    assert "self._server_termination_event.wait(CLEANUP_TICK)" in cleanup


def test_a_code_server_stop_ends_once_a_look_finds_no_run_left() -> None:
    # bulk_changes.code_server looks at once when the server stops: the look ends the
    # server when it is stopping and no run is left; cleanup joins the thread that looks
    cleanup = inspect.getsource(dagster_private.DagsterApiServer.cleanup)
    assert "self._shutdown_once_executions_finish_event.set()" in cleanup
    assert "self.__cleanup_thread.join()" in cleanup
    look = inspect.getsource(dagster_private.DagsterApiServer._check_for_orphaned_runs)
    assert "if self._shutdown_once_executions_finish_event.is_set():" in look
    assert "self._server_termination_event.set()" in look


def test_run_retries_persist_their_cursors_through_the_module_function() -> None:
    # bulk_changes.daemon replaces the module's _persist_cursors
    module = dagster_private.event_log_consumer_module
    iteration = inspect.getsource(module.EventLogConsumerDaemon.run_iteration)
    assert "_persist_cursors(instance, new_cursors)" in iteration


def test_the_grpc_client_makes_every_call_on_its_channel_with_dagsters_options() -> None:
    # bulk_changes.daemon replaces DagsterGrpcClient._channel with one that yields a kept
    # channel made with the same options: every synchronous call must go through it
    client = dagster_private.DagsterGrpcClient
    for method in (client._get_response, client._get_streaming_response):
        assert "with self._channel() as channel:" in inspect.getsource(method)
    channel = inspect.getsource(client._channel)
    for option in (
        '("grpc.max_receive_message_length", max_rx_bytes())',
        '("grpc.max_send_message_length", max_send_bytes())',
        "compression=grpc.Compression.Gzip",
    ):
        assert option in channel
    # the two options, the two kinds of channel, two compressions, its type: nothing new
    assert channel.count("grpc.") == 7, "Dagster's channel changed: keep what it adds"
