"""Notifications against real servers: mail to an SMTP server inside the test (aiosmtpd:
STARTTLS with login, implicit TLS, plain), webhooks to an HTTP receiver that verifies them
with the ``standardwebhooks`` package; the receiver down then back; tampered and stale
requests; secrets kept out of logs, metadata, audit rows and status output."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter

import pytest
import requests
from dagster import DagsterInstance, EnvVar, serialize_value

from bulk_changes import cli
from bulk_changes.db.outbox import Outbox
from bulk_changes.domain import notifications as n
from bulk_changes.domain.errors import AuthenticationFailed, ConnectionFailed, Rejected
from bulk_changes.domain.errors import ServerError as ApiServerError
from bulk_changes.domain.webhook_signing import signed_headers
from bulk_changes.environments import wire
from bulk_changes.jobs import process_bulk_change
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import ProcessingSettings
from bulk_changes.resources.mail import SmtpMailer
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings, WebhookSender
from bulk_changes.status_report import format_text, status_of
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeJasperApi, FakeRevioApi, FakeTelegenceApi, fake_systems
from bulk_changes_tests.notify_helpers import Clock, dispatcher, tenants_file
from bulk_changes_tests.notify_servers import Receiver, start_smtp

SMTP_PASSWORD = "smtp-Pa55word-never-shown"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtcmVhbC1yZWNlaXZlci10ZXN0"  # noqa: S105


def attachment(message, name):
    part = next(p for p in message.iter_attachments() if p.get_filename() == name)
    content = part.get_content()
    return list(
        csv.DictReader(io.StringIO(content.decode() if isinstance(content, bytes) else content))
    )


@pytest.fixture
def receiver():
    r = Receiver(WEBHOOK_SECRET).start()
    yield r
    r.stop()


@pytest.fixture
def smtp(tmp_path):
    server = start_smtp(tmp_path, security="starttls", users={"bulk": SMTP_PASSWORD})
    yield server
    server.stop()


def test_a_bulk_change_with_successes_and_failures_over_real_smtp_and_webhooks(
    repo, settings, db_url, fake_key, tmp_path, receiver, smtp, monkeypatch, capfd
):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    rows = inventory(5, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    fake_systems(fake_key)["jasper"].failures[rows[0]["iccid"]] = [
        ApiServerError("jasper answered 503") for _ in range(5)
    ]
    result = submit(
        repo,
        settings,
        "username_cost_center",
        "jasper",
        [
            {"iccid": r["iccid"], "username": f"name{i}", "cost_center_1": "C1"}
            for i, r in enumerate(rows)
        ]
        + [{"iccid": "89"}],
    )
    bulk_id = result.id
    tenants = tenants_file(tmp_path, {"acme": [{"url": receiver.url, "secret": WEBHOOK_SECRET}]})
    instance = DagsterInstance.ephemeral()
    outcome = process_bulk_change.execute_in_process(
        run_config={
            "ops": {
                "load_device_changes": {"config": {"bulk_change_id": bulk_id}},
                "partition_batches": {"config": {"batch_size": 2}},
            }
        },
        resources=wire(
            {
                "amop_db": AmopDatabase(url=db_url),
                "tenant_config": TenantConfig(path=str(tenants)),
                "jasper": FakeJasperApi(key=fake_key),
                "telegence": FakeTelegenceApi(key=fake_key),
                "revio": FakeRevioApi(key=fake_key),
                "processing": ProcessingSettings(base_delay_seconds=0.0, max_delay_seconds=0.0),
                "mail": SmtpMailer(
                    host=smtp.host,
                    port=smtp.port,
                    security="starttls",
                    username="bulk",
                    password=EnvVar("TEST_SMTP_PASSWORD"),
                    ca_file=smtp.ca_file,
                    from_address="bulk-changes@platform.example",
                ),
                "webhooks": WebhookSender(),
                "notifications": NotificationSettings(),
            }
        ),
        instance=instance,
    )
    assert outcome.success
    assert repo.counts(bulk_id) == {"PROCESSED": 4, "API_FAILED": 1, "ERROR": 1}

    # mail, read back from the SMTP server
    mails = smtp.wait_for(3)
    assert len(mails) == 3
    assert all(m.authenticated_as == "bulk" for m in mails)
    assert all(m.rcpt_tos == ["ops@acme.example"] for m in mails)
    assert all(m.mail_from == "bulk-changes@platform.example" for m in mails)
    subjects = {m.message["Subject"]: m.message for m in mails}
    (completion,) = [v for k, v in subjects.items() if "PROCESSED_WITH_ERRORS" in k]
    (report,) = [v for k, v in subjects.items() if k.startswith("Username report")]
    (errors,) = [v for k, v in subjects.items() if "device(s) failed" in k]
    assert completion["Subject"] == (
        f"Bulk change {bulk_id} PROCESSED_WITH_ERRORS: username_cost_center on jasper (acme)"
    )
    text = completion.get_body(("plain",)).get_content()
    markup = completion.get_body(("html",)).get_content()
    for fact in ("username_cost_center", "jasper", "tester", "PROCESSED_WITH_ERRORS"):
        assert fact in text and fact in markup
    assert "jasper answered 503" in text and "jasper answered 503" in markup
    results = attachment(completion, f"bulk-change-{bulk_id}-results.csv")
    assert Counter(r["status"] for r in results) == {"PROCESSED": 4, "API_FAILED": 1, "ERROR": 1}
    assert len(results) == 6
    lines = attachment(report, f"bulk-change-{bulk_id}-username-report.csv")
    assert sorted(r["new_username"] for r in lines) == ["name1", "name2", "name3", "name4"]
    assert {r["new_cost_center_1"] for r in lines} == {"C1"}
    assert {r["changed_by"] for r in lines} == {"tester"}
    assert errors["Subject"].startswith(f"Bulk change {bulk_id}: 2 device(s) failed")
    assert completion["Message-ID"].startswith("<msg_")

    # webhooks, verified by the receiver's own implementation
    hits = receiver.hits
    assert hits and all(h.verified for h in hits)
    types = [h.json["type"] for h in hits]
    assert types[0] == n.BULK_CHANGE_PROCESSING and types[-1] == n.BULK_CHANGE_COMPLETED
    assert set(types) == set(n.WEBHOOK_EVENTS)
    devices = [
        d["device_change_id"]
        for h in hits
        if h.json["type"] == n.DEVICE_CHANGES_COMPLETED
        for d in h.json["data"]["devices"]
    ]
    assert Counter(devices) == Counter(c.id for c in repo.device_changes_of(bulk_id))
    assert hits[-1].json["data"]["counts"] == {"API_FAILED": 1, "ERROR": 1, "PROCESSED": 4}
    assert len({h.webhook_id for h in hits}) == len(hits)

    # status and the CLI show the deliveries; no secret anywhere we write or show
    status = status_of(repo, bulk_id, with_devices=True)
    assert all(d["status"] == "DELIVERED" for e in status["notifications"] for d in e["deliveries"])
    monkeypatch.setenv("BULK_CHANGES_DB_URL", db_url)
    monkeypatch.setenv("BULK_CHANGES_TENANTS", str(tenants))
    assert cli.main(["status", str(bulk_id)]) == 0
    assert cli.main(["status", str(bulk_id), "--json"]) == 0
    shown = capfd.readouterr()
    assert "bulk_change.completed" in shown.out and "DELIVERED" in shown.out
    written = [
        format_text(status),
        json.dumps(status, default=str),
        json.dumps(repo.audit_of(bulk_id), default=str),
        json.dumps([vars(e) for e in Outbox(repo.engine).events()], default=str),
        serialize_value(instance.all_logs(outcome.run_id)),
        shown.out,
        shown.err,
    ]
    secrets = [
        SMTP_PASSWORD,
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
        "sim-jasper-key",
        "sim-revio-password",
        "sim-subscription-key",
        "sim-telegence-secret",
    ]
    for text in written:
        for secret in secrets:
            assert secret not in text


def test_implicit_tls_and_plain_smtp_and_a_refused_login(tmp_path):
    from email.message import EmailMessage

    def message():
        m = EmailMessage()
        m["Subject"], m["To"] = "hello", "a@x.example"
        m.set_content("body")
        return m

    tls = start_smtp(tmp_path, security="tls")
    plain = start_smtp(tmp_path, users={"bulk": SMTP_PASSWORD})
    try:
        SmtpMailer(host=tls.host, port=tls.port, security="tls", ca_file=tls.ca_file).send(
            message()
        )
        assert tls.wait_for(1)[0].message["Subject"] == "hello"
        with pytest.raises(ConnectionFailed):  # a certificate nobody vouches for
            SmtpMailer(host=tls.host, port=tls.port, security="tls").send(message())
        SmtpMailer(
            host=plain.host,
            port=plain.port,
            security="none",
            username="bulk",
            password=SMTP_PASSWORD,
        ).send(message())
        assert plain.wait_for(1)[0].authenticated_as == "bulk"
        with pytest.raises(AuthenticationFailed) as refused:
            SmtpMailer(
                host=plain.host,
                port=plain.port,
                security="none",
                username="bulk",
                password="wrong-pw",
            ).send(message())
        assert "wrong-pw" not in str(refused.value)
        assert "wrong-pw" not in repr(SmtpMailer(host="h", username="u", password="wrong-pw"))
    finally:
        tls.stop()
        plain.stop()


def _final_bulk_change(repo, settings, n_devices=3):
    from bulk_changes.domain.state_machine import DeviceStatus

    rows = inventory(n_devices, "jasper")
    repo.upsert_devices("acme", rows)
    result = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
    )
    repo.start_processing(result.id, "run-1", False)
    for c in repo.device_changes_of(result.id):
        repo.finish_device_change(
            bulk_change_id=result.id,
            device_change_id=c.id,
            status=DeviceStatus.PROCESSED,
            reason=None,
            step=None,
        )
    repo.report_final_devices(result.id, [c.id for c in repo.device_changes_of(result.id)])
    repo.finalize(result.id)
    return result.id


def test_receiver_down_for_a_while_then_back_gets_every_event_in_order_same_ids(
    repo, settings, tmp_path, receiver
):
    first = _final_bulk_change(repo, settings)
    second = _final_bulk_change(repo, settings)
    tenants = tenants_file(tmp_path, {"acme": [{"url": receiver.url, "secret": WEBHOOK_SECRET}]})
    clock = Clock()

    class NoMail:
        from_address = "x@y"

        def send(self, message):
            return "dropped"

    d = dispatcher(repo, tenants, NoMail(), WebhookSender(read_timeout_seconds=2), clock=clock)
    receiver.status = 503  # answering, but failing
    report = d.deliver()
    # the endpoint failed once: nothing else is sent to it in this pass
    assert report.failed_attempts == 1 and report.delivered == 2  # the two mails
    failing_ids = [h.webhook_id for h in receiver.hits]
    port = receiver.port
    receiver.stop()  # then not there at all
    clock.advance(10)
    assert d.deliver().failed_attempts == 1
    clock.advance(20)
    assert d.deliver().failed_attempts == 1

    back = Receiver(WEBHOOK_SECRET, port=port).start()
    try:
        clock.advance(40)
        d.deliver()
        assert Outbox(repo.engine).pending() == []
        delivered = back.delivered()
        assert all(h.verified for h in back.hits)
        by_bulk: dict[int, list[str]] = {}
        for h in delivered:
            by_bulk.setdefault(h.json["data"]["bulk_change_id"], []).append(h.json["type"])
        expected = [n.BULK_CHANGE_PROCESSING, n.DEVICE_CHANGES_COMPLETED, n.BULK_CHANGE_COMPLETED]
        assert by_bulk == {first: expected, second: expected}
        events = Outbox(repo.engine).events()
        assert [h.webhook_id for h in delivered] == [
            e.event_id for e in events if e.type in n.WEBHOOK_EVENTS
        ]
        # the ids the receiver saw while it failed are the ones it finally got
        assert failing_ids == [delivered[0].webhook_id]
        heads = [p for p in Outbox(repo.engine).by_event_id(failing_ids[0])]
        outcomes = [a["outcome"] for a in Outbox(repo.engine).attempts(heads[0].id)]
        assert outcomes == ["failed", "failed", "failed", "delivered"]
    finally:
        back.stop()


def test_tampered_payload_or_stale_timestamp_fails_verification(receiver):
    body = json.dumps({"type": "bulk_change.completed", "data": {"status": "PROCESSED"}})
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        **signed_headers(WEBHOOK_SECRET, "msg_t", now, body),
    }
    assert requests.post(receiver.url, data=body, headers=headers, timeout=5).status_code == 200
    tampered = body.replace("PROCESSED", "CANCELLED")
    assert requests.post(receiver.url, data=tampered, headers=headers, timeout=5).status_code == 400
    with pytest.raises(Rejected):
        WebhookSender().send(receiver.url, WEBHOOK_SECRET, "msg_s", body, timestamp=now - 600)
    other = "whsec_" + "b3RoZXItc2VjcmV0LW9mLWVub3VnaC1sZW5ndGgtMzI="
    with pytest.raises(Rejected):
        WebhookSender().send(receiver.url, other, "msg_o", body)
    verdicts = [(h.webhook_id, h.verified) for h in receiver.hits]
    assert verdicts == [("msg_t", True), ("msg_t", False), ("msg_s", False), ("msg_o", False)]
    assert "old" in receiver.hits[2].error.lower()
    assert "signature" in receiver.hits[1].error.lower()


def test_failed_list_and_redeliver_from_the_cli(
    repo, settings, db_url, tmp_path, receiver, monkeypatch, capsys
):
    bulk_id = _final_bulk_change(repo, settings, 1)
    tenants = tenants_file(tmp_path, {"acme": [{"url": receiver.url, "secret": WEBHOOK_SECRET}]})
    clock = Clock()

    class NoMail:
        from_address = "x@y"

        def send(self, message):
            return "dropped"

    receiver.status = 500
    d = dispatcher(repo, tenants, NoMail(), WebhookSender(), clock=clock)
    d.deliver()
    clock.advance(25 * 3600)
    for _ in range(3):
        d.deliver()
    failed = Outbox(repo.engine).failed(n.WEBHOOK)
    assert len(failed) == 3
    monkeypatch.setenv("BULK_CHANGES_DB_URL", db_url)
    monkeypatch.setenv("BULK_CHANGES_TENANTS", str(tenants))
    monkeypatch.setenv("BULK_CHANGES_MAIL_DIR", str(tmp_path / "mail"))
    assert cli.main(["webhooks", "failed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [f.id for f in failed]
    assert {r["status"] for r in listed} == {"FAILED"} and listed[0]["bulk_change_id"] == bulk_id
    assert cli.main(["webhooks", "failed"]) == 0
    text = capsys.readouterr().out
    assert "HTTP 500" in text and WEBHOOK_SECRET not in text

    receiver.status = 200
    assert cli.main(["webhooks", "redeliver", str(failed[0].id)]) == 0
    assert "delivered, now DELIVERED" in capsys.readouterr().out
    assert receiver.delivered()[-1].webhook_id == failed[0].event.event_id
    assert cli.main(["webhooks", "redeliver", failed[1].event.event_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "DELIVERED"
    assert cli.main(["webhooks", "redeliver", "999999"]) == 1
    assert cli.main(["webhooks", "failed", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [failed[2].id]
    ids = [h.webhook_id for h in receiver.hits]
    # two failed attempts (the second after the 24 hours), then the redelivery
    assert ids.count(failed[0].event.event_id) == 3


def test_mail_server_down_is_a_retryable_error(tmp_path):
    from bulk_changes.domain.errors import RetryableError
    from bulk_changes.resources.local_sqs import free_port

    with pytest.raises(RetryableError):
        SmtpMailer(host="127.0.0.1", port=free_port(), security="none", timeout_seconds=2).send(
            __import__("email.message").message.EmailMessage()
        )
