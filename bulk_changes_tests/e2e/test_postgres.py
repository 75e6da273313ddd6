"""Production backends for real: the AMOP database and Dagster's storage on PostgreSQL, the
instance configured by deploy/dagster.yaml (queued runs with per-tenant limits, pools,
run monitoring, run retries), the real daemon and run workers, the SQS-protocol server.

Time is scaled to keep these tests short: every account's calls per second (Jasper 5/s,
Rev.io 500/min, the test Telegence account 40/s) is multiplied by SCALE at the simulators
and in the tenants' configuration alike, so the budgets still bind and the simulators
still enforce and count them; calls in flight stay as documented (Jasper: 1). At SCALE 5
the budgets alone would let the 2,000-device round finish in about a minute; what is left
is the project's own CPU cost per device on this machine's two cores.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import text

from bulk_changes.demo import demo_iccid, demo_msisdn
from bulk_changes.domain.messages import BulkChangeRef, run_key_for
from bulk_changes.intake import SubmitRequest, submit_bulk_change
from bulk_changes.launcher import run_worker_pids, start_stack, stop_stack
from bulk_changes.launcher.tenants import simulator_tenants
from bulk_changes.resources.amop_db import engine_for
from bulk_changes_tests.postgres import (
    require_postgres,
    terminate_connections,
)

pytestmark = pytest.mark.e2e

SCALE = 5
DEVICES = 500
WRITES = ("PUT", "PATCH", "POST", "DELETE")
SYSTEMS = ("jasper", "telegence", "revio")
BILLING = {"IOT_5GB": 105, "IOT_1GB": 101, "SOC5GB": 205, "SOC1GB": 201}


def scaled_tenants(sims: Any) -> dict[str, Any]:
    config = simulator_tenants(sims)  # acme and globex, on the same three accounts
    for account in config["accounts"].values():
        for key in ("calls_per_second", "calls_per_minute"):
            if key in account:
                account[key] = account[key] * SCALE
    # initech: same accounts; its runs are held in the run queue (production_instance)
    acme = next(t for t in config["tenants"] if t["id"] == "acme")
    config["tenants"].append({**acme, "id": "initech", "notify": ["ops@initech.example"]})
    return config


def scaled_limits(sims: Any) -> None:
    sims.jasper.configure(rate_limit=5 * SCALE)  # per second; 1 in flight
    sims.revio.configure(rate_limit=500 * SCALE)  # per minute
    sims.telegence.configure(rate_per_second=40 * SCALE, max_in_flight=6)


def inventory(index: int, integration: str) -> list[dict[str, str]]:
    jasper = integration == "jasper"
    offset = 0 if jasper else DEVICES
    return [
        {
            "integration": integration,
            "iccid": demo_iccid(index, offset + n),
            "msisdn": "" if jasper else demo_msisdn(index, offset + n),
            "status": "ACTIVATED" if jasper else "A",
            "rate_plan": "IOT_1GB" if jasper else "SOC1GB",
            "communication_plan": "CP_DEFAULT" if jasper else "",
            "revio_service_id": str(100_000 * index + offset + n),
        }
        for n in range(DEVICES)
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_postgres()
    stack = start_stack(
        tmp_path_factory.mktemp("e2e_pg"),
        backend="postgresql",
        tenants=scaled_tenants,
        configure_sims=scaled_limits,
        env_overrides={
            "BULK_CHANGES_VISIBILITY_TIMEOUT": "10",
            "BULK_CHANGES_SENSOR_INTERVAL": "2",
        },
    )
    stack.inventories = {}
    for index, tenant in ((21, "acme"), (22, "globex")):
        for integration in ("jasper", "telegence"):
            rows = inventory(index, integration)
            stack.inventories[(tenant, integration)] = rows
            stack.import_devices(tenant, rows)
    yield stack
    stop_stack(stack)


@pytest.fixture
def instance(stack, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.get() as instance:
        yield instance


def four_bulk_changes(stack, round_: int) -> dict[str, tuple[str, str, str, list[dict]]]:
    """Two tenants on one Jasper and one Rev.io account: 4 x 500 devices; Jasper carries
    two of them, Rev.io all four."""
    inv = stack.inventories
    jasper_plan, telegence_plan = ("IOT_5GB", "SOC5GB") if round_ == 1 else ("IOT_1GB", "SOC1GB")
    return {
        "acme_jasper_ucc": (
            "acme",
            "username_cost_center",
            "jasper",
            [
                {
                    "iccid": d["iccid"],
                    "username": f"r{round_}-a{n}",
                    "cost_center_1": f"r{round_}-{n % 7}",
                }
                for n, d in enumerate(inv[("acme", "jasper")])
            ],
        ),
        "acme_telegence_ucc": (
            "acme",
            "username_cost_center",
            "telegence",
            [
                {
                    "msisdn": d["msisdn"],
                    "username": f"r{round_}-t{n}",
                    "cost_center_2": f"r{round_}",
                }
                for n, d in enumerate(inv[("acme", "telegence")])
            ],
        ),
        "globex_jasper_plan": (
            "globex",
            "carrier_rate_plan",
            "jasper",
            [{"iccid": d["iccid"], "rate_plan": jasper_plan} for d in inv[("globex", "jasper")]],
        ),
        "globex_telegence_plan": (
            "globex",
            "carrier_rate_plan",
            "telegence",
            [
                {"msisdn": d["msisdn"], "rate_plan": telegence_plan}
                for d in inv[("globex", "telegence")]
            ],
        ),
    }


def fields_by_label(service: dict[str, Any]) -> dict[str, str]:
    return {f["label"]: f["value"] for f in service["fields"]}


def traits(line: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["value"] for c in line["serviceCharacteristic"]}


def assert_final_and_correct_at_the_simulators(stack, plan, ids) -> None:
    sims, repo = stack.sims, stack.repo
    for name, bulk_id in ids.items():
        assert repo.get_bulk_change(bulk_id).status == "PROCESSED", name
        assert repo.counts(bulk_id) == {"PROCESSED": DEVICES}, name
    service = {
        d[key]: d["revio_service_id"]
        for rows in stack.inventories.values()
        for d in rows
        for key in ("iccid", "msisdn")
        if d[key]
    }
    for row in plan["acme_jasper_ucc"][3]:
        assert sims.jasper.state(row["iccid"])["accountCustom1"] == row["username"]
        got = fields_by_label(sims.revio.state(service[row["iccid"]]))
        assert got["Cost Center 1"] == row["cost_center_1"]
    for row in plan["acme_telegence_ucc"][3]:
        got = fields_by_label(sims.revio.state(service[row["msisdn"]]))
        assert (got["Username"], got["Cost Center 2"]) == (row["username"], row["cost_center_2"])
    for row in plan["globex_jasper_plan"][3]:
        assert sims.jasper.state(row["iccid"])["ratePlan"] == row["rate_plan"]
        got = sims.revio.state(service[row["iccid"]])["usage_plan_group_id"]
        assert got == BILLING[row["rate_plan"]]
    for row in plan["globex_telegence_plan"][3]:
        assert traits(sims.telegence.state(row["msisdn"]))["singleUserCode"] == row["rate_plan"]
        got = sims.revio.state(service[row["msisdn"]])["usage_plan_group_id"]
        assert got == BILLING[row["rate_plan"]]
    assert stack.violations() == {s: {"rate": 0, "in_flight": 0} for s in SYSTEMS}, (
        stack.crowded_windows()
    )
    assert stack.sims.jasper.stats()["max_in_flight_seen"] == {"sim-user": 1}


def call_marks(stack) -> dict[str, int]:
    return {s: len(sim.calls()) for s, sim in zip(SYSTEMS, stack.sims.all(), strict=True)}


def successful_writes(stack, since: dict[str, int]) -> dict[str, Counter]:
    """Writes the simulators answered 2xx since ``since``, per (method, path)."""
    return {
        s: Counter(
            (call["method"], call["path"])
            for call in sim.calls(since[s])
            if call["method"] in WRITES and 200 <= call["status"] < 300
        )
        for s, sim in zip(SYSTEMS, stack.sims.all(), strict=True)
    }


def assert_each_step_called_once(stack, since: dict[str, int]) -> None:
    writes = successful_writes(stack, since)
    # Jasper: one PUT per device of the two Jasper bulk changes; Telegence: one PATCH per
    # line of the rate plan change; Rev.io: one write per service of all four
    assert len(writes["jasper"]) == 2 * DEVICES and set(writes["jasper"].values()) == {1}
    assert len(writes["telegence"]) == DEVICES and set(writes["telegence"].values()) == {1}
    assert len(writes["revio"]) == 4 * DEVICES and set(writes["revio"].values()) == {1}


def failure_marker(instance, run_id: str, pids: list[int]) -> str:
    """Who marked the run failed, from its event log: the code server that started the
    worker (it watches its child processes) or dead_run_worker_sensor (when no code server
    that knows the run is left)."""
    messages = [
        record.event_log_entry.dagster_event.message or ""
        for record in instance.get_records_for_run(run_id).records
        if record.event_log_entry.dagster_event
    ]
    if any(
        f"Run worker process {pid} on" in m and "is gone" in m for m in messages for pid in pids
    ):
        return "dead_run_worker_sensor"
    if any(f"Run execution process for {run_id} was terminated by signal 9" in m for m in messages):
        return "the code server"
    raise AssertionError(f"run {run_id} failed, but not for its dead worker: {messages[-5:]}")


def wait_run_ended(instance, run_id: str, timeout: float = 60) -> DagsterRunStatus:
    """A bulk change is final before its run ends (notifications come after)."""
    deadline = time.monotonic() + timeout
    while True:
        run = instance.get_run_by_id(run_id)
        if run.is_finished or time.monotonic() > deadline:
            return run.status
        time.sleep(0.5)


def send_all(stack, plan) -> dict[str, int]:
    return {name: stack.submit(*spec) for name, spec in plan.items()}


def test_four_bulk_changes_of_500_on_shared_accounts_with_a_killed_worker_and_dropped_connections(
    stack, instance
):
    """4 x 500 devices of two tenants on one Jasper and one Rev.io account, concurrently; a
    third of the way into one of them its run worker is killed (kill -9) and every
    connection to the AMOP database is dropped once. The dead run is marked failed and
    re-executed; every device ends final and correct at the simulators, no limit is broken,
    and no device step is called twice (one successful write per device and step at each
    simulator, the killed run's included). (One round, faults and all, rather than a clean
    round and a faulty one: the same assertions at half the time.)"""
    plan = four_bulk_changes(stack, 1)
    since = call_marks(stack)
    started = time.monotonic()
    ids = send_all(stack, plan)
    victim = ids["acme_jasper_ucc"]

    deadline = time.monotonic() + 300
    while stack.repo.counts(victim).get("PROCESSED", 0) < 150:
        assert time.monotonic() < deadline, stack.repo.counts(victim)
        time.sleep(0.5)
    run_id = stack.repo.get_bulk_change(victim).last_run_id
    pids = run_worker_pids(run_id)
    assert pids, "no run worker process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    at_kill = stack.repo.counts(victim)
    # ... and every connection to the AMOP database dropped once (the other three runs,
    # the sensors, this test), as a database failover would
    dropped = terminate_connections(stack.amop_database)
    assert dropped > 0

    while instance.get_run_by_id(run_id).status != DagsterRunStatus.FAILURE:
        assert time.monotonic() < killed_at + 60, "the dead run was not marked failed"
        time.sleep(0.25)
    detected_after = time.monotonic() - killed_at
    stack.wait_final(list(ids.values()), timeout=420)
    elapsed = time.monotonic() - started

    assert_final_and_correct_at_the_simulators(stack, plan, ids)
    assert_each_step_called_once(stack, since)  # nothing called twice, the kill included
    marked_by = failure_marker(instance, run_id, pids)
    [retry] = instance.get_runs(filters=RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert wait_run_ended(instance, retry.run_id) == DagsterRunStatus.SUCCESS
    assert retry.tags["dagster/retry_number"] == "1"
    for name, bulk_id in ids.items():
        if name != "acme_jasper_ucc":
            [run] = instance.get_runs(
                filters=RunsFilter(
                    tags={
                        "dagster/run_key": run_key_for(
                            BulkChangeRef(bulk_id), stack.repo.database_id()
                        )
                    }
                )
            )
            assert wait_run_ended(instance, run.run_id) == DagsterRunStatus.SUCCESS, name
    calls = {s: n - since[s] for s, n in call_marks(stack).items()}
    print(
        f"\n4 x {DEVICES} devices, 2 tenants on shared accounts, scale {SCALE}: {elapsed:.0f} s "
        f"from the first message to the last final; calls {calls}; Jasper "
        f"{calls['jasper'] / elapsed:.1f}/s (budget {5 * SCALE}/s), Rev.io "
        f"{calls['revio'] / elapsed:.1f}/s (budget {500 * SCALE / 60:.1f}/s). Worker of run "
        f"{run_id[:8]} killed at {at_kill}; {dropped} AMOP connections dropped; marked failed "
        f"by {marked_by} after {detected_after:.1f} s; retried with "
        f"{retry.tags.get('dagster/retry_strategy')}"
    )


def test_daemon_killed_mid_tick_and_mid_run_then_restarted(stack, instance):
    """The daemon is killed (kill -9 of its process group: the daemon, its code server and
    the run worker of a running bulk change, as when the host's service dies) in the middle
    of a sensor tick that has received messages of a burst of 50 and launched nothing yet.

    Restarted, the sensor makes exactly one run per bulk change of the burst (24 bulk
    changes, each asked for in both message shapes, one a third time) and deletes every
    message but the poison one, which is in the dead-letter queue with its reason; and the
    run whose worker died with the old code server (no process left knows it) is marked
    failed by dead_run_worker_sensor, re-executed, and finishes without calling any device
    step twice. (Tenant initech's runs stay in the run queue by configuration: the sensor's
    promise is that the run exists, once.)"""
    running_rows = inventory(24, "jasper")[:100]
    stack.import_devices("acme", running_rows)
    since = call_marks(stack)
    running = stack.submit(
        "acme",
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in running_rows],
    )
    deadline = time.monotonic() + 120
    while len(stack.sims.jasper.calls(since["jasper"])) < 20:
        assert time.monotonic() < deadline, "the running bulk change never got going"
        time.sleep(0.2)
    run_id = stack.repo.get_bulk_change(running).last_run_id
    worker_pids = run_worker_pids(run_id)
    assert worker_pids

    rows = [
        {
            "integration": "jasper",
            "iccid": demo_iccid(23, n),
            "status": "ACTIVATED",
            "rate_plan": "IOT_1GB",
        }
        for n in range(24)
    ]
    stack.import_devices("initech", rows)
    settings = stack.settings()
    ids = [
        submit_bulk_change(
            stack.repo,
            settings,
            SubmitRequest(
                tenant="initech",
                change_type="device_status",
                integration="jasper",
                rows=[{"iccid": row["iccid"], "status": "DEACTIVATED"}],
                idempotency_key=uuid.uuid4().hex,
                requested_by="e2e",
            ),
        ).id
        for row in rows
    ]
    messages: list[tuple[str, dict[str, str] | None]] = []
    for bulk_id in ids:
        messages.append((json.dumps({"bulk_change_id": bulk_id}), None))
        messages.append(("from the prior system", {"BulkChangeId": str(bulk_id)}))
    messages.append((json.dumps({"bulk_change_id": ids[0]}), None))
    messages.append(("{this is not json", None))
    assert len(messages) == 50

    def initech_runs() -> list:
        return instance.get_runs(filters=RunsFilter(tags={"bulk_changes/tenant": "initech"}))

    def in_queue(name: str | None = None) -> int:
        attrs = stack.queue.queue_attributes(name)
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    amop = engine_for(stack.db_url)
    with amop.connect() as lock:
        # The sensor's first look at the AMOP database waits on this lock: it has
        # received messages and cannot get to launching anything.
        lock.execute(text("LOCK TABLE bulk_changes IN ACCESS EXCLUSIVE MODE"))
        for body, attributes in messages:
            stack.queue.send(body, attributes)
        # The sensor long-polls: its tick may take the burst's first messages as they come
        # (a busy machine sends the 50 slowly), and it is stuck on the lock from the first.
        deadline = time.monotonic() + 60
        while int(stack.queue.queue_attributes()["ApproximateNumberOfMessagesNotVisible"]) < 1:
            assert time.monotonic() < deadline, "the sensor never received the burst"
            time.sleep(0.1)
        time.sleep(1)  # it is now waiting on the lock (or about to)
        stack.kill_daemon()
        lock.rollback()
    assert initech_runs() == []  # received, not launched
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED  # nobody knows
    assert run_worker_pids(run_id) == []

    restarted_at = time.monotonic()
    stack.start_daemon()
    deadline = time.monotonic() + 180
    while (
        len(initech_runs()) < len(ids)
        or in_queue()
        or in_queue(stack.queue.dead_letter_queue_name) != 1
        or stack.repo.get_bulk_change(running).status != "PROCESSED"
    ):
        assert time.monotonic() < deadline, (len(initech_runs()), in_queue())
        stack.check_alive()
        time.sleep(1)
    settled_after = time.monotonic() - restarted_at
    time.sleep(3)  # a few more ticks: nothing else may appear

    runs = initech_runs()
    per_bulk_change = Counter(run.tags["bulk_changes/bulk_change_id"] for run in runs)
    assert per_bulk_change == {str(i): 1 for i in ids}
    assert {run.tags["dagster/run_key"] for run in runs} == {
        run_key_for(BulkChangeRef(i), stack.repo.database_id()) for i in ids
    }
    assert all(run.status == DagsterRunStatus.QUEUED for run in runs)
    assert in_queue() == 0
    [poison] = stack.queue.list_dead_letters(10)
    assert poison.body == "{this is not json"
    assert poison.attributes["DeadLetterReason"].startswith("body is not JSON")

    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert failure_marker(instance, run_id, worker_pids) == "dead_run_worker_sensor"
    [retry] = instance.get_runs(filters=RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert wait_run_ended(instance, retry.run_id) == DagsterRunStatus.SUCCESS
    assert stack.repo.counts(running) == {"PROCESSED": 100}
    puts = successful_writes(stack, since)["jasper"]
    assert len(puts) == 100 and set(puts.values()) == {1}
    assert stack.violations() == {s: {"rate": 0, "in_flight": 0} for s in SYSTEMS}, (
        stack.crowded_windows()
    )
    print(f"\nafter the restart: all settled in {settled_after:.0f} s")
