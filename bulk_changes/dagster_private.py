"""Every private Dagster name the project uses, in one place.

The threaded executor (``threaded_executor.py``) drives Dagster's own plan execution the
way the in-process executor does, and Dagster offers no public API for that. These names
live under ``dagster._core`` and may change in any release: the version is pinned in
``setup.py``, and ``bulk_changes_tests/unit/test_dagster_private.py`` compares each one's
signature with ``SIGNATURES`` below, so an upgrade that changes one fails a test naming it
instead of breaking a run. Nothing else in the project may import ``dagster._core``
(the same test checks).

To upgrade Dagster: bump the pin, run that test, read the changed names' new code, adapt
the executor, then update ``SIGNATURES``.
"""

from __future__ import annotations

from dagster import QueuedRunCoordinator, SensorEvaluationContext
from dagster._cli import cli as dagster_cli
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData, JobFailureData, RunFailureReason
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import (
    _trigger_hook as trigger_hook,
)
from dagster._core.execution.plan.execute_plan import (
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.base import Executor
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.remote_representation.code_location import GrpcServerCodeLocation
from dagster._core.storage import sql as dagster_storage_sql
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log.sqlite import (
    consolidated_sqlite_event_log as consolidated_sqlite_event_log_module,
)
from dagster._core.storage.event_log.sqlite import sqlite_event_log as sqlite_event_log_module
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.storage.runs.sqlite import sqlite_run_storage as sqlite_run_storage_module
from dagster._core.storage.schedules.sql_schedule_storage import SqlScheduleStorage
from dagster._core.storage.schedules.sqlite import (
    sqlite_schedule_storage as sqlite_schedule_storage_module,
)
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon import cli as dagster_daemon_cli_module
from dagster._daemon import controller as dagster_daemon_controller
from dagster._daemon.auto_run_reexecution import event_log_consumer as event_log_consumer_module
from dagster._daemon.cli import cli as dagster_daemon_cli
from dagster._daemon.daemon import IntervalDaemon, SpanMarker
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._grpc import server as dagster_grpc_server_module
from dagster._grpc import server_watcher as dagster_server_watcher
from dagster._grpc import utils as dagster_grpc_utils
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.impl import get_external_sensor_execution
from dagster._grpc.server import DagsterApiServer
from dagster._utils.error import serializable_error_info_from_exc_info

__all__ = [
    "ActiveExecution",
    "DagsterApiServer",
    "DagsterGrpcClient",
    "GrpcServerCodeLocation",
    "GrpcServerCodeLocationOrigin",
    "WorkspaceProcessContext",
    "IntervalDaemon",
    "SensorEvaluationContext",  # public; the private attributes its properties fill are used
    "QueuedRunCoordinator",  # public; its submit_run's signature is checked
    "QueuedRunCoordinatorDaemon",
    "SpanMarker",
    "SqlScheduleStorage",
    "RunsTable",
    "serializable_error_info_from_exc_info",
    "dagster_daemon_controller",
    "dagster_daemon_cli_module",
    "DagsterEvent",
    "DagsterExecutionInterruptedError",
    "EngineEventData",
    "ExecuteRunWithPlanIterable",
    "ExecutionPlan",
    "Executor",
    "InstanceConcurrencyContext",
    "JobFailureData",
    "PlanExecutionContext",
    "PlanExecutionContextManager",
    "PlanOrchestrationContext",
    "RetryMode",
    "RunFailureReason",
    "create_compute_log_file_key",
    "CapturedLogContext",
    "ComputeIOType",
    "IO_TYPE_EXTENSION",
    "LocalComputeLogManager",
    "dagster_cli",
    "dagster_daemon_cli",
    "dagster_server_watcher",
    "dagster_grpc_utils",
    "dagster_grpc_server_module",
    "event_log_consumer_module",
    "get_external_sensor_execution",
    "dagster_event_sequence_for_step",
    "dagster_storage_sql",
    "sqlite_run_storage_module",
    "sqlite_schedule_storage_module",
    "sqlite_event_log_module",
    "consolidated_sqlite_event_log_module",
    "get_retries_config",
    "trigger_hook",
]

# The callables the executor calls, with the parameters they had in the pinned version
# (dagster 1.13.27). ``trigger_hook`` is private even inside Dagster (``_trigger_hook``):
# the in-process executor calls it the same way after each step, to run the job's hooks.
SIGNATURES: dict[str, list[str]] = {
    "dagster_event_sequence_for_step": ["step_context", "force_local_execution"],
    "trigger_hook": ["step_context", "step_event_list"],
    "create_compute_log_file_key": [],
    # bulk_changes.compute_log_files: the local manager's paths, and the context it yields
    "LocalComputeLogManager.get_captured_local_path": ["self", "log_key", "extension", "partial"],
    "LocalComputeLogManager.complete_artifact_path": ["self", "log_key"],
    "CapturedLogContext.__new__": [
        "cls",
        "log_key",
        "external_stdout_url",
        "external_stderr_url",
        "external_url",
        "shell_cmd",
    ],
    "ExecuteRunWithPlanIterable.__init__": [
        "self",
        "execution_plan",
        "iterator",
        "execution_context_manager",
    ],
    "PlanExecutionContextManager.__init__": [
        "self",
        "job",
        "execution_plan",
        "run_config",
        "dagster_run",
        "instance",
        "retry_mode",
        "scoped_resources_builder_cm",
        "raise_on_error",
        "output_capture",
        "step_dependency_config",
    ],
    "InstanceConcurrencyContext.__init__": ["self", "instance", "dagster_run"],
    "ExecutionPlan.start": [
        "self",
        "retry_mode",
        "sort_key_fn",
        "max_concurrent",
        "tag_concurrency_limits",
        "instance_concurrency_context",
        "step_dependency_config",
    ],
    "ActiveExecution.check_for_interrupts": ["self"],
    "ActiveExecution.mark_interrupted": ["self"],
    "ActiveExecution.get_steps_to_execute": ["self", "limit"],
    "ActiveExecution.concurrency_event_iterator": ["self", "plan_context"],
    "ActiveExecution.get_known_state": ["self"],
    "ActiveExecution.verify_complete": ["self", "job_context", "step_key"],
    "ActiveExecution.plan_events_iterator": ["self", "job_context"],
    "ActiveExecution.handle_event": ["self", "dagster_event"],
    "ActiveExecution.sleep_interval": ["self"],
    "PlanExecutionContext.for_step": ["self", "step", "known_state"],
    "DagsterEvent.capture_logs": ["job_context", "step_keys", "log_key", "log_context"],
    "DagsterEvent.engine_event": ["plan_context", "message", "event_specific_data"],
    "EngineEventData.in_process": ["pid", "step_keys_to_execute"],
    "RetryMode.from_config": ["config_value"],
    "get_retries_config": [],
    # the dead run worker sensor reports a run failure as Dagster's run monitoring does
    "JobFailureData.__new__": ["cls", "error", "failure_reason", "first_step_failure_event"],
    # bulk_changes.run_queue: the daemon's run queue, a subclass of Dagster's that looks
    # for one queued run first and sleeps until woken (it replaces IntervalDaemon.core_loop)
    "QueuedRunCoordinatorDaemon.__init__": ["self", "interval_seconds", "page_size"],
    "QueuedRunCoordinatorDaemon.run_iteration": [
        "self",
        "workspace_process_context",
        "fixed_iteration_time",
    ],
    "IntervalDaemon.core_loop": ["self", "workspace_process_context", "shutdown_event"],
    # bulk_changes.interval_loops reads the attributes __init__ sets from these
    "IntervalDaemon.__init__": [
        "self",
        "interval_seconds",
        "interval_jitter_seconds",
        "startup_jitter_seconds",
    ],
    "QueuedRunCoordinator.submit_run": ["self", "context"],
    "serializable_error_info_from_exc_info": ["exc_info", "hoist_user_code_error"],
    "dagster_daemon_controller.create_daemon_of_type": ["daemon_type", "instance"],
    # bulk_changes.daemon gives the daemon's PostgreSQL storage kept connections when the
    # `dagster-daemon run` command makes its controller from the instance
    "dagster_daemon_cli_module.daemon_controller_from_instance": [
        "instance",
        "workspace_load_target",
        "heartbeat_interval_seconds",
        "heartbeat_tolerance_seconds",
        "gen_daemons",
        "error_interval_seconds",
        "code_server_log_level",
        "log_level",
        "log_format",
    ],
    # bulk_changes.schema_checks: the schedule storage's schema checks, remembered once yes
    "SqlScheduleStorage.has_instigators_table": ["self"],
    "SqlScheduleStorage.has_secondary_index_table": ["self"],
    "SqlScheduleStorage.has_built_index": ["self", "migration_name"],
    # bulk_changes.daemon: the daemon's minutely workspace refresh reloads a long-lived
    # code server's location only when its server id changed (test_dagster_private reads
    # the controller's call and the client's call)
    "WorkspaceProcessContext.refresh_workspace": ["self"],
    "WorkspaceProcessContext.get_current_workspace": ["self"],
    # bulk_changes.daemon: run retries' event log consumer writes its cursors only when
    # they changed (run_iteration calls the module's function: test_dagster_private)
    "event_log_consumer_module._persist_cursors": ["instance", "cursors"],
    # bulk_changes.daemon: on SQLite storage its look runs only when the event index changed
    "event_log_consumer_module.EventLogConsumerDaemon.run_iteration": [
        "self",
        "workspace_process_context",
    ],
    # bulk_changes.daemon: the daemon's gRPC client keeps one channel per code server
    # (every call goes through _channel: test_dagster_private reads the callers)
    "DagsterGrpcClient._channel": ["self"],
    "dagster_grpc_utils.max_rx_bytes": [],
    "dagster_grpc_utils.max_send_bytes": [],
    # bench.sensor_ticks calls a sensor as the code server does for a tick
    "get_external_sensor_execution": [
        "repo_def",
        "code_location_origin",
        "instance_ref",
        "sensor_name",
        "last_tick_completion_timestamp",
        "last_run_key",
        "cursor",
        "log_key",
        "last_sensor_start_timestamp",
    ],
}

# Attributes read, not called (properties and enum members).
ATTRIBUTES: list[str] = [
    "ActiveExecution.is_complete",
    "RunFailureReason.UNEXPECTED_TERMINATION",
    # what the executor hands on to PlanExecutionContextManager
    "PlanOrchestrationContext.execution_plan",
    "PlanOrchestrationContext.job",
    "PlanOrchestrationContext.retry_mode",
    "PlanOrchestrationContext.run_config",
    "PlanOrchestrationContext.dagster_run",
    "PlanOrchestrationContext.instance",
    "PlanOrchestrationContext.raise_on_error",
    "PlanOrchestrationContext.output_capture",
    # bulk_changes.code_server: the code server starts each run worker with
    # ``self._mp_ctx`` (set in __init__; test_dagster_private reads StartRun for it)
    "DagsterApiServer.StartRun",
    # bulk_changes.code_server reads the migration scripts once: check_alembic_revision
    # finds them through this module's ScriptDirectory
    "dagster_storage_sql.ScriptDirectory",
    "dagster_storage_sql.check_alembic_revision",
    "dagster_storage_sql.get_alembic_config",
    "sqlite_run_storage_module.SqliteRunStorage",  # (and its _conn_string: bulk_changes.run_queue)
    # bulk_changes.sqlite_engines: the SQLite storages make their engines with the
    # create_engine each of these modules imported (replaced by one that keeps them)
    "sqlite_run_storage_module.create_engine",
    "sqlite_schedule_storage_module.create_engine",
    "sqlite_event_log_module.create_engine",
    "consolidated_sqlite_event_log_module.create_engine",
    # bulk_changes.daemon: the file run status events are mirrored into (run retries read it)
    "sqlite_event_log_module.SqliteEventLogStorage",
    "sqlite_event_log_module.INDEX_SHARD_NAME",
    "consolidated_sqlite_event_log_module.ConsolidatedSqliteEventLogStorage",
    # bulk_changes.daemon runs `dagster-daemon`, watching code servers less often (the
    # module's WATCH_INTERVAL is read when a watch thread starts)
    "dagster_daemon_cli.main",
    "dagster_server_watcher.WATCH_INTERVAL",
    # bulk_changes.run_queue: the daemon controller makes its run queue from this name
    # (replaced by QuietRunQueueDaemon), the loop yields these span markers, and each run
    # submitted in the daemon goes through instance.run_coordinator.submit_run
    "dagster_daemon_controller.QueuedRunCoordinatorDaemon",
    "SpanMarker.START_SPAN",
    # bulk_changes.run_queue looks for a queued run on PostgreSQL with its own connection
    # (its columns: test_dagster_private)
    "RunsTable.name",
    "SpanMarker.END_SPAN",
    # bulk_changes.code_server gives every sensor tick of the code server one instance and
    # one set of built resources: it fills the context's ``_instance`` and ``_resources``
    # (read from ``_instance_ref`` and ``_resource_defs``) before these properties run
    # (their code: test_dagster_private)
    "SensorEvaluationContext.instance",
    "SensorEvaluationContext.resources",
    # bulk_changes.daemon (the workspace refresh): the origins the workspace file names,
    # and a loaded location's server id and gRPC client (``client``, set in __init__)
    "WorkspaceProcessContext._origins",
    "GrpcServerCodeLocation.server_id",
    "GrpcServerCodeLocationOrigin.location_name",
    "dagster_daemon_controller.RELOAD_WORKSPACE_INTERVAL",
    # bulk_changes.code_server: how often the code server looks for run workers that died
    # (read by its cleanup thread at each wait: test_dagster_private)
    "dagster_grpc_server_module.CLEANUP_TICK",
    # bulk_changes.code_server: a stop looks for run workers left at once (what cleanup
    # and the look do with the server's events: test_dagster_private)
    "DagsterApiServer.cleanup",
    "DagsterApiServer._check_for_orphaned_runs",
    # bulk_changes.compute_log_files: the local manager's streams and their file extensions
    "ComputeIOType.STDOUT",
    "ComputeIOType.STDERR",
    "IO_TYPE_EXTENSION",
]
