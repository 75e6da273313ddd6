"""The ops with build_op_context and the whole job in process, on fakes of our resources."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import build_op_context

from bulk_changes.domain.model import BulkChange
from bulk_changes.environments import at_launch, wire
from bulk_changes.jobs import process_bulk_change
from bulk_changes.ops.batches import LoadedBulkChange
from bulk_changes.ops.process import load_device_changes, partition_batches
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import ProcessingSettings
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeJasperApi, FakeRevioApi, FakeTelegenceApi, fake_systems
from bulk_changes_tests.notify_fakes import FakeMailer, FakeWebhookSender


def leaves(db_url, fake_key):
    return {
        "amop_db": AmopDatabase(url=db_url),
        "tenant_config": TenantConfig(),
        "jasper": FakeJasperApi(key=fake_key),
        "telegence": FakeTelegenceApi(key=fake_key),
        "revio": FakeRevioApi(key=fake_key),
        "processing": ProcessingSettings(base_delay_seconds=0.0, max_delay_seconds=0.0),
        "mail": FakeMailer(key=fake_key),
        "webhooks": FakeWebhookSender(key=fake_key),
        "notifications": NotificationSettings(),
    }


def resources(db_url, fake_key):
    return wire(leaves(db_url, fake_key))


def a_bulk_change(bulk_change_id):
    return BulkChange(
        id=bulk_change_id,
        tenant_id="acme",
        change_type="device_status",
        integration="jasper",
        status="PROCESSING",
        idempotency_key=None,
        notify=[],
        requested_by=None,
        source="test",
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
    )


def run_config(bulk_id, batch_size=100, retry_failed_only=False):
    return {
        "ops": {
            "load_device_changes": {
                "config": {"bulk_change_id": bulk_id, "retry_failed_only": retry_failed_only}
            },
            "partition_batches": {"config": {"batch_size": batch_size}},
        }
    }


def test_load_lists_pending_device_changes_and_opens_the_bulk_change(repo, settings, db_url):
    rows = inventory(3, "jasper")
    repo.upsert_devices("acme", rows)
    result = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows] + [{"iccid": "1"}],
    )
    context = build_op_context(
        resources={"amop_db": AmopDatabase(url=db_url), "tenant_config": TenantConfig()}
    )
    output = load_device_changes(context, config={"bulk_change_id": result.id})
    assert len(output.value.device_change_ids) == 3
    assert repo.get_bulk_change(result.id).status == "PROCESSING"


def test_partition_makes_batches_of_the_configured_size():
    context = build_op_context()
    outputs = list(
        partition_batches(
            context,
            config={"batch_size": 2},
            loaded=LoadedBulkChange(a_bulk_change(1), (1, 2, 3, 4, 5)),
        )
    )
    assert [len(o.value.device_change_ids) for o in outputs] == [2, 2, 1]
    assert [o.mapping_key for o in outputs] == ["batch_00000", "batch_00001", "batch_00002"]


def test_partition_of_nothing_still_reaches_finalize():
    outputs = list(
        partition_batches(
            build_op_context(),
            config={"batch_size": 100},
            loaded=LoadedBulkChange(a_bulk_change(1), ()),
        )
    )
    assert len(outputs) == 1 and outputs[0].value.device_change_ids == ()


def test_job_processes_every_device_and_finalizes_once(repo, settings, db_url, fake_key):
    rows = inventory(7, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    requests = [
        {"iccid": r["iccid"], "username": f"user{i}", "cost_center_2": "CC"}
        for i, r in enumerate(rows)
    ]
    result = submit(repo, settings, "username_cost_center", "jasper", requests + [{"iccid": "bad"}])
    outcome = process_bulk_change.execute_in_process(
        run_config=run_config(result.id, batch_size=3), resources=resources(db_url, fake_key)
    )
    assert outcome.success
    assert repo.get_bulk_change(result.id).status == "PROCESSED_WITH_ERRORS"
    assert repo.counts(result.id) == {"PROCESSED": 7, "ERROR": 1}
    final = outcome.output_for_node("finalize_bulk_change")
    assert final["status"] == "PROCESSED_WITH_ERRORS"
    again = process_bulk_change.execute_in_process(
        run_config=run_config(result.id), resources=resources(db_url, fake_key)
    )
    assert again.success
    assert len(fake_systems(fake_key)["jasper"].calls) == 7  # the second run called nothing


def test_finalize_starts_after_every_batch_and_finds_nothing_left(repo, settings, db_url, fake_key):
    rows = inventory(7, "jasper")
    repo.upsert_devices("acme", rows)
    requests = [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows]
    result = submit(repo, settings, "device_status", "jasper", requests)
    outcome = process_bulk_change.execute_in_process(
        run_config=run_config(result.id, batch_size=2), resources=resources(db_url, fake_key)
    )
    assert outcome.success
    order = [
        (event.event_type_value, event.step_key)
        for event in outcome.all_events
        if event.event_type_value in ("STEP_START", "STEP_SUCCESS")
    ]
    batches_done = [
        i for i, (kind, key) in enumerate(order) if kind == "STEP_SUCCESS" and "apply" in key
    ]
    assert len(batches_done) == 4
    assert order.index(("STEP_START", "finalize_bulk_change")) > max(batches_done)
    [materialization] = [
        e
        for e in outcome.events_for_node("finalize_bulk_change")
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert materialization.step_output_data.metadata["finished_here"].value == 0


def test_retry_failed_only_reprocesses_api_failed_devices(repo, settings, db_url, fake_key):
    from bulk_changes.domain.errors import ServerError

    rows = inventory(2, "jasper")
    repo.upsert_devices("acme", rows)
    flaky = rows[0]["iccid"]
    fake_systems(fake_key)["jasper"].failures[flaky] = [ServerError("down") for _ in range(5)]
    result = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
    )
    first = process_bulk_change.execute_in_process(
        run_config=run_config(result.id), resources=resources(db_url, fake_key)
    )
    assert first.success and repo.counts(result.id) == {"PROCESSED": 1, "API_FAILED": 1}
    assert repo.get_bulk_change(result.id).status == "PROCESSED_WITH_ERRORS"
    second = process_bulk_change.execute_in_process(
        run_config=run_config(result.id, retry_failed_only=True),
        resources=resources(db_url, fake_key),
    )
    assert second.success
    assert repo.counts(result.id) == {"PROCESSED": 2}
    assert repo.get_bulk_change(result.id).status == "PROCESSED"


def test_a_processing_setting_given_at_launch_reaches_the_device_ops(
    repo, settings, db_url, fake_key
):
    from bulk_changes.domain.errors import ServerError

    rows = inventory(1, "jasper")
    repo.upsert_devices("acme", rows)
    # two failures: the default 5 attempts would get through, 2 attempts do not
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [ServerError("down")] * 2
    request = [{"iccid": rows[0]["iccid"], "status": "DEACTIVATED"}]
    result = submit(repo, settings, "device_status", "jasper", request)
    launched = {
        **leaves(db_url, fake_key),
        # as the code location has them: configured at launch, nested as the same resource
        "amop_db": at_launch(AmopDatabase, url=db_url),
        "processing": at_launch(ProcessingSettings, base_delay_seconds=0.0, max_delay_seconds=0.0),
    }
    config = {**run_config(result.id), "resources": {"processing": {"config": {"max_attempts": 2}}}}
    outcome = process_bulk_change.execute_in_process(run_config=config, resources=wire(launched))
    assert outcome.success
    assert repo.counts(result.id) == {"API_FAILED": 1}
