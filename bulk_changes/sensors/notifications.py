"""Sensors of notifications: the outbox sweep, and the alert when a run fails.

The sweep delivers, inside the daemon, whatever the runs' own ``deliver_notifications``
left: events of runs still going (so receivers learn of device results while the bulk
change runs), retries on the back-off schedule, deliveries of runs that died. Each tick is
bounded by a time budget well under the sensor's timeout; no run is launched for it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from bulk_changes.domain.notifications import ALERT_RUN_FAILURE, redact_urls
from bulk_changes.notify.dispatcher import Dispatcher
from bulk_changes.resources.notifier import Notifier

SWEEP_SENSOR = "notifications_sweep_sensor"
RUN_FAILURE_SENSOR = "run_failure_alert_sensor"


def build_sweep_sensor(
    minimum_interval_seconds: int = 10,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    @sensor(
        name=SWEEP_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Delivers the notification outbox: new events, retries on the back-off schedule "
            "(24 hours, then failed), deliveries a run left."
        ),
    )
    def notifications_sweep_sensor(
        context: SensorEvaluationContext, notifier: Notifier
    ) -> SkipReason:
        dispatcher = notifier.dispatcher(
            holder=f"sensor:{SWEEP_SENSOR}:{uuid.uuid4().hex[:12]}", log=context.log
        )
        budget = notifier.notifications.sensor_budget_seconds
        report = dispatcher.deliver(None, budget_seconds=budget)
        return SkipReason(f"notifications: {report.summary()}")

    return notifications_sweep_sensor


def run_failure_data(context: RunFailureSensorContext, dispatcher: Dispatcher) -> dict[str, Any]:
    run = context.dagster_run
    errors = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        error = data.error if data else None
        while error is not None and error.cause is not None:
            error = error.cause  # the exception the op raised, not Dagster's wrapper
        message = error.message.strip() if error is not None else event.message
        errors.append(f"{event.step_key}: {message}")
    text = "\n".join(errors) or (context.failure_event.message or "the run failed")
    bulk_id = run.tags.get("bulk_changes/bulk_change_id")
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "bulk_change_id": int(bulk_id) if bulk_id and bulk_id.isdigit() else None,
        "tenant": run.tags.get("bulk_changes/tenant"),
        "failed_at": _iso(_end_time(context)),
        "error": redact_urls(dispatcher.redact(text[:4000])),
    }


def build_run_failure_sensor(
    jobs: list[JobDefinition],
    minimum_interval_seconds: int = 10,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        monitored_jobs=jobs,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Mails the operators when a run fails, with a link to the run.",
    )
    def run_failure_alert_sensor(context: RunFailureSensorContext, notifier: Notifier) -> None:
        dispatcher = notifier.dispatcher(
            holder=f"sensor:{RUN_FAILURE_SENSOR}:{uuid.uuid4().hex[:12]}", log=context.log
        )
        data = run_failure_data(context, dispatcher)
        # once per run, however often the sensor sees the failure
        written = dispatcher.outbox.add_alert(
            ALERT_RUN_FAILURE, data, dedupe_key=f"run_failure:{data['run_id']}"
        )
        context.log.info(
            f"run {data['run_id']} failed: alert " + ("written" if written else "already written")
        )
        budget = min(10.0, notifier.notifications.sensor_budget_seconds)
        dispatcher.deliver(None, budget_seconds=budget)

    return run_failure_alert_sensor


def _end_time(context: RunFailureSensorContext) -> float:
    record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
    end = getattr(record, "end_time", None) if record else None
    return float(end) if end else time.time()


def _iso(timestamp: Any) -> str | None:
    from datetime import UTC, datetime

    if timestamp is None:
        return None
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat()
