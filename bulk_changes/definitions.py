"""Dagster definitions: the job, the queue sensor, and the resources of the environment."""

from __future__ import annotations

from dagster import DefaultSensorStatus, Definitions

from bulk_changes.assets import audit_spec, no_failed_devices, results_spec
from bulk_changes.environments import dagster_resources, env_or
from bulk_changes.jobs import process_bulk_change
from bulk_changes.resources.step_outputs import StepOutputStore
from bulk_changes.sensors.notifications import build_run_failure_sensor, build_sweep_sensor
from bulk_changes.sensors.run_workers import build_dead_run_worker_sensor
from bulk_changes.sensors.sqs_sensor import build_queue_sensor
from bulk_changes.sensors.stopped_runs import build_stopped_run_sensor

queue_sensor = build_queue_sensor(
    process_bulk_change,
    minimum_interval_seconds=int(env_or("BULK_CHANGES_SENSOR_INTERVAL", "5")),
    # each tick listens on the queue for most of four of the daemon's 5-second sensor loops
    # (it is evaluated again at the loop after it ends): a message starts its run at once,
    # and the daemon and code server evaluate it 3 times a minute, not 12
    long_poll_seconds=float(env_or("BULK_CHANGES_SENSOR_LONG_POLL", "18.5")),
    default_status=(
        DefaultSensorStatus.RUNNING
        if env_or("BULK_CHANGES_SENSOR_DEFAULT", "running") == "running"
        else DefaultSensorStatus.STOPPED
    ),
)

_notify_status = (
    DefaultSensorStatus.RUNNING
    if env_or("BULK_CHANGES_NOTIFY_SENSORS", "running") == "running"
    else DefaultSensorStatus.STOPPED
)
# Every tick of a sensor costs the daemon and the code server tens of milliseconds of CPU
# (Dagster builds an instance and the resources, and records the tick) whether or not there
# is anything to do: the sensors that only look after ended runs look every 30 seconds.
_notify_interval = int(env_or("BULK_CHANGES_NOTIFY_INTERVAL", "30"))
notification_sweep = build_sweep_sensor(_notify_interval, _notify_status)
run_failure_alerts = build_run_failure_sensor(
    [process_bulk_change], _notify_interval, _notify_status
)

# Default run launcher: a run whose worker process died is marked failed (docs/production.md).
dead_run_workers = build_dead_run_worker_sensor(
    minimum_interval_seconds=int(env_or("BULK_CHANGES_RUN_WORKER_CHECK_INTERVAL", "15"))
)

stopped_bulk_changes = build_stopped_run_sensor(
    [process_bulk_change], _notify_interval, _notify_status
)

defs = Definitions(
    assets=[results_spec, audit_spec],
    asset_checks=[no_failed_devices],
    jobs=[process_bulk_change],
    sensors=[
        queue_sensor,
        notification_sweep,
        run_failure_alerts,
        stopped_bulk_changes,
        dead_run_workers,
    ],
    resources={
        **dagster_resources(),
        "io_manager": StepOutputStore(),
    },
)


def process_bulk_change_job():
    """The job with this environment's resources, for ``reconstructable`` (re-execution
    from Python, e.g. after a run worker died)."""
    return defs.resolve_job_def("process_bulk_change")
