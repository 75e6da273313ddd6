"""What a run of process_bulk_change tells Dagster about its bulk change: tags, outcome,
asset materializations and the check, permanent failures. Fakes of our API resources, a
real SQLite AMOP database and a real (ephemeral) Dagster instance."""

from __future__ import annotations

import csv
import time

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    EventRecordsFilter,
)

from bulk_changes.domain.errors import Rejected, ServerError
from bulk_changes.domain.results import vendor_code
from bulk_changes.jobs import process_bulk_change
from bulk_changes.partitions import BULK_CHANGES_PARTITIONS
from bulk_changes_tests.conftest import inventory, submit
from bulk_changes_tests.fakes import fake_systems
from bulk_changes_tests.unit.test_ops import resources, run_config


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setenv("BULK_CHANGES_RESULTS_DIR", str(folder))
    return folder


def status_change(repo, settings, n=3, extra=()):
    rows = inventory(n, "jasper")
    repo.upsert_devices("acme", rows)
    requests = [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows] + list(extra)
    return rows, submit(repo, settings, "device_status", "jasper", requests)


def run(instance, db_url, fake_key, bulk_id, **kw):
    return process_bulk_change.execute_in_process(
        run_config=run_config(bulk_id),
        resources=resources(db_url, fake_key),
        instance=instance,
        raise_on_error=False,
        **kw,
    )


def tags_of(instance, result):
    return instance.get_run_by_id(result.run_id).tags


def test_a_run_launched_without_tags_tags_itself_with_its_bulk_change(
    repo, settings, db_url, fake_key, instance
):
    _, bulk = status_change(repo, settings)
    tags = tags_of(instance, run(instance, db_url, fake_key, bulk.id))
    assert {
        "bulk_changes/tenant": "acme",
        "bulk_changes/bulk_change_id": str(bulk.id),
        "bulk_changes/change_type": "device_status",
        "bulk_changes/integration": "jasper",
    }.items() <= tags.items()


def test_outcome_tag_of_a_clean_bulk_change_is_ok(repo, settings, db_url, fake_key, instance):
    _, bulk = status_change(repo, settings)
    tags = tags_of(instance, run(instance, db_url, fake_key, bulk.id))
    assert (tags["bulk_changes/outcome"], tags["bulk_changes/failed_devices"]) == ("ok", "0")


def test_outcome_tag_says_errors_and_counts_failed_devices(
    repo, settings, db_url, fake_key, instance
):
    rows, bulk = status_change(repo, settings, extra=[{"iccid": "123"}])
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [Rejected("locked")]
    tags = tags_of(instance, run(instance, db_url, fake_key, bulk.id))
    assert tags["bulk_changes/outcome"] == "errors"
    assert tags["bulk_changes/failed_devices"] == "2"  # the carrier's refusal + intake's


def test_a_run_adds_its_bulk_changes_partition(repo, settings, db_url, fake_key, instance):
    _, bulk = status_change(repo, settings)
    run(instance, db_url, fake_key, bulk.id)
    assert instance.get_dynamic_partitions(BULK_CHANGES_PARTITIONS) == [str(bulk.id)]


def test_a_partition_key_gives_the_run_its_config_and_tags(
    repo, settings, db_url, fake_key, instance
):
    _, bulk = status_change(repo, settings)
    instance.add_dynamic_partitions(BULK_CHANGES_PARTITIONS, [str(bulk.id)])
    result = process_bulk_change.execute_in_process(
        resources=resources(db_url, fake_key), instance=instance, partition_key=str(bulk.id)
    )
    assert result.success and repo.get_bulk_change(bulk.id).status == "PROCESSED"
    assert tags_of(instance, result)["dagster/partition"] == str(bulk.id)


def test_a_partitions_run_retries_the_api_failed_devices(
    repo, settings, db_url, fake_key, instance
):
    rows, bulk = status_change(repo, settings, n=2)
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [
        ServerError("down") for _ in range(5)
    ]
    run(instance, db_url, fake_key, bulk.id)
    assert repo.counts(bulk.id) == {"PROCESSED": 1, "API_FAILED": 1}
    instance.add_dynamic_partitions(BULK_CHANGES_PARTITIONS, [str(bulk.id)])
    process_bulk_change.execute_in_process(
        resources=resources(db_url, fake_key), instance=instance, partition_key=str(bulk.id)
    )
    assert repo.counts(bulk.id) == {"PROCESSED": 2}
    # the device that had succeeded was not called again
    assert fake_systems(fake_key)["jasper"].names(rows[1]["iccid"]).count("update_device") <= 1


def materialization(instance, asset):
    [record] = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey(asset)),
        limit=1,
    )
    return record.event_log_entry.asset_materialization


def test_results_materialization_lists_each_failed_device_with_its_reason(
    repo, settings, db_url, fake_key, instance
):
    rows, bulk = status_change(repo, settings)
    fake_systems(fake_key)["jasper"].failures[rows[1]["iccid"]] = [Rejected("Device is locked")]
    run(instance, db_url, fake_key, bulk.id)
    done = materialization(instance, "bulk_change_results")
    assert done.partition == str(bulk.id)
    [failed] = done.metadata["failed_devices"].value.records
    assert (failed.data["device"], failed.data["status"]) == (rows[1]["iccid"], "ERROR")
    assert "Device is locked" in failed.data["reason"]
    assert failed.data["row"] == 2 and failed.data["attempts"] == 1


def test_results_materialization_lists_intake_rejections_with_row_field_and_reason(
    repo, settings, db_url, fake_key, instance
):
    _, bulk = status_change(repo, settings, extra=[{"iccid": "123", "status": "DEACTIVATED"}])
    run(instance, db_url, fake_key, bulk.id)
    [rejected] = (
        materialization(instance, "bulk_change_results").metadata["intake_rejections"].value.records
    )
    assert (rejected.data["row"], rejected.data["field"]) == (4, "iccid")
    assert rejected.data["reason"]


def test_results_materialization_has_counts_duration_and_a_summary(
    repo, settings, db_url, fake_key, instance
):
    _, bulk = status_change(repo, settings)
    run(instance, db_url, fake_key, bulk.id)
    metadata = materialization(instance, "bulk_change_results").metadata
    assert metadata["counts"].value == {"PROCESSED": 3}
    assert metadata["duration_seconds"].value >= 0
    assert "PROCESSED | 3" in metadata["summary"].value


def test_results_file_has_every_devices_result(
    repo, settings, db_url, fake_key, instance, results_dir
):
    rows, bulk = status_change(repo, settings, n=250)
    run(instance, db_url, fake_key, bulk.id)
    with (results_dir / f"bulk_change_{bulk.id}.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [line["device"] for line in lines] == [r["iccid"] for r in rows]
    assert {line["status"] for line in lines} == {"PROCESSED"}


def test_failed_devices_shown_in_the_ui_are_capped_and_the_total_is_given(
    repo, settings, db_url, fake_key, instance, monkeypatch
):
    import bulk_changes.ops.reporting as reporting

    monkeypatch.setattr(reporting, "UI_FAILED_DEVICES", 2)
    # one valid row: intake refuses a request with none
    _, bulk = status_change(repo, settings, n=1, extra=[{"iccid": str(i)} for i in range(5)])
    run(instance, db_url, fake_key, bulk.id)
    metadata = materialization(instance, "bulk_change_results").metadata
    assert len(metadata["failed_devices"].value.records) == 2
    assert metadata["failed_devices_total"].value == 5


def check_evaluation(instance):
    [record] = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION), limit=1
    )
    return record.event_log_entry.dagster_event.event_specific_data


def test_check_warns_when_devices_failed(repo, settings, db_url, fake_key, instance):
    rows, bulk = status_change(repo, settings)
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [Rejected("no")]
    run(instance, db_url, fake_key, bulk.id)
    evaluation = check_evaluation(instance)
    assert (evaluation.passed, evaluation.severity) == (False, AssetCheckSeverity.WARN)


def test_check_passes_when_every_device_was_processed(repo, settings, db_url, fake_key, instance):
    _, bulk = status_change(repo, settings)
    run(instance, db_url, fake_key, bulk.id)
    assert check_evaluation(instance).passed


def step_restarts(result):
    return [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]


def test_a_bulk_change_that_does_not_exist_fails_at_once_without_retry(db_url, fake_key, instance):
    started = time.monotonic()
    result = run(instance, db_url, fake_key, 4242)
    assert not result.success and time.monotonic() - started < 10
    assert not step_restarts(result)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "bulk change 4242 does not exist" in failure.step_failure_data.error.message
    assert tags_of(instance, result)["dagster/max_retries"] == "0"


def test_a_tenant_not_in_the_configuration_fails_at_once_saying_what_to_do(
    repo, settings, db_url, fake_key, instance
):
    rows = inventory(1, "jasper")
    repo.upsert_devices("acme", rows)
    bulk = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": rows[0]["iccid"], "status": "DEACTIVATED"}],
    )
    with repo.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE bulk_changes SET tenant_id = 'initrode' WHERE id = ?", (bulk.id,)
        )
    result = run(instance, db_url, fake_key, bulk.id)
    assert not result.success and not step_restarts(result)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "Add the tenant" in failure.step_failure_data.error.message
    assert repo.get_bulk_change(bulk.id).status == "NEW"  # nothing was started


def test_vendor_code_is_jaspers_error_code_with_the_http_status():
    assert vendor_code("jasper", 400, '{"errorCode": "10000024", "errorMessage": "x"}') == (
        "jasper 400 10000024"
    )


def test_vendor_code_without_a_code_in_the_answer_is_the_system_and_status():
    assert vendor_code("revio", 503, "<html>") == "revio 503"


def test_vendor_code_of_no_answer_is_empty():
    assert vendor_code("jasper", None, None) == ""
