"""Hostile submit messages through the real queue sensor, a real SQS-protocol server and the
AMOP database on SQLite and PostgreSQL: refused requests go to the dead-letter queue with
their reason; rows that would break later are stored as errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context, job, op

from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.local_sqs import LocalSqsServer, local_credentials
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.sensors.sqs_sensor import build_queue_sensor
from bulk_changes_tests.helpers import iccid


@op(config_schema={"bulk_change_id": int, "retry_failed_only": bool})
def load_device_changes(context) -> int:  # type: ignore[no-untyped-def]
    return int(context.op_config["bulk_change_id"])


@job
def stand_in_job() -> None:
    load_device_changes()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = LocalSqsServer(port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def queue(endpoint: str) -> SqsQueue:
    name = f"hostile-{uuid.uuid4().hex[:10]}"
    q = SqsQueue(
        endpoint_url=endpoint,
        queue_name=name,
        dead_letter_queue_name=f"{name}-dlq",
        **local_credentials(),  # type: ignore[arg-type]
    )
    q.ensure_queues()
    return q


class Sensor:
    """The queue sensor evaluated as the daemon does, on a real AMOP database."""

    def __init__(self, queue: SqsQueue, db_url: str) -> None:
        self.queue = queue
        self.db = AmopDatabase(url=db_url)
        self.instance = DagsterInstance.ephemeral()
        self.sensor = build_queue_sensor(stand_in_job)
        self.db.repository().upsert_devices(
            "acme",
            [
                {"integration": "jasper", "iccid": iccid(i), "device_key": iccid(i)}
                for i in range(3)
            ],
        )

    def tick(self) -> list[RunRequest]:
        context = build_sensor_context(
            instance=self.instance,
            resources={"queue": self.queue, "amop_db": self.db, "tenant_config": TenantConfig()},
        )
        return list(self.sensor.evaluate_tick(context).run_requests or [])

    def dead_letter_reasons(self) -> list[str]:
        return [m.attributes["DeadLetterReason"] for m in self.queue.list_dead_letters(10)]


@pytest.fixture
def sensor(queue: SqsQueue, any_db_url: str, any_engine: object) -> Sensor:
    # any_engine: the schema is fresh for each test (PostgreSQL's is dropped and upgraded)
    return Sensor(queue, any_db_url)


def submit(devices: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "type": "submit_bulk_change",
        "tenant": "acme",
        "change_type": "username_cost_center",
        "integration": "jasper",
        "devices": devices,
        **extra,
    }


def test_a_key_sent_again_with_other_devices_is_dead_lettered_naming_the_first(queue, sensor):
    queue.send(submit([{"iccid": iccid(0), "username": "ann"}], idempotency_key="order-7"))
    [first] = sensor.tick()
    bulk_id = first.tags["bulk_changes/bulk_change_id"]
    queue.send(submit([{"iccid": iccid(1), "username": "ann"}], idempotency_key="order-7"))
    assert sensor.tick() == []
    assert sensor.dead_letter_reasons() == [
        f"submit_bulk_change refused: idempotency key 'order-7' was already used for bulk "
        f"change {bulk_id} with a different request (other devices or values); "
        "send it with a new key"
    ]


def test_a_key_sent_again_with_the_same_devices_is_the_first_bulk_change(queue, sensor):
    message = submit([{"iccid": iccid(0), "username": "ann"}], idempotency_key="order-8")
    queue.send(message)
    [first] = sensor.tick()
    queue.send(message)
    sensor.tick()  # the run exists with its key: the repeat asks for no second one
    assert sensor.dead_letter_reasons() == []
    keys = {first.tags["bulk_changes/bulk_change_id"]}
    repo = sensor.db.repository()
    assert {str(b.id) for b in repo.list_bulk_changes()} == keys


def test_a_nul_in_a_username_is_an_error_row_not_a_failed_database_step(queue, sensor):
    queue.send(
        submit([{"iccid": iccid(0), "username": "a\u0000b"}, {"iccid": iccid(1), "username": "c"}])
    )
    [request] = sensor.tick()
    bulk_id = int(request.tags["bulk_changes/bulk_change_id"])
    changes = sensor.db.repository().device_changes_of(bulk_id)
    assert [(c.row_number, c.status, c.last_error) for c in changes] == [
        (1, "ERROR", "control character U+0000 at position 2; remove it"),
        (2, "NEW", None),
    ]


def test_an_unknown_tenant_is_dead_lettered_without_listing_tenants(queue, sensor):
    queue.send({**submit([{"iccid": iccid(0), "username": "a"}]), "tenant": "initech"})
    assert sensor.tick() == []
    assert sensor.dead_letter_reasons() == ["submit_bulk_change refused: unknown tenant 'initech'"]


def test_a_message_nested_100000_deep_is_dead_lettered_with_its_reason(queue, sensor):
    queue.send('{"devices": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert sensor.tick() == []
    [reason] = sensor.dead_letter_reasons()
    assert reason.startswith("body is not JSON (RecursionError")
