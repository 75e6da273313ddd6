"""stopped_bulk_change_sensor: a run terminated before any device saw the stop (here: a
queued run cancelled) leaves its bulk change CANCELLED. A real (ephemeral) Dagster
instance and run, a real SQLite AMOP database."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    build_run_status_sensor_context,
)

from bulk_changes.jobs import process_bulk_change
from bulk_changes.partitions import run_config_for
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.run_tags import TAG_BULK_CHANGE_ID
from bulk_changes.sensors.stopped_runs import cancel_after_stopped_run
from bulk_changes_tests.conftest import inventory, submit


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def bulk_id(repo, settings):
    rows = inventory(2, "jasper")
    repo.upsert_devices("acme", rows)
    return submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
    ).id


def new_run(instance, bulk_id):
    return instance.create_run_for_job(
        job_def=process_bulk_change,
        run_config=run_config_for(bulk_id),
        tags={TAG_BULK_CHANGE_ID: str(bulk_id)},
    )


def cancelled_context(instance, run):
    instance.report_run_canceled(run)
    [record] = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_CANCELED
    ).records
    return build_run_status_sensor_context(
        sensor_name="stopped_bulk_change_sensor",
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
    )


def test_a_cancelled_queued_run_leaves_its_bulk_change_cancelled(repo, db_url, instance, bulk_id):
    context = cancelled_context(instance, new_run(instance, bulk_id))
    cancel_after_stopped_run(context, AmopDatabase(url=db_url))
    assert repo.get_bulk_change(bulk_id).status == "CANCELLED"
    assert repo.counts(bulk_id) == {"CANCELLED": 2}
    run = instance.get_run_by_id(context.dagster_run.run_id)
    assert run.status == DagsterRunStatus.CANCELED
    assert run.tags["bulk_changes/outcome"] == "cancelled"


def test_a_bulk_change_with_another_active_run_is_left_to_it(repo, db_url, instance, bulk_id):
    context = cancelled_context(instance, new_run(instance, bulk_id))
    new_run(instance, bulk_id)  # a re-execution launched since (NOT_STARTED)
    cancel_after_stopped_run(context, AmopDatabase(url=db_url))
    assert repo.get_bulk_change(bulk_id).status == "NEW"
