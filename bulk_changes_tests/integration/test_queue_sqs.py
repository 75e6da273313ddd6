"""The queue resource and the queue sensor against a real SQS-protocol server (moto's server
on a free port; boto3 is not mocked)."""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    OpExecutionContext,
    RunRequest,
    build_sensor_context,
    job,
    op,
)

from bulk_changes.resources.local_sqs import LocalSqsServer, local_credentials
from bulk_changes.resources.queue import QueueMissing, ReceiptHandleInvalid, SqsQueue
from bulk_changes.sensors.sqs_sensor import build_queue_sensor, load_cursor


@op(config_schema={"bulk_change_id": int, "retry_failed_only": bool})
def load_device_changes(context: OpExecutionContext) -> int:
    return int(context.op_config["bulk_change_id"])


@job
def stand_in_job() -> None:
    load_device_changes()


@dataclass
class FakeBulkChange:
    id: int
    tenant_id: str = "acme"
    change_type: str = "device_status"
    integration: str = "jasper"
    status: str = "NEW"


@dataclass
class FakeAmopDb:
    bulk_changes: dict[int, FakeBulkChange] = field(default_factory=dict)

    def repository(self) -> "FakeAmopDb":
        return self

    def get_bulk_change(self, bulk_change_id: int) -> FakeBulkChange | None:
        return self.bulk_changes.get(bulk_change_id)


class FakeTenantConfig:
    def settings(self) -> None:
        return None


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = LocalSqsServer(port=0)
    url = server.start()
    yield url
    server.stop()


def make_queue(endpoint: str, **overrides: object) -> SqsQueue:
    name = f"it-{uuid.uuid4().hex[:10]}"
    config: dict[str, object] = {
        "endpoint_url": endpoint,
        "queue_name": name,
        "dead_letter_queue_name": f"{name}-dlq",
        **local_credentials(),
        **overrides,
    }
    return SqsQueue(**config)  # type: ignore[arg-type]


@pytest.fixture
def queue(endpoint: str) -> SqsQueue:
    q = make_queue(endpoint)
    q.ensure_queues()
    return q


def counts(queue: SqsQueue, name: str | None = None) -> tuple[int, int]:
    """(visible, in flight)"""
    attrs = queue.queue_attributes(name)
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


class Ticker:
    """Evaluates the sensor as the daemon does (evaluate_tick), carrying the cursor."""

    def __init__(self, queue: SqsQueue, db: FakeAmopDb, instance: DagsterInstance) -> None:
        self.queue = queue
        self.db = db
        self.instance = instance
        self.cursor: str | None = None
        self.sensor = build_queue_sensor(stand_in_job, minimum_interval_seconds=5)

    def __call__(self) -> list[RunRequest]:
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={
                "queue": self.queue,
                "amop_db": self.db,
                "tenant_config": FakeTenantConfig(),
            },
        )
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return list(data.run_requests or [])

    def create_run(self, request: RunRequest) -> None:
        """What the daemon does with a RunRequest (the run exists, tagged with its key)."""
        assert request.run_key
        self.instance.create_run_for_job(
            job_def=stand_in_job,
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )


# -- the resource ------------------------------------------------------------------------------


def test_nothing_connects_at_construction() -> None:
    q = SqsQueue(endpoint_url="http://127.0.0.1:9", **local_credentials())
    assert q._client is None


def test_ensure_queues_creates_queue_and_dlq_with_redrive(endpoint: str) -> None:
    q = make_queue(endpoint, visibility_timeout_seconds=45, max_receive_count=4)
    first = q.ensure_queues()
    again = q.ensure_queues()  # idempotent
    assert first == again
    assert first["queue_url"].endswith(f"/{q.queue_name}")
    assert first["dead_letter_queue_url"].endswith(f"/{q.dead_letter_queue_name}")
    attrs = q.queue_attributes()
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == first["dead_letter_queue_arn"]
    assert int(redrive["maxReceiveCount"]) == 4
    assert attrs["VisibilityTimeout"] == "45"
    assert counts(q, q.dead_letter_queue_name) == (0, 0)


def test_create_if_missing_creates_and_recreates_the_queues(endpoint: str) -> None:
    q = make_queue(endpoint, create_if_missing=True)
    q.send("first")  # no ensure_queues() call: created on first use
    assert "RedrivePolicy" in q.queue_attributes()
    # A restarted local server forgets its queues: they are created again.
    LocalSqsServer.reset_endpoint(endpoint)
    q.send("second")
    assert [m.body for m in q.receive()] == ["second"]
    strict = make_queue(endpoint)
    with pytest.raises(QueueMissing):
        strict.send("nowhere")


def test_send_receive_delete(queue: SqsQueue) -> None:
    message_id = queue.send({"bulk_change_id": 3}, {"Source": "test"})
    [message] = queue.receive(10)
    assert message.message_id == message_id
    assert json.loads(message.body) == {"bulk_change_id": 3}
    assert message.attributes == {"Source": "test"}
    assert message.receive_count == 1
    assert counts(queue) == (0, 1)
    queue.delete(message.receipt_handle)
    assert counts(queue) == (0, 0)
    assert queue.receive(10) == []
    with pytest.raises(ReceiptHandleInvalid):
        queue.delete("not-a-receipt-handle")


def test_redelivery_after_visibility_timeout(endpoint: str) -> None:
    q = make_queue(endpoint, visibility_timeout_seconds=1)
    q.ensure_queues()
    q.send("hello")
    [first] = q.receive()
    assert q.receive() == []  # hidden while in flight
    time.sleep(1.2)
    [again] = q.receive()
    assert again.message_id == first.message_id
    assert again.receive_count == 2
    assert again.receipt_handle != first.receipt_handle


def test_redrive_policy_moves_a_message_received_too_often(endpoint: str) -> None:
    q = make_queue(endpoint, max_receive_count=2)
    q.ensure_queues()
    q.send("never handled")
    for _ in range(2):
        assert len(q.receive(visibility_timeout_seconds=0)) == 1
    assert q.receive(visibility_timeout_seconds=0) == []  # moved by SQS
    [dead] = q.list_dead_letters(10)
    assert dead.body == "never handled"


def test_dead_letter_carries_the_reason(queue: SqsQueue) -> None:
    message_id = queue.send("garbage", {"BulkChangeId": "x1", "Source": "portal"})
    [message] = queue.receive()
    queue.dead_letter(message, "attribute BulkChangeId must be digits,\n got 'x1' " + "!" * 400)
    assert counts(queue) == (0, 0)
    [dead] = queue.list_dead_letters(10)
    assert dead.body == "garbage"
    assert dead.attributes["OriginalMessageId"] == message_id
    assert dead.attributes["BulkChangeId"] == "x1" and dead.attributes["Source"] == "portal"
    reason = dead.attributes["DeadLetterReason"]
    assert reason.startswith("attribute BulkChangeId must be digits, got 'x1' !!!")
    assert len(reason) <= 256 and "\n" not in reason
    # Looking does not consume.
    assert [m.message_id for m in queue.list_dead_letters(10)] == [dead.message_id]


# -- the sensor against the server -------------------------------------------------------------


def test_message_deleted_only_once_its_run_exists(queue: SqsQueue) -> None:
    ticker = Ticker(queue, FakeAmopDb({5: FakeBulkChange(5)}), DagsterInstance.ephemeral())
    queue.send({"bulk_change_id": 5})
    [request] = ticker()
    assert request.run_key == "bulk_change_5"
    assert counts(queue) == (0, 1)  # in flight, not deleted
    assert [p.run_key for p in load_cursor(ticker.cursor)] == ["bulk_change_5"]

    assert ticker() == []  # no run yet: the message stays
    assert counts(queue) == (0, 1)
    assert len(load_cursor(ticker.cursor)) == 1

    ticker.create_run(request)
    assert ticker() == []  # the run exists: deleted now
    assert counts(queue) == (0, 0)
    assert load_cursor(ticker.cursor) == []


def test_duplicate_messages_for_one_bulk_change_give_one_run(queue: SqsQueue) -> None:
    ticker = Ticker(queue, FakeAmopDb({5: FakeBulkChange(5)}), DagsterInstance.ephemeral())
    queue.send({"bulk_change_id": 5})
    queue.send("prior system", {"BulkChangeId": "5"})
    [request] = ticker()
    ticker.create_run(request)
    queue.send({"bulk_change_id": 5})  # a late duplicate
    assert ticker() == []
    assert counts(queue) == (0, 0)
    assert len(ticker.instance.get_runs()) == 1
    assert queue.list_dead_letters(10) == []


def test_redelivered_message_asks_again_with_the_same_key_then_is_deleted(
    endpoint: str,
) -> None:
    q = make_queue(endpoint, visibility_timeout_seconds=1)
    q.ensure_queues()
    ticker = Ticker(q, FakeAmopDb({6: FakeBulkChange(6)}), DagsterInstance.ephemeral())
    q.send({"bulk_change_id": 6})
    [request] = ticker()
    stale_cursor = ticker.cursor
    # The daemon died before launching: the cursor was not stored, the message comes back.
    ticker.cursor = None
    time.sleep(1.2)
    [again] = ticker()
    assert again.run_key == request.run_key  # the run key keeps it to one run
    [pending] = load_cursor(ticker.cursor)
    assert pending.receipt_handle != load_cursor(stale_cursor)[0].receipt_handle
    ticker.create_run(again)
    ticker()
    assert counts(q) == (0, 0)


def test_expired_receipt_handle_is_fine(endpoint: str) -> None:
    q = make_queue(endpoint, visibility_timeout_seconds=1)
    q.ensure_queues()
    ticker = Ticker(q, FakeAmopDb({6: FakeBulkChange(6)}), DagsterInstance.ephemeral())
    q.send({"bulk_change_id": 6})
    [request] = ticker()
    ticker.create_run(request)
    ticker.cursor = json.dumps(
        [{"run_key": "bulk_change_6", "receipt_handle": "expired-handle", "message_id": "m"}]
    )
    time.sleep(1.2)
    assert ticker() == []  # the pending delete fails quietly; the redelivery is deleted
    assert counts(q) == (0, 0)
    assert load_cursor(ticker.cursor) == []


def test_poison_and_unknown_go_to_the_dlq_with_reasons(queue: SqsQueue) -> None:
    ticker = Ticker(queue, FakeAmopDb({5: FakeBulkChange(5)}), DagsterInstance.ephemeral())
    queue.send("{not json")
    queue.send({"bulk_change_id": 404})
    queue.send({"bulk_change_id": 5})
    assert [r.run_key for r in ticker()] == ["bulk_change_5"]
    reasons = sorted(m.attributes["DeadLetterReason"] for m in queue.list_dead_letters(10))
    assert len(reasons) == 2
    assert reasons[0].startswith("body is not JSON")
    assert reasons[1] == "unknown bulk change 404"


def test_submit_messages_through_the_real_intake(queue: SqsQueue, tmp_path: Path) -> None:
    from bulk_changes.resources.amop_db import AmopDatabase
    from bulk_changes.resources.tenant_config import TenantConfig

    db = AmopDatabase(url=f"sqlite:///{tmp_path / 'amop.db'}")
    # a request with no valid row is refused as a whole: the device must be known
    db.repository().upsert_devices(
        "acme",
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

    def tick() -> list[RunRequest]:
        context = build_sensor_context(
            instance=instance,
            resources={"queue": queue, "amop_db": db, "tenant_config": TenantConfig()},
        )
        return list(sensor_def.evaluate_tick(context).run_requests or [])

    submit = {
        "type": "submit_bulk_change",
        "tenant": "acme",
        "change_type": "device_status",
        "integration": "jasper",
        "devices": [{"iccid": "89014103211118510720", "status": "ACTIVATED"}],
        "requested_by": "queue-test",
    }
    message_id = queue.send(submit)
    queue.send({**submit, "tenant": "nobody"})
    [request] = tick()
    bulk = db.repository().get_bulk_change(int(request.tags["bulk_changes/bulk_change_id"]))
    assert bulk is not None
    assert bulk.idempotency_key == f"sqs:{message_id}" and bulk.source == "sqs"
    assert request.tags["bulk_changes/tenant"] == "acme"
    [dead] = queue.list_dead_letters(10)
    assert "unknown tenant 'nobody'" in dead.attributes["DeadLetterReason"]
