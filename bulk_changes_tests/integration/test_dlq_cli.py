"""`bulk-changes dlq list | redrive` against a real SQS-protocol server (moto's, over HTTP;
boto3 is not mocked), with the queue sensor putting messages there and taking them back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context

from bulk_changes import cli
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.local_sqs import LocalSqsServer, local_credentials
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import TenantConfig, default_config_path
from bulk_changes.sensors.sqs_sensor import build_queue_sensor
from bulk_changes_tests.integration.test_queue_sqs import stand_in_job


@pytest.fixture(scope="module")
def endpoint():
    server = LocalSqsServer(port=0)
    yield server.start()
    server.stop()


@pytest.fixture
def queue(endpoint, tmp_path, monkeypatch):
    name = f"dlq-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("BULK_CHANGES_HOME", str(tmp_path))
    monkeypatch.setenv("BULK_CHANGES_DB_URL", f"sqlite:///{tmp_path / 'amop.sqlite'}")
    monkeypatch.setenv("BULK_CHANGES_SQS_ENDPOINT", endpoint)
    monkeypatch.setenv("BULK_CHANGES_QUEUE", name)
    monkeypatch.setenv("BULK_CHANGES_DLQ", f"{name}-dlq")
    q = SqsQueue(
        endpoint_url=endpoint,
        queue_name=name,
        dead_letter_queue_name=f"{name}-dlq",
        **local_credentials(),
    )
    q.ensure_queues()
    return q


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def dead_letter_via_sensor(queue: SqsQueue, body, attributes=None) -> str:
    """Send ``body`` and let one receive dead-letter it the way the sensor does."""
    message_id = queue.send(body, attributes)
    [message] = queue.receive(1)
    queue.dead_letter(message, f"test reason for {message_id}")
    return message_id


def test_list_shows_every_dead_letter_with_reason_original_id_and_receive_count(queue, capsys):
    sensor_ids = [
        dead_letter_via_sensor(queue, f"poison {n}", {"Source": "portal"}) for n in range(12)
    ]
    moved_id = queue.send("crashes the sensor every time")
    for _ in range(queue.max_receive_count):  # received, never deleted: SQS moves it
        assert len(queue.receive(1, visibility_timeout_seconds=0)) == 1
    assert queue.receive(1, visibility_timeout_seconds=0) == []

    code, out, _ = run_cli(capsys, "dlq", "list", "--json")
    assert code == 0
    letters = json.loads(out)
    assert len(letters) == 13  # more than one receive's worth: the walk sees them all
    by_original = {letter["original_message_id"]: letter for letter in letters}
    for message_id in sensor_ids:
        letter = by_original[message_id]
        assert letter["reason"] == f"test reason for {message_id}"
        assert letter["receive_count"] == 1
        assert letter["dead_lettered_by"] == "sensor"
        assert letter["attributes"] == {"Source": "portal"}  # the original ones only
        assert letter["message_id"] != message_id and letter["sent_at"]
    moved = by_original[moved_id]
    assert moved["message_id"] == moved_id  # SQS keeps the id when it moves a message
    assert moved["dead_lettered_by"] == "redrive_policy"
    assert moved["receive_count"] >= queue.max_receive_count
    assert "redrive policy" in moved["reason"]

    # looking consumes nothing; the text form says the same
    code, out, _ = run_cli(capsys, "dlq", "list")
    assert code == 0 and out.startswith("13 message(s) in the dead-letter queue")
    assert "reason: test reason for" in out and "body: poison" in out


def test_redrive_chosen_messages_back_with_their_attributes_then_all(queue, capsys):
    first = dead_letter_via_sensor(queue, '{"bulk_change_id": 1}', {"Source": "portal"})
    second = dead_letter_via_sensor(queue, '{"bulk_change_id": 2}')
    third = dead_letter_via_sensor(queue, '{"bulk_change_id": 3}')
    [dlq_id_of_second] = [m.message_id for m in queue.list_dead_letters(10) if m.identity == second]

    code, out, err = run_cli(
        capsys, "dlq", "redrive", first, dlq_id_of_second, "no-such-id", "--json"
    )
    assert code == 1  # one id was not there
    result = json.loads(out)
    assert {r["original_message_id"] for r in result["redriven"]} == {first, second}
    assert result["not_found"] == ["no-such-id"]
    back = {m.identity: m for m in queue.receive(10, visibility_timeout_seconds=0)}
    assert set(back) == {first, second}
    assert back[first].attributes == {"Source": "portal", "OriginalMessageId": first}
    assert json.loads(back[first].body) == {"bulk_change_id": 1}
    assert [m.identity for m in queue.list_dead_letters(10)] == [third]

    code, out, _ = run_cli(capsys, "dlq", "redrive", "--all")
    assert code == 0 and "1 message(s) sent back" in out
    assert queue.list_dead_letters(10) == []
    assert run_cli(capsys, "dlq", "redrive")[0] == 2  # neither ids nor --all


def test_fixed_then_redriven_submit_is_the_same_request(queue, capsys, tmp_path, monkeypatch):
    """A submit for a tenant not configured yet goes to the dead-letter queue; once the
    tenant is added it is redriven, and stored under its original message id: redriving it
    again (a duplicate) does not make a second bulk change."""
    tenants = yaml.safe_load(Path(default_config_path()).read_text())
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(tenants))
    amop_db = AmopDatabase(url=f"sqlite:///{tmp_path / 'amop.sqlite'}")
    # a request with no valid row is refused as a whole: the device must be known
    amop_db.repository().upsert_devices(
        "initech",
        [
            {
                "integration": "jasper",
                "device_key": "89014103211118510720",
                "iccid": "89014103211118510720",
            }
        ],
    )
    instance = DagsterInstance.ephemeral()
    sensor_def = build_queue_sensor(stand_in_job)

    def tick():
        context = build_sensor_context(
            instance=instance,
            resources={
                "queue": queue,
                "amop_db": amop_db,
                "tenant_config": TenantConfig(path=str(tenants_file)),
            },
        )
        return list(sensor_def.evaluate_tick(context).run_requests or [])

    submit = {
        "type": "submit_bulk_change",
        "tenant": "initech",
        "change_type": "device_status",
        "integration": "jasper",
        "devices": [{"iccid": "89014103211118510720", "status": "ACTIVATED"}],
    }
    original_id = queue.send(submit)
    assert tick() == []
    code, out, _ = run_cli(capsys, "dlq", "list", "--json")
    [letter] = json.loads(out)
    assert "unknown tenant 'initech'" in letter["reason"]

    # the fix: the tenant is configured (a copy of acme's settings)
    acme = next(t for t in tenants["tenants"] if t["id"] == "acme")
    tenants["tenants"].append({**acme, "id": "initech"})
    tenants_file.write_text(yaml.safe_dump(tenants))
    assert run_cli(capsys, "dlq", "redrive", original_id)[0] == 0
    [request] = tick()
    bulk = amop_db.repository().get_bulk_change(int(request.tags["bulk_changes/bulk_change_id"]))
    assert bulk.tenant_id == "initech"
    assert bulk.idempotency_key == f"sqs:{original_id}"

    # the same request once more (say, a copy redriven twice): same bulk change
    queue.send(submit, {"OriginalMessageId": original_id})
    [again] = tick()
    assert again.run_key == request.run_key  # the same run key: Dagster starts no second run
    assert len(amop_db.repository().list_bulk_changes()) == 1
