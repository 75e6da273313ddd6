"""The operator's command line (issue 16), run as a subprocess against a SQLite AMOP
database (PostgreSQL where named) and the real local SQS server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRequest, build_sensor_context
from sqlalchemy import text, update

from bulk_changes.db import schema as t
from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes.paths import write_home_settings
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.local_sqs import LocalSqsServer, local_credentials
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.sensors.sqs_sensor import build_queue_sensor
from bulk_changes_tests.cli_helpers import Cli, submit_args, unique_queue, write_inventory
from bulk_changes_tests.helpers import iccid
from bulk_changes_tests.integration.test_queue_sqs import stand_in_job


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = LocalSqsServer(port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def cli(tmp_path: Path, endpoint: str) -> Cli:
    return Cli.in_folder(tmp_path, BULK_CHANGES_SQS_ENDPOINT=endpoint, **unique_queue())


def queue_of(cli: Cli) -> SqsQueue:
    return SqsQueue(
        endpoint_url=cli.env["BULK_CHANGES_SQS_ENDPOINT"],
        queue_name=cli.env["BULK_CHANGES_QUEUE"],
        dead_letter_queue_name=cli.env["BULK_CHANGES_DLQ"],
        create_if_missing=True,
        **local_credentials(),
    )


def bodies(queue: SqsQueue) -> list[dict]:
    return [json.loads(m.body) for m in queue.receive(10, wait_time_seconds=0)]


def changes_csv(folder: Path, rows: list[tuple[int, str]]) -> Path:
    path = folder / "changes.csv"
    path.write_text(
        "iccid,username,cost_center_1\n" + "".join(f"{iccid(i)},{u},CC-{i}\n" for i, u in rows)
    )
    return path


def stored(cli: Cli, devices: int = 3, rows: int = 2) -> int:
    """Inventory imported and one bulk change submitted (not sent): its id."""
    assert (
        cli.run(
            "devices",
            "import",
            str(write_inventory(cli.cwd / "inv.csv", devices)),
            "--tenant",
            "acme",
        ).returncode
        == 0
    )
    path = changes_csv(cli.cwd, [(i, f"new-{i}") for i in range(rows)])
    return int(cli.json(*submit_args(path), "--no-send", "--json")["id"])


def database(cli: Cli) -> Repository:
    return Repository(make_engine(f"sqlite:///{cli.home / 'amop.sqlite'}"))


def set_status(repo: Repository, bulk_id: int, bulk_status: str, device_status: str) -> None:
    with repo.engine.begin() as conn:
        conn.execute(
            update(t.device_changes)
            .where(t.device_changes.c.bulk_change_id == bulk_id)
            .values(
                status=device_status, last_error="refused" if device_status != "PROCESSED" else None
            )
        )
    repo.finalize(bulk_id)
    assert repo.get_bulk_change(bulk_id).status == bulk_status


# ---- 1. one home -------------------------------------------------------------------------


def test_cli_reads_the_database_the_home_settings_name(cli: Cli, tmp_path: Path) -> None:
    elsewhere = Cli.in_folder(tmp_path / "demo-like", **unique_queue())
    (tmp_path / "demo-like").mkdir()
    bulk_id = stored(elsewhere)
    write_home_settings(
        {"BULK_CHANGES_DB_URL": f"sqlite:///{elsewhere.home / 'amop.sqlite'}"}, cli.home
    )
    assert cli.json("status", str(bulk_id), "--json")["id"] == bulk_id


def test_cli_sends_to_the_queue_the_home_settings_name(cli: Cli, endpoint: str) -> None:
    names = unique_queue()
    write_home_settings({"BULK_CHANGES_SQS_ENDPOINT": endpoint, **names}, cli.home)
    cli.env.pop("BULK_CHANGES_QUEUE")
    cli.env.pop("BULK_CHANGES_DLQ")
    bulk_id = stored(cli)
    assert cli.run("send", str(bulk_id)).returncode == 0
    target = SqsQueue(
        endpoint_url=endpoint,
        queue_name=names["BULK_CHANGES_QUEUE"],
        dead_letter_queue_name=names["BULK_CHANGES_DLQ"],
        **local_credentials(),
    )
    assert bodies(target) == [{"bulk_change_id": bulk_id}]


def _free_demo_port_offset() -> int:
    """An offset that moves every demo port (simulators, SQS, UI) onto free ports, so the
    test runs beside a real demo."""
    import random
    import socket

    from bulk_changes.demo import PORTS

    for _ in range(50):
        offset = random.randrange(20_000, 40_000)
        try:
            for port in PORTS.values():
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free set of demo ports")


def test_demo_writes_its_settings_where_the_cli_looks(tmp_path: Path, monkeypatch) -> None:
    import argparse
    import os

    from bulk_changes.demo import Demo
    from bulk_changes.launcher import stop_stack

    monkeypatch.setenv("BULK_CHANGES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BULK_CHANGES_DEMO_PORT_OFFSET", str(_free_demo_port_offset()))
    saved = dict(os.environ)
    demo = Demo(argparse.Namespace(headless=True, devices=1, timeout=1))
    try:
        demo.prepare()
        stack = demo.start_services()
        stop_stack(stack)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    settings = json.loads((tmp_path / "home" / "settings.json").read_text())
    assert (
        settings["BULK_CHANGES_DB_URL"] == f"sqlite:///{tmp_path / 'home' / 'demo' / 'amop.sqlite'}"
    )


@pytest.mark.parametrize(
    "command", [["status", "1"], ["list"], ["wait", "1"], ["send", "1"], ["export", "1"]]
)
def test_reading_commands_refuse_a_missing_database_with_its_path(cli: Cli, command) -> None:
    done = cli.run(*command)
    assert done.returncode == 4
    assert str(cli.home / "amop.sqlite") in done.stderr
    assert not (cli.home / "amop.sqlite").exists()


def test_a_taken_away_sqlite_file_is_not_replaced_by_an_empty_one(cli: Cli) -> None:
    bulk_id = stored(cli)
    (cli.home / "amop.sqlite").unlink()
    done = cli.run("status", str(bulk_id))
    assert done.returncode == 4 and "no AMOP database at" in done.stderr
    assert not (cli.home / "amop.sqlite").exists()


def test_every_error_names_the_home(cli: Cli) -> None:
    done = cli.run("list")
    assert f"home {cli.home}" in done.stderr


def test_a_broken_database_file_gives_a_message_not_a_traceback(cli: Cli) -> None:
    cli.home.mkdir(parents=True)
    (cli.home / "amop.sqlite").write_bytes(b"this is not a database" * 100)
    done = cli.run("list")
    assert done.returncode == 4
    assert "Traceback" not in done.stderr and "cannot open the AMOP database" in done.stderr


# ---- 2. nothing stored is left unsent -------------------------------------------------------


def test_submit_with_the_queue_down_stores_it_and_exits_3(cli: Cli) -> None:
    write_inventory(cli.cwd / "inv.csv", 2)
    cli.run("devices", "import", str(cli.cwd / "inv.csv"), "--tenant", "acme")
    cli.env["BULK_CHANGES_SQS_ENDPOINT"] = "http://127.0.0.1:9"
    done = cli.run(*submit_args(changes_csv(cli.cwd, [(0, "a")])))
    assert done.returncode == 3
    assert "bulk-changes send 1" in done.stderr
    assert database(cli).get_bulk_change(1) is not None


def test_send_delivers_a_bulk_change_stored_while_the_queue_was_down(cli: Cli, endpoint) -> None:
    write_inventory(cli.cwd / "inv.csv", 2)
    cli.run("devices", "import", str(cli.cwd / "inv.csv"), "--tenant", "acme")
    cli.env["BULK_CHANGES_SQS_ENDPOINT"] = "http://127.0.0.1:9"
    cli.run(*submit_args(changes_csv(cli.cwd, [(0, "a")])))
    cli.env["BULK_CHANGES_SQS_ENDPOINT"] = endpoint
    assert cli.run("send", "1").returncode == 0
    assert bodies(queue_of(cli)) == [{"bulk_change_id": 1}]


def sensor_tick(cli: Cli, instance: DagsterInstance, cursor: str | None = None):
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "queue": queue_of(cli),
            "amop_db": AmopDatabase(url=f"sqlite:///{cli.home / 'amop.sqlite'}"),
            "tenant_config": TenantConfig(),
        },
    )
    return build_queue_sensor(stand_in_job).evaluate_tick(context)


def test_queue_sensor_sends_what_the_submit_could_not(cli: Cli) -> None:
    write_inventory(cli.cwd / "inv.csv", 2)
    cli.run("devices", "import", str(cli.cwd / "inv.csv"), "--tenant", "acme")
    endpoint = cli.env["BULK_CHANGES_SQS_ENDPOINT"]
    cli.env["BULK_CHANGES_SQS_ENDPOINT"] = "http://127.0.0.1:9"
    cli.run(*submit_args(changes_csv(cli.cwd, [(0, "a")])))
    cli.env["BULK_CHANGES_SQS_ENDPOINT"] = endpoint
    [request] = sensor_tick(cli, DagsterInstance.ephemeral()).run_requests
    assert request.tags["bulk_changes/bulk_change_id"] == "1"


def test_run_keys_differ_between_two_amop_databases(cli: Cli, tmp_path: Path) -> None:
    shared = ("BULK_CHANGES_SQS_ENDPOINT", "BULK_CHANGES_QUEUE", "BULK_CHANGES_DLQ")
    (tmp_path / "other").mkdir()
    other = Cli.in_folder(tmp_path / "other", **{k: cli.env[k] for k in shared})
    instance = DagsterInstance.ephemeral()
    keys = []
    for each in (cli, other):
        assert each.run("send", str(stored(each))).returncode == 0
        [request] = sensor_tick(each, instance).run_requests
        keys.append(request.run_key)
    assert keys[0] != keys[1]


def create_run(instance: DagsterInstance, request: RunRequest, status: DagsterRunStatus) -> None:
    instance.create_run_for_job(
        job_def=stand_in_job,
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key},
        status=status,
    )


def test_sensor_asks_a_new_run_when_the_keyed_run_failed_and_the_bulk_change_is_open(
    cli: Cli,
) -> None:
    bulk_id = stored(cli)
    instance = DagsterInstance.ephemeral()
    cli.run("send", str(bulk_id))
    [first] = sensor_tick(cli, instance).run_requests
    create_run(instance, first, DagsterRunStatus.FAILURE)
    cli.run("send", str(bulk_id))
    result = sensor_tick(cli, instance)
    [again] = result.run_requests
    assert again.run_key == f"{first.run_key}_again_2"


def test_sensor_keeps_the_message_of_an_open_bulk_change_whose_run_failed(cli: Cli) -> None:
    bulk_id = stored(cli)
    instance = DagsterInstance.ephemeral()
    cli.run("send", str(bulk_id))
    [first] = sensor_tick(cli, instance).run_requests
    create_run(instance, first, DagsterRunStatus.FAILURE)
    cli.run("send", str(bulk_id))
    result = sensor_tick(cli, instance)
    # not deleted: it waits in the cursor until the new run exists
    assert [p["run_key"] for p in json.loads(result.cursor)] == [f"{first.run_key}_again_2"]


# ---- 3. list, wait, send, export ------------------------------------------------------------


def test_list_filters_by_tenant_and_status(cli: Cli) -> None:
    first = stored(cli)
    second = int(
        cli.json(*submit_args(changes_csv(cli.cwd, [(2, "x")])), "--no-send", "--json")["id"]
    )
    set_status(database(cli), first, "PROCESSED", "PROCESSED")
    assert [r["id"] for r in cli.json("list", "--json")] == [second, first]
    assert [r["id"] for r in cli.json("list", "--status", "PROCESSED", "--json")] == [first]
    assert cli.json("list", "--tenant", "globex", "--json") == []


def test_list_since_a_date_leaves_older_ones_out(cli: Cli) -> None:
    stored(cli)
    assert cli.json("list", "--since", "2999-01-01", "--json") == []
    assert len(cli.json("list", "--since", "2000-01-01", "--json")) == 1


def test_list_refuses_a_date_it_cannot_read(cli: Cli) -> None:
    stored(cli)
    done = cli.run("list", "--since", "yesterday")
    assert done.returncode == 2 and "2026-12-01" in done.stderr


def test_wait_exits_0_when_every_bulk_change_is_processed(cli: Cli) -> None:
    bulk_id = stored(cli)
    set_status(database(cli), bulk_id, "PROCESSED", "PROCESSED")
    assert cli.run("wait", str(bulk_id)).returncode == 0


def test_wait_exits_1_when_one_ended_with_errors(cli: Cli) -> None:
    bulk_id = stored(cli)
    set_status(database(cli), bulk_id, "PROCESSED_WITH_ERRORS", "ERROR")
    assert cli.run("wait", str(bulk_id)).returncode == 1


def test_wait_exits_3_when_not_final_in_time(cli: Cli) -> None:
    bulk_id = stored(cli)
    done = cli.run("wait", str(bulk_id), "--timeout", "0.5")
    assert done.returncode == 3 and "not final" in done.stderr


def test_wait_refuses_an_unknown_bulk_change(cli: Cli) -> None:
    stored(cli)
    assert cli.run("wait", "404").returncode == 1


def test_send_puts_the_stored_bulk_change_on_the_queue(cli: Cli) -> None:
    bulk_id = stored(cli)
    assert cli.run("send", str(bulk_id)).returncode == 0
    assert bodies(queue_of(cli)) == [{"bulk_change_id": bulk_id}]


def finish_one_device(repo: Repository, bulk_id: int, username: str) -> None:
    """The AMOP update the processing makes for the first device (previous kept in audit)."""
    from bulk_changes.domain.model import AuditEntry

    change = repo.device_changes_of(bulk_id)[0]
    device = repo.device(change.device_id)
    repo.finish_device_change(
        bulk_change_id=bulk_id,
        device_change_id=change.id,
        status=DeviceStatus.PROCESSED,
        reason=None,
        step="amop.update_device",
        audit=[
            AuditEntry(
                system="amop",
                outcome="ok",
                description="Update the AMOP device row",
                request={"username": username},
                response={"previous": {"username": device["username"]}},
            )
        ],
        inventory_update={"username": username},
        device_id=change.device_id,
    )


def test_export_csv_has_every_device_with_previous_and_new_values(cli: Cli) -> None:
    bulk_id = stored(cli)
    finish_one_device(database(cli), bulk_id, "new-0")
    assert cli.run("export", str(bulk_id), "--format", "csv").returncode == 0
    frame = pd.read_csv(cli.cwd / f"bulk-change-{bulk_id}.csv", dtype=str, keep_default_na=False)
    assert frame[["device", "status", "previous_username", "new_username"]].values.tolist() == [
        [iccid(0), "PROCESSED", "user-0", "new-0"],
        [iccid(1), "NEW", "user-1", "new-1"],
    ]


def test_export_xlsx_keeps_iccids_whole(cli: Cli) -> None:
    bulk_id = stored(cli)
    out = cli.cwd / "out.xlsx"
    assert cli.run("export", str(bulk_id), "--format", "xlsx", "--output", str(out)).returncode == 0
    frame = pd.read_excel(out, dtype=str)
    assert frame["device"].tolist() == [iccid(0), iccid(1)]


# ---- 4. intake -------------------------------------------------------------------------------


def test_xlsx_request_keeps_20_digit_iccids_and_leading_zeros(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 2)), "--tenant", "acme")
    path = cli.cwd / "changes.xlsx"
    pd.DataFrame(
        {"iccid": [iccid(0), iccid(1)], "username": ["007", "x"], "cost_center_1": ["0042", "1"]}
    ).to_excel(path, index=False)
    bulk_id = cli.json(*submit_args(path), "--no-send", "--json")["id"]
    devices = cli.json("status", str(bulk_id), "--json", "--devices")["devices"]
    assert [d["request"] for d in devices] == [
        {"username": "007", "cost_center_1": "0042"},
        {"username": "x", "cost_center_1": "1"},
    ]
    assert [d["device"] for d in devices] == [iccid(0), iccid(1)]


def test_xlsx_inventory_imports(cli: Cli) -> None:
    path = cli.cwd / "inv.xlsx"
    pd.DataFrame({"iccid": [iccid(5)], "integration": ["jasper"], "username": ["0001"]}).to_excel(
        path, index=False
    )
    assert cli.run("devices", "import", str(path), "--tenant", "acme").returncode == 0
    assert (
        database(cli).devices_by_key("acme", "jasper", [iccid(5)])[iccid(5)]["username"] == "0001"
    )


def test_csv_cells_stay_text(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    path = cli.cwd / "c.csv"
    path.write_text(f"iccid,cost_center_1\n{iccid(0)},000123\n")
    bulk_id = cli.json(*submit_args(path), "--no-send", "--json")["id"]
    [device] = cli.json("status", str(bulk_id), "--json", "--devices")["devices"]
    assert device["request"] == {"cost_center_1": "000123"}


def test_request_with_no_valid_row_is_refused_with_every_reason(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    path = cli.cwd / "bad.csv"
    path.write_text(f"iccid,username\n8901,a\n{iccid(99)},b\n")
    done = cli.run(*submit_args(path))
    assert done.returncode == 2
    assert "row 1 (line 2): iccid" in done.stderr
    assert f"row 2 (line 3): iccid: {iccid(99)} is not in" in done.stderr


def test_request_with_no_valid_row_stores_and_queues_nothing(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    path = cli.cwd / "bad.csv"
    path.write_text("iccid,username\n8901,a\n")
    cli.run(*submit_args(path))
    assert cli.json("list", "--json") == []
    assert bodies(queue_of(cli)) == []


# ---- 5. dry run ------------------------------------------------------------------------------


def test_dry_run_shows_steps_current_and_new_values(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    done = cli.run(*submit_args(changes_csv(cli.cwd, [(0, "ann")])), "--dry-run", "--json")
    [device] = json.loads(done.stdout)["devices"]
    assert device["current"] == {"username": "user-0", "cost_center_1": None}
    assert device["new"] == {"username": "ann", "cost_center_1": "CC-0"}
    assert device["steps"] == [
        "Set username at Jasper",
        "Set cost centers at Rev.io",
        "Update the AMOP device row",
    ]


def test_dry_run_stores_and_sends_nothing(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    assert cli.run(*submit_args(changes_csv(cli.cwd, [(0, "ann")])), "--dry-run").returncode == 0
    assert cli.json("list", "--json") == []
    assert bodies(queue_of(cli)) == []


# ---- 6. history ------------------------------------------------------------------------------


def failed_then_retried(cli: Cli) -> tuple[int, Repository]:
    bulk_id = stored(cli, rows=1)
    repo = database(cli)
    repo.start_processing(bulk_id, "run-one", retry_failed_only=False)
    [change] = repo.device_changes_of(bulk_id)
    for _ in range(3):
        repo.record_attempt_failure(
            bulk_change_id=bulk_id,
            device_change_id=change.id,
            step="jasper.set_username",
            error="jasper HTTP 503: busy",
            audit=[],
            run_id="run-one",
        )
    repo.finish_device_change(
        bulk_change_id=bulk_id,
        device_change_id=change.id,
        status=DeviceStatus.API_FAILED,
        reason="jasper HTTP 503: gave up",
        step="jasper.set_username",
        run_id="run-one",
    )
    repo.finalize(bulk_id)
    repo.start_processing(bulk_id, "run-two", retry_failed_only=True)
    return bulk_id, repo


def test_retry_keeps_the_attempts_of_earlier_runs(cli: Cli) -> None:
    bulk_id, _ = failed_then_retried(cli)
    [device] = cli.json("status", str(bulk_id), "--json", "--devices")["devices"]
    assert device["attempts"] == 3


def test_retry_keeps_the_reasons_of_earlier_runs(cli: Cli) -> None:
    bulk_id, _ = failed_then_retried(cli)
    [device] = cli.json("status", str(bulk_id), "--json", "--devices")["devices"]
    assert [(e["run_id"], e["status"], e["reason"]) for e in device["earlier"]] == [
        ("run-one", "API_FAILED", "jasper HTTP 503: gave up")
    ]


def test_status_lists_every_run(cli: Cli) -> None:
    bulk_id, _ = failed_then_retried(cli)
    runs = cli.json("status", str(bulk_id), "--json")["runs"]
    assert [(r["run_id"], r["retry_failed_only"]) for r in runs] == [
        ("run-one", False),
        ("run-two", True),
    ]


def test_duration_runs_from_creation_to_final(cli: Cli) -> None:
    bulk_id, repo = failed_then_retried(cli)
    [change] = repo.device_changes_of(bulk_id)
    repo.finish_device_change(
        bulk_change_id=bulk_id,
        device_change_id=change.id,
        status=DeviceStatus.PROCESSED,
        reason=None,
        step=None,
    )
    repo.finalize(bulk_id)
    report = cli.json("status", str(bulk_id), "--json")
    bulk = repo.get_bulk_change(bulk_id)
    assert report["duration_seconds"] == (bulk.finished_at - bulk.created_at).total_seconds()


# ---- 7. the simulators with one's own inventory ----------------------------------------------


def test_devices_import_loads_the_running_simulators(cli: Cli) -> None:
    from bulk_changes.simulators import start_simulators

    with start_simulators(jasper_port=0, telegence_port=0, revio_port=0) as sims:
        cli.env.update(
            BULK_CHANGES_JASPER_URL=sims.jasper_url,
            BULK_CHANGES_TELEGENCE_URL=sims.telegence_url,
            BULK_CHANGES_REVIO_URL=sims.revio_url,
        )
        inventory = write_inventory(cli.cwd / "inv.csv", 2)
        done = cli.run("devices", "import", str(inventory), "--tenant", "acme", "--simulators")
        assert done.returncode == 0, done.stderr
        assert sims.jasper.state(iccid(1))["accountCustom1"] == "user-1"
        assert sims.revio.state(701)["number"] == iccid(1)


def test_devices_import_says_how_to_start_simulators_that_do_not_answer(cli: Cli) -> None:
    cli.env["BULK_CHANGES_JASPER_URL"] = "http://127.0.0.1:9/rws/api/v1"
    inventory = write_inventory(cli.cwd / "inv.csv", 1)
    done = cli.run("devices", "import", str(inventory), "--tenant", "acme", "--simulators")
    assert done.returncode == 2 and "bulk-changes simulate" in done.stderr


def test_simulate_serves_the_inventory_it_is_given(cli: Cli) -> None:
    import signal
    import subprocess
    import urllib.request

    from bulk_changes.resources.local_sqs import free_port
    from bulk_changes_tests.cli_helpers import cli_command

    inventory = write_inventory(cli.cwd / "inv.csv", 2)
    port = free_port()
    ports = ["--jasper-port", str(port), "--telegence-port", "0", "--revio-port", "0"]
    server = subprocess.Popen(
        [*cli_command(), "simulate", "--inventory", str(inventory), *ports],
        env=cli.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("revio"):
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state/{iccid(0)}") as answer:
            assert json.loads(answer.read())["accountCustom1"] == "user-0"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


# ---- list, status and export on PostgreSQL ---------------------------------------------------


@pytest.fixture
def pg_url(pg_database: str) -> str:
    engine = make_engine(pg_database)
    with engine.begin() as conn:  # each test starts from an empty database
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return pg_database


@pytest.fixture
def pg_cli(cli: Cli, pg_url: str) -> Cli:
    cli.env["BULK_CHANGES_DB_URL"] = pg_url
    return cli


def pg_stored(cli: Cli) -> int:
    assert (
        cli.run(
            "devices", "import", str(write_inventory(cli.cwd / "inv.csv", 3)), "--tenant", "acme"
        ).returncode
        == 0
    )
    path = changes_csv(cli.cwd, [(0, "new-0"), (1, "new-1")])
    return int(cli.json(*submit_args(path), "--no-send", "--json")["id"])


def test_list_on_postgresql(pg_cli: Cli) -> None:
    bulk_id = pg_stored(pg_cli)
    [row] = pg_cli.json("list", "--tenant", "acme", "--json")
    assert (row["id"], row["devices"], row["counts"]) == (bulk_id, 2, {"NEW": 2})


def test_status_on_postgresql(pg_cli: Cli) -> None:
    bulk_id = pg_stored(pg_cli)
    report = pg_cli.json("status", str(bulk_id), "--json", "--devices")
    assert [d["device"] for d in report["devices"]] == [iccid(0), iccid(1)]


def test_export_on_postgresql(pg_cli: Cli, pg_url: str) -> None:
    bulk_id = pg_stored(pg_cli)
    finish_one_device(Repository(make_engine(pg_url)), bulk_id, "new-0")
    assert pg_cli.run("export", str(bulk_id)).returncode == 0
    frame = pd.read_csv(pg_cli.cwd / f"bulk-change-{bulk_id}.csv", dtype=str)
    assert frame["previous_username"].tolist() == ["user-0", "user-1"]


def test_a_missing_postgresql_database_is_refused_with_what_to_do(cli: Cli) -> None:
    cli.env["BULK_CHANGES_DB_URL"] = "postgresql://postgres@127.0.0.1:5432/no_such_database_16"
    done = cli.run("list")
    assert done.returncode == 4 and "BULK_CHANGES_DB_URL" in done.stderr


def test_export_writes_a_formula_username_as_text(cli: Cli) -> None:
    cli.run("devices", "import", str(write_inventory(cli.cwd / "inv.csv", 1)), "--tenant", "acme")
    path = cli.cwd / "c.csv"
    path.write_text(f'iccid,username\n{iccid(0)},"=HYPERLINK(""http://x"")"\n')
    bulk_id = cli.json(*submit_args(path), "--no-send", "--json")["id"]
    out = cli.cwd / "out.xlsx"
    assert cli.run("export", str(bulk_id), "--format", "xlsx", "--output", str(out)).returncode == 0
    import openpyxl

    cell = openpyxl.load_workbook(out)["devices"]["G2"]
    assert (cell.data_type, cell.value) == ("s", '\'=HYPERLINK("http://x")')
