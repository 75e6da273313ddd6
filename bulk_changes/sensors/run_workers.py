"""Runs whose worker died, on the default run launcher.

Dagster's run monitoring asks the run launcher whether a run's worker is alive. The ECS
and Kubernetes launchers can tell (the task or pod stopped); the DefaultRunLauncher cannot:
a run worker killed outright (``kill -9``, the OOM killer) leaves its run STARTED for good,
holding its run slot, its pool slots and its account's in-flight slot until a lease ends.

So each run worker records itself on its run, in the tag ``bulk_changes/run_worker``: host,
pid, the process's start time (so a pid used again by another process is not mistaken for
it) and the boot id. ``dead_run_worker_sensor`` looks at the STARTED runs every few
seconds; a run whose recorded worker is gone from this host is marked failed
(``report_run_failed``) with a message saying so, its Dagster pool slots and its account
in-flight slots are given back at once, and, when the instance's ``run_retries`` say so,
Dagster re-executes it from failure (succeeded steps skipped; the AMOP database makes the
failed step continue where it stopped).

Safety: a worker is judged only by a sensor on its own host and boot, only when the pid
is also the one Dagster itself recorded for the run's steps ("Executing steps in process
(pid: N)"), and the run's status is read again just before it is marked. With a launcher
that checks run workers itself the sensor stands aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from bulk_changes.run_worker_record import RUN_WORKER_TAG, WorkerProcess, dagster_step_pids

SENSOR_NAME = "dead_run_worker_sensor"


# -- the sensor --------------------------------------------------------------------------------


@dataclass
class DeadRun:
    run_id: str
    worker: WorkerProcess
    message: str


def find_dead_runs(instance: Any) -> tuple[int, list[DeadRun]]:
    """(STARTED runs looked at, those whose worker is gone from this host)."""
    runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    dead: list[DeadRun] = []
    for run in runs:
        worker = WorkerProcess.parse(run.tags.get(RUN_WORKER_TAG))
        # a tag copied from the parent of a re-execution names the parent's worker
        if worker is None or worker.run_id != run.run_id or worker.gone() is not True:
            continue
        if worker.pid not in dagster_step_pids(instance, run.run_id):
            continue  # not the process Dagster runs the steps in: no verdict
        dead.append(DeadRun(run.run_id, worker, _message(instance, worker)))
    return len(runs), dead


def _message(instance: Any, worker: WorkerProcess) -> str:
    retries = bool(getattr(instance, "run_retries_enabled", False)) and (
        int(getattr(instance, "run_retries_max_retries", 0) or 0) > 0
    )
    then = (
        "run retries will re-execute it from failure"
        if retries
        else "re-execute it from failure to continue it"
    )
    return (
        f"Run worker process {worker.pid} on {worker.host} is gone: it was killed or crashed "
        f"without reporting an end (found by {SENSOR_NAME}). Marked failed; {then} "
        "(steps that succeeded are not repeated; devices continue where they stopped)."
    )


def mark_failed(instance: Any, dead: DeadRun, amop_db: Any = None, log: Any = None) -> bool:
    """Mark the run failed if it is still STARTED; give back its pool and account slots."""
    from bulk_changes.dagster_private import JobFailureData, RunFailureReason

    run = instance.get_run_by_id(dead.run_id)
    if run is None or run.status != DagsterRunStatus.STARTED:
        return False  # it ended meanwhile (its worker reported the end just in time)
    instance.report_run_failed(
        run,
        dead.message,
        job_failure_data=JobFailureData(
            error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION
        ),
    )
    try:
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
    except Exception as exc:  # run monitoring frees them later (free_slots_after_run_end)
        if log is not None:
            log.warning(f"run {dead.run_id}: pool slots not freed now: {exc!r}")
    if amop_db is not None:
        from bulk_changes.db.limiter import release_slots_of_process

        try:
            freed = release_slots_of_process(amop_db.engine(), dead.worker.host, dead.worker.pid)
        except Exception as exc:  # their lease ends them anyway
            if log is not None:
                log.warning(f"run {dead.run_id}: account slots not freed now: {exc!r}")
        else:
            if freed and log is not None:
                log.info(f"run {dead.run_id}: {freed} account in-flight slot(s) given back")
    return True


def _release_dead_holders(amop_db: Any, log: Any) -> int:
    from bulk_changes.db.limiter import release_dead_holders

    try:
        return release_dead_holders(amop_db.engine())
    except Exception as exc:  # their lease ends them anyway
        log.warning(f"account slots of dead processes not checked: {exc!r}")
        return 0


def build_dead_run_worker_sensor(
    minimum_interval_seconds: int = 15,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    *,
    name: str = SENSOR_NAME,
) -> SensorDefinition:
    """Marks failed the STARTED runs whose worker process is gone (default launcher)."""

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={"amop_db"},
        description=(
            "Default run launcher only: marks failed a STARTED run whose worker process is "
            "gone from this host (killed, crashed), so run retries or an operator can "
            "re-execute it from failure."
        ),
    )
    def dead_run_worker_sensor(context: SensorEvaluationContext, **_: Any) -> SkipReason:
        instance = context.instance
        launcher = instance.run_launcher
        if getattr(launcher, "supports_check_run_worker_health", False):
            return SkipReason(
                f"{type(launcher).__name__} checks run workers itself (run monitoring)"
            )
        looked_at, dead = find_dead_runs(instance)
        marked = [
            d.run_id
            for d in dead
            if mark_failed(instance, d, context.resources.amop_db, context.log)
        ]
        for run_id in marked:
            context.log.warning(f"run {run_id}: worker gone, marked failed")
        # Whatever its run's status (the code server may have marked it failed already):
        # a dead process's account slots come back now, not when their lease ends.
        freed = _release_dead_holders(context.resources.amop_db, context.log)
        return SkipReason(
            f"{looked_at} started run(s) looked at; "
            + (f"marked failed (worker gone): {', '.join(marked)}" if marked else "all alive")
            + (f"; {freed} account slot(s) of dead processes given back" if freed else "")
        )

    return dead_run_worker_sensor
