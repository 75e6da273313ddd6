"""The CLI as an operator uses it, against a SQLite AMOP database and a local SQS server."""

from __future__ import annotations

import json

import pytest

from bulk_changes import cli
from bulk_changes.db.engine import make_engine
from bulk_changes.db.schema import upgrade
from bulk_changes.resources.local_sqs import LocalSqsServer
from bulk_changes.resources.queue import SqsQueue
from bulk_changes_tests.helpers import iccid


@pytest.fixture
def env(tmp_path, monkeypatch):
    server = LocalSqsServer(port=0)
    endpoint = server.start()
    monkeypatch.setenv("BULK_CHANGES_DB_URL", f"sqlite:///{tmp_path / 'amop.sqlite'}")
    monkeypatch.setenv("BULK_CHANGES_SQS_ENDPOINT", endpoint)
    monkeypatch.setenv("BULK_CHANGES_QUEUE", "cli-test")
    monkeypatch.setenv("BULK_CHANGES_DLQ", "cli-test-dlq")
    yield SqsQueue(
        endpoint_url=endpoint,
        queue_name="cli-test",
        dead_letter_queue_name="cli-test-dlq",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    server.stop()


def test_import_submit_and_status_json(env, tmp_path, capsys):
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        "iccid,integration,status,revio_service_id\n"
        + "".join(f"{iccid(i)},jasper,ACTIVATED,{100 + i}\n" for i in range(3))
    )
    assert cli.main(["devices", "import", str(inventory), "--tenant", "acme"]) == 0
    assert cli.main(["devices", "import", str(inventory), "--tenant", "acme"]) == 0
    assert "0 new, 3 updated" in capsys.readouterr().out

    changes = tmp_path / "changes.csv"
    changes.write_text(f"iccid,status\n{iccid(0)},DEACTIVATED\n{iccid(1)},SLEEPING\n")
    args = [
        "submit",
        str(changes),
        "--tenant",
        "acme",
        "--type",
        "device_status",
        "--integration",
        "jasper",
    ]
    assert cli.main([*args, "--idempotency-key", "t-1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accepted"] == 1
    assert result["rejected"] == [
        {"row": 2, "line": 3, "field": "status", "reason": result["rejected"][0]["reason"]}
    ]
    assert "SLEEPING" in result["rejected"][0]["reason"]

    assert cli.main([*args, "--idempotency-key", "t-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == result["id"]

    messages = env.receive(max_messages=10)
    assert {json.loads(m.body)["bulk_change_id"] for m in messages} == {result["id"]}

    assert cli.main(["status", str(result["id"]), "--json", "--devices"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "NEW"
    assert [(d["row"], d["status"]) for d in status["devices"]] == [(1, "NEW"), (2, "ERROR")]


def test_file_with_a_wrong_header_exits_2_naming_it(env, tmp_path, capsys):
    changes = tmp_path / "changes.csv"
    changes.write_text("iccid,colour\n1,red\n")
    code = cli.main(
        [
            "submit",
            str(changes),
            "--tenant",
            "acme",
            "--type",
            "device_status",
            "--integration",
            "jasper",
        ]
    )
    assert code == 2
    assert "colour" in capsys.readouterr().err


def test_status_of_unknown_bulk_change_exits_1(env, tmp_path, capsys):
    upgrade(make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}"))
    assert cli.main(["status", "999"]) == 1
    assert "no bulk change 999" in capsys.readouterr().err
