"""`bulk-changes retry ID` and `bulk-changes cancel ID` through the real CLI (subprocess),
against a SQLite AMOP database and a local SQS server. Their runs through the sensor and the
UI are in bulk_changes_tests/browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.resources.local_sqs import LocalSqsServer
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes_tests.conftest import inventory, submit


@pytest.fixture
def env(tmp_path):
    server = LocalSqsServer(port=0)
    endpoint = server.start()
    variables = {
        **os.environ,
        "BULK_CHANGES_HOME": str(tmp_path),
        "BULK_CHANGES_DB_URL": f"sqlite:///{tmp_path / 'amop.sqlite'}",
        "BULK_CHANGES_SQS_ENDPOINT": endpoint,
        "BULK_CHANGES_QUEUE": "ops-test",
        "BULK_CHANGES_DLQ": "ops-test-dlq",
    }
    variables.pop("DAGSTER_HOME", None)
    queue = SqsQueue(
        endpoint_url=endpoint,
        queue_name="ops-test",
        dead_letter_queue_name="ops-test-dlq",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    queue.ensure_queues()
    engine = make_engine(variables["BULK_CHANGES_DB_URL"])
    upgrade(engine)
    yield variables, queue, Repository(engine)
    engine.dispose()
    server.stop()


def cli(variables, *args):
    return subprocess.run(
        [sys.executable, "-m", "bulk_changes.cli", *args],
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
    )


def bulk_change(repo, n=3):
    rows = inventory(n, "jasper")
    repo.upsert_devices("acme", rows)
    return submit(
        repo,
        load_settings(),
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
    ).id


def set_statuses(repo, bulk_id, bulk_status, device_statuses):
    changes = repo.device_changes_of(bulk_id)  # read before the write transaction (SQLite)
    with repo.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE bulk_changes SET status = ? WHERE id = ?", (bulk_status, bulk_id)
        )
        for device_change, status in zip(changes, device_statuses, strict=True):
            conn.exec_driver_sql(
                "UPDATE device_changes SET status = ? WHERE id = ?", (status, device_change.id)
            )


def test_retry_sends_a_retry_request_for_the_bulk_change(env):
    variables, queue, repo = env
    bulk_id = bulk_change(repo)
    set_statuses(repo, bulk_id, "PROCESSED_WITH_ERRORS", ["PROCESSED", "API_FAILED", "ERROR"])
    done = cli(variables, "retry", str(bulk_id))
    assert done.returncode == 0, done.stderr
    [message] = queue.receive(10)
    body = json.loads(message.body)
    assert (body["bulk_change_id"], body["retry_failed"]) == (bulk_id, True)
    assert body["request_id"].startswith("cli-")
    assert "1 API_FAILED" in done.stdout


def test_retry_of_a_bulk_change_still_processing_is_refused_and_sends_nothing(env):
    variables, queue, repo = env
    bulk_id = bulk_change(repo)
    set_statuses(repo, bulk_id, "PROCESSING", ["PROCESSED", "NEW", "NEW"])
    done = cli(variables, "retry", str(bulk_id))
    assert done.returncode == 1 and "retry once it is final" in done.stderr
    assert queue.receive(10) == []


def test_retry_of_an_unknown_bulk_change_exits_1_naming_it(env):
    variables, _, _ = env
    done = cli(variables, "retry", "999")
    assert done.returncode == 1 and "no bulk change 999" in done.stderr


def test_cancel_without_a_run_makes_the_bulk_change_and_its_devices_cancelled(env):
    variables, _, repo = env
    bulk_id = bulk_change(repo)
    done = cli(variables, "cancel", str(bulk_id))
    assert done.returncode == 0, done.stderr
    assert repo.get_bulk_change(bulk_id).status == "CANCELLED"
    reasons = {c.last_error for c in repo.device_changes_of(bulk_id)}
    assert reasons == {"stopped by an operator before it started"}


def test_cancel_of_a_final_bulk_change_changes_nothing(env):
    variables, _, repo = env
    bulk_id = bulk_change(repo)
    set_statuses(repo, bulk_id, "PROCESSED", ["PROCESSED"] * 3)
    done = cli(variables, "cancel", str(bulk_id))
    assert done.returncode == 1 and "already PROCESSED" in done.stderr
    assert repo.counts(bulk_id) == {"PROCESSED": 3}
