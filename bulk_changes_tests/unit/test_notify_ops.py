"""Notifications through the job (in process, on fakes), the sweep sensor and the run
failure sensor."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

from dagster import (
    DagsterInstance,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    op,
    serialize_value,
)

from bulk_changes.db import outbox_events as outbox_module
from bulk_changes.db import schema as t
from bulk_changes.db.outbox import Outbox
from bulk_changes.domain import notifications as n
from bulk_changes.domain.errors import ServerError
from bulk_changes.environments import wire
from bulk_changes.jobs import process_bulk_change
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import ProcessingSettings
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings
from bulk_changes.sensors.notifications import build_run_failure_sensor, build_sweep_sensor
from bulk_changes.status_report import format_text, status_of
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeJasperApi, FakeRevioApi, FakeTelegenceApi, fake_systems
from bulk_changes_tests.notify_fakes import FakeMailer, FakeWebhookSender, sent
from bulk_changes_tests.notify_helpers import WEBHOOK_SECRET, tenants_file

HOOK = "https://hooks.acme.example/bulk?token=t0ken"


def resources(db_url, fake_key, tenants_path, operators=()):
    return wire(
        {
            "amop_db": AmopDatabase(url=db_url),
            "tenant_config": TenantConfig(path=str(tenants_path)),
            "jasper": FakeJasperApi(key=fake_key),
            "telegence": FakeTelegenceApi(key=fake_key),
            "revio": FakeRevioApi(key=fake_key),
            "processing": ProcessingSettings(base_delay_seconds=0.0, max_delay_seconds=0.0),
            "mail": FakeMailer(key=fake_key),
            "webhooks": FakeWebhookSender(key=fake_key),
            "notifications": NotificationSettings(
                operator_emails=list(operators), ui_base_url="https://dagster.example"
            ),
        }
    )


def run_config(bulk_id, batch_size=3):
    return {
        "ops": {
            "load_device_changes": {"config": {"bulk_change_id": bulk_id}},
            "partition_batches": {"config": {"batch_size": batch_size}},
        }
    }


def attached_csv(message):
    content = next(message.iter_attachments()).get_content()
    text = content.decode() if isinstance(content, bytes) else content
    return list(csv.DictReader(io.StringIO(text)))


def username_change(repo, settings, fake_key):
    rows = inventory(7, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [
        ServerError("jasper down") for _ in range(5)
    ]
    requests = [
        {"iccid": r["iccid"], "username": f"user{i}", "cost_center_2": "CC2"}
        for i, r in enumerate(rows)
    ]
    result = submit(repo, settings, "username_cost_center", "jasper", requests + [{"iccid": "bad"}])
    return result.id, rows


def test_one_completion_one_error_mail_the_username_report_and_the_webhook_events(
    repo, settings, db_url, fake_key, tmp_path
):
    bulk_id, rows = username_change(repo, settings, fake_key)
    path = tenants_file(tmp_path, {"acme": [{"url": HOOK, "secret": WEBHOOK_SECRET}]})
    instance = DagsterInstance.ephemeral()
    outcome = process_bulk_change.execute_in_process(
        run_config=run_config(bulk_id),
        resources=resources(db_url, fake_key, path),
        instance=instance,
    )
    assert outcome.success
    assert repo.counts(bulk_id) == {"PROCESSED": 6, "API_FAILED": 1, "ERROR": 1}
    box = sent(fake_key)

    assert len(box.mails) == 3  # one of each: completion, username report, errors
    completion, report, errors = box.mails
    assert completion["Subject"].startswith(f"Bulk change {bulk_id} PROCESSED_WITH_ERRORS")
    assert report["Subject"].startswith(f"Username report: bulk change {bulk_id}")
    assert errors["Subject"].startswith(f"Bulk change {bulk_id}: 2 device(s) failed")
    for mail in box.mails:
        assert mail["To"] == "ops@acme.example"
    table = attached_csv(completion)
    assert Counter(r["status"] for r in table) == {"PROCESSED": 6, "API_FAILED": 1, "ERROR": 1}
    report_rows = attached_csv(report)
    assert sorted(r["new_username"] for r in report_rows) == [f"user{i}" for i in range(1, 7)]
    assert {r["previous_username"] for r in report_rows} == {""}
    assert {r["new_cost_center_2"] for r in report_rows} == {"CC2"}
    assert {r["changed_by"] for r in report_rows} == {"tester"}
    error_text = errors.get_body(("plain",)).get_content()
    assert "jasper down" in error_text and "bad" in error_text

    bodies = [json.loads(w["body"]) for w in box.webhooks]
    assert {w["url"] for w in box.webhooks} == {HOOK}
    assert bodies[0]["type"] == "bulk_change.processing"
    assert bodies[-1]["type"] == "bulk_change.completed"
    assert bodies[-1]["data"]["counts"] == {"API_FAILED": 1, "ERROR": 1, "PROCESSED": 6}
    groups = [b["data"] for b in bodies if b["type"] == "device_changes.completed"]
    devices = [d["device_change_id"] for g in groups for d in g["devices"]]
    assert Counter(devices) == Counter(c.id for c in repo.device_changes_of(bulk_id))
    assert all(len(g["devices"]) <= 100 for g in groups) and len(groups) >= 2
    failed = next(d for g in groups for d in g["devices"] if d["status"] == "API_FAILED")
    assert "jasper down" in failed["reason"]
    assert len({w["event_id"] for w in box.webhooks}) == len(box.webhooks)

    metadata = outcome.output_for_node("deliver_notifications")
    assert metadata["delivered"] == len(box.mails) + len(box.webhooks)

    # a second run of the final bulk change: nothing new is sent
    again = process_bulk_change.execute_in_process(
        run_config=run_config(bulk_id), resources=resources(db_url, fake_key, path)
    )
    assert again.success and len(box.mails) == 3 and len(box.webhooks) == len(bodies)

    # the status shows each notification and its delivery state, without secrets
    status = status_of(repo, bulk_id, with_devices=False)
    shown = format_text(status) + json.dumps(status, default=str)
    assert "bulk_change.completed" in shown and "DELIVERED" in shown
    assert all(d["status"] == "DELIVERED" for e in status["notifications"] for d in e["deliveries"])
    # secrets: not in the status, the audit rows, nor anything Dagster recorded
    logs = serialize_value(instance.all_logs(outcome.run_id))
    audit = json.dumps(repo.audit_of(bulk_id), default=str)
    for secret in (WEBHOOK_SECRET, "t0ken", "sim-jasper-key", "sim-revio-password"):
        assert secret not in shown and secret not in audit and secret not in logs


def test_mails_read_the_devices_a_page_at_a_time_in_row_order(
    repo, settings, db_url, fake_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(outbox_module, "REPORT_CHUNK", 3)
    pages: list[int] = []
    real = outbox_module.device_result_pages

    def counted(engine, bulk_change_id, size):
        for page in real(engine, bulk_change_id, size):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(outbox_module, "device_result_pages", counted)
    bulk_id, rows = username_change(repo, settings, fake_key)
    outcome = process_bulk_change.execute_in_process(
        run_config=run_config(bulk_id),
        resources=resources(db_url, fake_key, tenants_file(tmp_path, {})),
    )
    assert outcome.success
    completion, report, errors = sent(fake_key).mails
    assert max(pages) == 3 and sum(pages) == 3 * 8  # three mails, 8 device changes each
    assert [int(r["row"]) for r in attached_csv(completion)] == list(range(1, 9))
    assert [r["new_username"] for r in attached_csv(report)] == [f"user{i}" for i in range(1, 7)]
    assert "6 device(s)" in report["Subject"]


def test_a_failing_receiver_does_not_fail_the_run_and_the_sweep_delivers_later(
    repo, settings, db_url, fake_key, tmp_path
):
    bulk_id, _ = username_change(repo, settings, fake_key)
    path = tenants_file(tmp_path, {"acme": [{"url": HOOK, "secret": WEBHOOK_SECRET}]})
    box = sent(fake_key)
    box.webhooks_down = True
    box.mail_down = True
    res = resources(db_url, fake_key, path)
    outcome = process_bulk_change.execute_in_process(run_config=run_config(bulk_id), resources=res)
    assert outcome.success
    assert outcome.output_for_node("deliver_notifications")["failed_attempts"] == 2
    assert box.webhooks == [] and box.mails == []
    pending = Outbox(repo.engine).pending(bulk_id)
    assert pending and all(p.status == "PENDING" for p in pending)

    box.webhooks_down = box.mail_down = False
    # due again: the retry time has come (the test moves it rather than waiting)
    with repo.engine.begin() as conn:
        conn.execute(t.outbox_deliveries.update().values(next_attempt_at=pending[0].created_at))
    sweep = build_sweep_sensor()
    with build_sensor_context(resources={"notifier": res["notifier"]}) as context:
        result = sweep(context)
    assert "9 delivered" in result.skip_message
    assert Outbox(repo.engine).pending(bulk_id) == []
    assert len(box.mails) == 3
    types = [json.loads(w["body"])["type"] for w in box.webhooks]
    assert types[0] == n.BULK_CHANGE_PROCESSING and types[-1] == n.BULK_CHANGE_COMPLETED


@op
def explode():
    raise RuntimeError("database unreachable: postgresql://amop:hunter22@db.internal/amop")


@job(name="process_bulk_change")
def failing_stand_in():
    explode()


def test_run_failure_sensor_alerts_the_operators_once_with_a_link(
    repo, settings, db_url, fake_key, tmp_path
):
    path = tenants_file(tmp_path)
    res = resources(db_url, fake_key, path, operators=["oncall@platform.example"])
    instance = DagsterInstance.ephemeral()
    failed = failing_stand_in.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={"bulk_changes/bulk_change_id": "12", "bulk_changes/tenant": "acme"},
    )
    assert not failed.success
    sensor = build_run_failure_sensor([process_bulk_change])
    sensor_resources = {"notifier": res["notifier"]}
    for _ in range(2):  # the sensor seeing the same failure again sends nothing new
        # a resource nesting others is set up in a context manager
        with build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=failed.dagster_run,
            resources=sensor_resources,
        ).for_run_failure() as context:
            sensor(context)
    box = sent(fake_key)
    assert len(box.mails) == 1
    mail = box.mails[0]
    assert mail["To"] == "oncall@platform.example"
    text = mail.get_body(("plain",)).get_content()
    assert f"https://dagster.example/runs/{failed.run_id}" in text
    assert (
        "explode: RuntimeError: database unreachable: postgresql://amop:***@db.internal/amop"
        in text
    )
    assert "hunter22" not in mail.as_string()
    assert (
        mail["Subject"] == f"Run failed: process_bulk_change {failed.run_id[:8]} (bulk change 12)"
    )
