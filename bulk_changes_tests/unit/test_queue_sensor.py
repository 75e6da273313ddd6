"""The queue sensor with build_sensor_context: a real SqsQueue on a local moto server, fakes
of the AMOP repository and of the tenant configuration."""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    OpExecutionContext,
    RunRequest,
    SensorResult,
    build_sensor_context,
    job,
    op,
)

from bulk_changes.domain.messages import SubmitMessage
from bulk_changes.intake import IntakeError
from bulk_changes.resources.local_sqs import LocalSqsServer, local_credentials
from bulk_changes.resources.queue import QueueMessage, SqsQueue
from bulk_changes.sensors.sqs_sensor import QueueTick, build_queue_sensor, load_cursor


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
    change_type: str = "username_cost_center"
    integration: str = "jasper"
    status: str = "NEW"


@dataclass
class FakeRepository:
    bulk_changes: dict[int, FakeBulkChange] = field(default_factory=dict)
    fail_with: Exception | None = None

    def get_bulk_change(self, bulk_change_id: int) -> FakeBulkChange | None:
        if self.fail_with is not None:
            raise self.fail_with
        return self.bulk_changes.get(bulk_change_id)


@dataclass
class FakeAmopDb:
    repo: FakeRepository

    def repository(self) -> FakeRepository:
        return self.repo


class FakeTenantConfig:
    def settings(self) -> str:
        return "settings"


@dataclass
class FakeSubmit:
    """Stores a submit message as bulk change 500 (same key -> same bulk change)."""

    repo: FakeRepository
    calls: list[SubmitMessage] = field(default_factory=list)
    by_key: dict[str, int] = field(default_factory=dict)

    def __call__(self, repo: Any, settings: Any, message: SubmitMessage) -> int:
        assert settings == "settings"
        self.calls.append(message)
        if message.tenant == "nobody":
            raise IntakeError("unknown tenant 'nobody'")
        if message.idempotency_key not in self.by_key:
            new_id = 500 + len(self.by_key)
            self.by_key[message.idempotency_key] = new_id
            repo.bulk_changes[new_id] = FakeBulkChange(
                new_id, message.tenant, message.change_type, message.integration
            )
        return self.by_key[message.idempotency_key]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = LocalSqsServer(port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def queue(endpoint: str) -> SqsQueue:
    name = f"unit-{uuid.uuid4().hex[:10]}"
    q = SqsQueue(
        endpoint_url=endpoint,
        queue_name=name,
        dead_letter_queue_name=f"{name}-dlq",
        max_receive_count=3,
        **local_credentials(),
    )
    q.ensure_queues()
    return q


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository(
        {7: FakeBulkChange(7), 8: FakeBulkChange(8, "beta", integration="telegence")}
    )


@pytest.fixture
def submit(repo: FakeRepository) -> FakeSubmit:
    return FakeSubmit(repo)


def tick(
    queue: SqsQueue,
    repo: FakeRepository,
    submit: FakeSubmit,
    instance: DagsterInstance,
    cursor: str | None = None,
    long_poll_seconds: int = 0,
    max_messages: int = 30,
) -> SensorResult:
    sensor_def = build_queue_sensor(
        stand_in_job,
        minimum_interval_seconds=5,
        submit=submit,
        long_poll_seconds=long_poll_seconds,
        max_messages=max_messages,
    )
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "queue": queue,
            "amop_db": FakeAmopDb(repo),
            "tenant_config": FakeTenantConfig(),
        },
    )
    result = sensor_def(context)
    assert isinstance(result, SensorResult)
    return result


def requests_of(result: SensorResult) -> list[RunRequest]:
    return list(result.run_requests or [])


def in_flight(queue: SqsQueue) -> tuple[int, int]:
    attrs = queue.queue_attributes()
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_new_message_gives_one_run_request(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    message_id = queue.send({"bulk_change_id": 8})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    [request] = requests_of(result)
    assert request.run_key == "bulk_change_8"
    assert {
        "bulk_changes/tenant": "beta",
        "bulk_changes/bulk_change_id": "8",
        "bulk_changes/change_type": "username_cost_center",
        "bulk_changes/integration": "telegence",
    }.items() <= request.tags.items()
    # the bulk change's partition; its config (every run of a bulk change also retries its
    # API_FAILED devices: a new one has none)
    assert request.tags["dagster/partition"] == "8"
    assert request.run_config == {
        "ops": {"load_device_changes": {"config": {"bulk_change_id": 8, "retry_failed_only": True}}}
    }
    assert result.dynamic_partitions_requests[0].partition_keys == ["8"]
    # Not deleted in this tick: its receipt handle waits in the cursor for the run.
    [pending] = load_cursor(result.cursor)
    assert pending.run_key == "bulk_change_8" and pending.message_id == message_id
    assert in_flight(queue) == (0, 1)
    assert stand_in_job.execute_in_process(run_config=request.run_config).success


def test_a_message_sent_while_a_tick_listens_gets_its_run_in_that_tick(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    import threading

    sender = threading.Timer(0.5, lambda: queue.send({"bulk_change_id": 7}))
    sender.start()
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), long_poll_seconds=10)
    sender.join()
    [request] = requests_of(result)
    assert request.run_key == "bulk_change_7"


def test_messages_sent_one_after_the_other_get_their_runs_in_the_same_tick(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    import threading

    def send_two() -> None:
        queue.send({"bulk_change_id": 7})
        time.sleep(0.03)  # the sender's next message, a few milliseconds on
        queue.send({"bulk_change_id": 8})

    sender = threading.Timer(0.5, send_two)
    sender.start()
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), long_poll_seconds=10)
    sender.join()
    assert sorted(r.run_key for r in requests_of(result)) == ["bulk_change_7", "bulk_change_8"]


def test_a_tick_that_only_dead_lettered_keeps_listening_for_a_run(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    import threading

    queue.send({"bulk_change_id": 999})  # unknown: dead-lettered
    sender = threading.Timer(1.0, lambda: queue.send({"bulk_change_id": 7}))
    sender.start()
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), long_poll_seconds=10)
    sender.join()
    [request] = requests_of(result)
    assert request.run_key == "bulk_change_7"


def test_a_burst_after_a_dead_lettered_message_gets_all_its_runs_in_the_same_tick(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    import threading

    repo.bulk_changes[9] = FakeBulkChange(9)
    queue.send({"bulk_change_id": 999})  # unknown: dead-lettered, the tick listens on

    def send_three() -> None:
        for bulk_change_id in (7, 8, 9):
            queue.send({"bulk_change_id": bulk_change_id})
            time.sleep(0.01)

    sender = threading.Timer(1.0, send_three)
    sender.start()
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), long_poll_seconds=10)
    sender.join()
    assert sorted(r.run_key for r in requests_of(result)) == [
        "bulk_change_7",
        "bulk_change_8",
        "bulk_change_9",
    ]


def test_a_tick_takes_at_most_its_message_bound_and_leaves_the_rest_queued(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    for bulk_change_id in range(100, 125):
        repo.bulk_changes[bulk_change_id] = FakeBulkChange(bulk_change_id)
        queue.send({"bulk_change_id": bulk_change_id})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), max_messages=12)
    assert len(requests_of(result)) == 12
    assert len(queue.receive(10)) + len(queue.receive(10)) == 13


def test_a_tick_with_deletions_to_settle_does_not_listen(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:

    queue.send({"bulk_change_id": 7})
    first = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert load_cursor(first.cursor)  # its message waits for the run
    started = time.monotonic()
    tick(queue, repo, submit, DagsterInstance.ephemeral(), first.cursor, long_poll_seconds=10)
    # the run does not exist yet, so its message must be checked again at the next tick
    assert time.monotonic() - started < 5


def test_poison_message_goes_to_the_dlq_and_the_sensor_carries_on(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    bad_id = queue.send("this is not json")
    queue.send({"bulk_change_id": 7})
    queue.send({"bulk_change_id": 7, "colour": "red"})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert [r.run_key for r in requests_of(result)] == ["bulk_change_7"]
    dead = {m.attributes["OriginalMessageId"]: m for m in queue.list_dead_letters(10)}
    assert len(dead) == 2
    assert "not JSON" in dead[bad_id].attributes["DeadLetterReason"]
    assert dead[bad_id].body == "this is not json"
    reasons = [m.attributes["DeadLetterReason"] for m in dead.values()]
    assert any("'colour'" in r for r in reasons)


def test_unknown_bulk_change_goes_to_the_dlq(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    queue.send("unused", {"BulkChangeId": "99"})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert requests_of(result) == []
    assert result.skip_reason is not None
    [dead] = queue.list_dead_letters(10)
    assert dead.attributes["DeadLetterReason"] == "unknown bulk change 99"
    assert dead.attributes["BulkChangeId"] == "99"
    assert in_flight(queue) == (0, 0)


def test_several_messages_for_one_bulk_change_give_one_request(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    queue.send({"bulk_change_id": 7})
    queue.send("prior system", {"BulkChangeId": "7"})
    queue.send({"bulk_change_id": 7})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert [r.run_key for r in requests_of(result)] == ["bulk_change_7"]
    assert len(load_cursor(result.cursor)) == 3


def test_final_bulk_change_message_is_deleted(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    repo.bulk_changes[7].status = "PROCESSED"
    queue.send({"bulk_change_id": 7})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert requests_of(result) == []
    assert load_cursor(result.cursor) == []
    assert in_flight(queue) == (0, 0)


def test_retry_request_on_a_final_bulk_change_gives_a_retry_run(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    repo.bulk_changes[7].status = "PROCESSED_WITH_ERRORS"
    queue.send({"bulk_change_id": 7, "retry_failed": True, "request_id": "r-2"})
    [request] = requests_of(tick(queue, repo, submit, DagsterInstance.ephemeral()))
    assert request.run_key == "bulk_change_7_retry_r_2_" + request.run_key.rsplit("_", 1)[1]
    assert request.run_config["ops"]["load_device_changes"]["config"]["retry_failed_only"] is True


def test_submit_message_is_stored_then_run(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    body = {
        "type": "submit_bulk_change",
        "tenant": "acme",
        "change_type": "device_status",
        "integration": "jasper",
        "devices": [{"iccid": "89014103211118510720", "status": "ACTIVATED"}],
    }
    message_id = queue.send(body)
    [request] = requests_of(tick(queue, repo, submit, DagsterInstance.ephemeral()))
    assert request.run_key == "bulk_change_500"
    assert request.tags["bulk_changes/change_type"] == "device_status"
    [call] = submit.calls
    assert call.idempotency_key == f"sqs:{message_id}"
    assert call.devices == body["devices"]


def test_submit_refused_by_intake_goes_to_the_dlq(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    body = {
        "type": "submit_bulk_change",
        "tenant": "nobody",
        "change_type": "device_status",
        "integration": "jasper",
        "devices": [{"iccid": "1"}],
    }
    queue.send(body)
    assert requests_of(tick(queue, repo, submit, DagsterInstance.ephemeral())) == []
    [dead] = queue.list_dead_letters(10)
    assert "unknown tenant 'nobody'" in dead.attributes["DeadLetterReason"]
    assert json.loads(dead.body) == body


def test_unexpected_error_leaves_the_message_on_the_queue(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit
) -> None:
    repo.fail_with = RuntimeError("database is down")
    queue.send({"bulk_change_id": 7})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert requests_of(result) == [] and queue.list_dead_letters(10) == []
    assert in_flight(queue) == (0, 1)  # it comes back after the visibility timeout


def test_unexpected_error_on_the_last_receive_dead_letters_with_the_error(
    endpoint: str, repo: FakeRepository, submit: FakeSubmit
) -> None:
    name = f"unit-{uuid.uuid4().hex[:10]}"
    queue = SqsQueue(
        endpoint_url=endpoint,
        queue_name=name,
        dead_letter_queue_name=f"{name}-dlq",
        max_receive_count=3,
        visibility_timeout_seconds=0,  # back at once: received 3 times in one tick
        **local_credentials(),
    )
    queue.ensure_queues()
    repo.fail_with = RuntimeError("database is down")
    queue.send({"bulk_change_id": 7})
    result = tick(queue, repo, submit, DagsterInstance.ephemeral())
    assert requests_of(result) == []
    [dead] = queue.list_dead_letters(10)
    reason = dead.attributes["DeadLetterReason"]
    assert "failed 3 times" in reason and "database is down" in reason


def test_a_tick_listening_when_the_code_server_stops_ends_at_once_and_leaves_the_queue_as_it_was(
    queue: SqsQueue, repo: FakeRepository, submit: FakeSubmit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from bulk_changes.sensors import long_poll

    monkeypatch.setattr(long_poll, "_stopping", False)
    waits: list[int] = []
    receive = SqsQueue.receive

    answered: list[int] = []

    def recorded(self: SqsQueue, *args: Any, **kwargs: Any) -> list[QueueMessage]:
        waits.append(kwargs.get("wait_time_seconds", 0))
        messages = receive(self, *args, **kwargs)
        answered.append(len(messages))
        return messages

    monkeypatch.setattr(SqsQueue, "receive", recorded)
    stop = threading.Timer(0.5, long_poll.stop_long_polls)
    stop.start()
    # 50 s to listen: receives of 20, 20 and 10 s, unless the stop ends them
    result = tick(queue, repo, submit, DagsterInstance.ephemeral(), long_poll_seconds=50)
    stop.join()
    # one receive, given up while SQS still held it (it answers up to 20 s later)
    assert waits == [20] and answered == []
    assert requests_of(result) == []
    assert in_flight(queue) == (0, 0)


@dataclass
class WaitRecordingQueue:
    """An empty queue that records how long each receive was asked to wait."""

    waits: list[int] = field(default_factory=list)

    def receive(self, at_most: int, wait_time_seconds: int = 0) -> list[Any]:
        self.waits.append(wait_time_seconds)
        return []


def test_a_tick_listens_until_its_deadline_counted_from_when_it_began(
    repo: FakeRepository, submit: FakeSubmit
) -> None:
    queue = WaitRecordingQueue()
    context = build_sensor_context(instance=DagsterInstance.ephemeral())
    began_three_seconds_ago = time.monotonic() - 3.0
    tick_ = QueueTick(
        context,
        queue=queue,
        amop_db=FakeAmopDb(repo),
        tenant_config=FakeTenantConfig(),
        submit=submit,
        max_messages=30,
        pending_ttl_seconds=60,
        long_poll_seconds=5.5,
        began=began_three_seconds_ago,
    )
    tick_.receive_all()
    # 2.5 s of its 5.5 left: the whole seconds of it, so that the tick is over before the
    # daemon's sensor loop comes back to it (a tick still running then waits a loop more)
    assert queue.waits == [2]


class ClockedQueue:
    """An empty queue whose receives take the whole wait they are asked for, on a clock
    of its own (the sensor module's ``time`` is replaced by it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[int] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def receive(self, at_most: int, wait_time_seconds: int = 0) -> list[Any]:
        self.waits.append(wait_time_seconds)
        self.now += wait_time_seconds
        return []


def test_a_long_poll_longer_than_sqs_allows_is_made_of_receives_of_at_most_20_seconds(
    repo: FakeRepository, submit: FakeSubmit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulk_changes.sensors import sqs_sensor

    queue = ClockedQueue()
    monkeypatch.setattr(sqs_sensor, "time", queue)
    tick_ = QueueTick(
        build_sensor_context(instance=DagsterInstance.ephemeral()),
        queue=queue,
        amop_db=FakeAmopDb(repo),
        tenant_config=FakeTenantConfig(),
        submit=submit,
        max_messages=30,
        pending_ttl_seconds=60,
        long_poll_seconds=58.5,
        began=queue.now,
    )
    tick_.receive_all()
    # SQS refuses a WaitTimeSeconds over 20; the tick still listens until its deadline
    assert queue.waits == [20, 20, 18]
