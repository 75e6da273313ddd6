"""Operations: what keeps runs and bulk changes consistent when a run stops unexpectedly."""

from __future__ import annotations

from dagster import Definitions

from bulk_changes.defs.settings import NOTIFY_INTERVAL, NOTIFY_STATUS, RUN_WORKER_CHECK_INTERVAL
from bulk_changes.jobs import process_bulk_change
from bulk_changes.sensors.run_workers import build_dead_run_worker_sensor
from bulk_changes.sensors.stopped_runs import build_stopped_run_sensor

# Default run launcher: a run whose worker process died is marked failed (docs/production.md).
dead_run_workers = build_dead_run_worker_sensor(minimum_interval_seconds=RUN_WORKER_CHECK_INTERVAL)

stopped_bulk_changes = build_stopped_run_sensor(
    [process_bulk_change], NOTIFY_INTERVAL, NOTIFY_STATUS
)

defs = Definitions(sensors=[dead_run_workers, stopped_bulk_changes])
