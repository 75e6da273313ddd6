"""A bulk change whose run was terminated where no device thread saw the stop (a queued run
cancelled, a run stopped while loading or finishing): made CANCELLED here, so it never
stays NEW or PROCESSING with nothing to finish it. A stop seen by the devices is recorded
by the run itself (ops/process.py); this changes nothing then."""

from __future__ import annotations

from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    run_status_sensor,
)

from bulk_changes.processing.stopping import OPERATOR_STOP_REASON
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.run_tags import TAG_BULK_CHANGE_ID, outcome_tags

ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def cancel_after_stopped_run(context: Any, amop_db: AmopDatabase) -> str:
    """-> what was done, for the tick's log."""
    run = context.dagster_run
    bulk_change_id = run.tags.get(TAG_BULK_CHANGE_ID)
    if not bulk_change_id:
        return f"run {run.run_id}: no bulk change"
    others = context.instance.get_runs(
        filters=RunsFilter(tags={TAG_BULK_CHANGE_ID: bulk_change_id}, statuses=ACTIVE), limit=1
    )
    if others:
        # another run is finishing it (a re-execution launched since): it is not stopped
        return f"bulk change {bulk_change_id}: run {others[0].run_id} is still active"
    changed, counts = amop_db.repository().cancel_bulk_change(
        int(bulk_change_id), OPERATOR_STOP_REASON, run.run_id
    )
    if not changed:
        return f"bulk change {bulk_change_id}: already final"
    context.instance.add_run_tags(run.run_id, outcome_tags("CANCELLED", counts))
    return f"bulk change {bulk_change_id} CANCELLED after run {run.run_id} was stopped: {counts}"


def build_stopped_run_sensor(
    jobs: list[JobDefinition], minimum_interval_seconds: int, default_status: DefaultSensorStatus
) -> SensorDefinition:
    @run_status_sensor(
        run_status=DagsterRunStatus.CANCELED,
        name="stopped_bulk_change_sensor",
        monitored_jobs=jobs,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="A terminated run's bulk change ends CANCELLED, whatever step it was in.",
    )
    def stopped_bulk_change_sensor(context: RunStatusSensorContext, amop_db: AmopDatabase) -> None:
        context.log.info(cancel_after_stopped_run(context, amop_db))

    return stopped_bulk_change_sensor
