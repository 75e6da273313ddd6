"""Through the queue, the daemon's sensor and real run workers, against the simulators."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from bulk_changes.demo import demo_iccid, demo_imei, demo_msisdn, make_inventory
from bulk_changes.intake import NoValidRows
from bulk_changes.launcher import run_worker_pids, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("e2e"))
    inventories = {}
    for index, tenant in ((1, "acme"), (2, "globex")):
        inventories[tenant] = make_inventory(index, 200)
        stack.import_devices(tenant, inventories[tenant])
    stack.inventories = inventories
    yield stack
    stop_stack(stack)


def devices(stack, tenant, integration, start, count):
    rows = [r for r in stack.inventories[tenant] if r["integration"] == integration]
    return rows[start : start + count]


def fields_by_label(service):
    return {f["label"]: f["value"] for f in service["fields"]}


def traits(line):
    return {c["name"]: c["value"] for c in line["serviceCharacteristic"]}


def test_all_change_types_on_both_integrations_agree_with_the_simulators(stack):
    sims = stack.sims
    plan = {
        "ucc_j": (
            "acme",
            "username_cost_center",
            "jasper",
            [
                {"iccid": d["iccid"], "username": f"u{i}", "cost_center_1": f"CC{i}"}
                for i, d in enumerate(devices(stack, "acme", "jasper", 0, 4))
            ],
        ),
        "ucc_t": (
            "globex",
            "username_cost_center",
            "telegence",
            [
                {"msisdn": d["msisdn"], "username": f"t{i}", "cost_center_3": "X"}
                for i, d in enumerate(devices(stack, "globex", "telegence", 0, 4))
            ],
        ),
        "status_j": (
            "acme",
            "device_status",
            "jasper",
            [
                {"iccid": d["iccid"], "status": "DEACTIVATED"}
                for d in devices(stack, "acme", "jasper", 4, 4)
            ],
        ),
        "status_t": (
            "acme",
            "device_status",
            "telegence",
            [
                {"msisdn": d["msisdn"], "status": "S"}
                for d in devices(stack, "acme", "telegence", 4, 4)
            ],
        ),
        "plan_j": (
            "globex",
            "carrier_rate_plan",
            "jasper",
            [
                {"iccid": d["iccid"], "rate_plan": "IOT_5GB"}
                for d in devices(stack, "globex", "jasper", 4, 4)
            ],
        ),
        "plan_t": (
            "acme",
            "carrier_rate_plan",
            "telegence",
            [
                {"msisdn": d["msisdn"], "rate_plan": "SOC5GB"}
                for d in devices(stack, "acme", "telegence", 8, 4)
            ],
        ),
        "equip_t": (
            "globex",
            "equipment",
            "telegence",
            [
                {
                    "msisdn": d["msisdn"],
                    "new_imei": demo_imei(7_000_000 + i),
                    "reason_code": "CUST_OWN_EQU",
                }
                for i, d in enumerate(devices(stack, "globex", "telegence", 8, 4))
            ],
        ),
    }
    # equipment on Jasper: every row is refused, so the request is refused as a whole
    equip_j = (
        "acme",
        "equipment",
        "jasper",
        [
            {"iccid": d["iccid"], "new_imei": demo_imei(1), "reason_code": "R"}
            for d in devices(stack, "acme", "jasper", 12, 2)
        ],
    )
    with pytest.raises(NoValidRows) as refused:
        stack.submit(*equip_j)
    assert all("not offered by Jasper" in r["reason"] for r in refused.value.rejected)

    ids = {name: stack.submit(*spec) for name, spec in plan.items()}
    stack.wait_final(list(ids.values()))
    reports = {name: stack.status_json(bulk_id) for name, bulk_id in ids.items()}

    for name, report in reports.items():
        assert report["status"] == "PROCESSED", (name, report)

    for row in plan["ucc_j"][3]:
        assert sims.jasper.state(row["iccid"])["accountCustom1"] == row["username"]
        service_id = next(d for d in stack.inventories["acme"] if d["iccid"] == row["iccid"])[
            "revio_service_id"
        ]
        assert (
            fields_by_label(sims.revio.state(service_id))["Cost Center 1"] == row["cost_center_1"]
        )
    for row in plan["ucc_t"][3]:
        inv = next(d for d in stack.inventories["globex"] if d["msisdn"] == row["msisdn"])
        service = sims.revio.state(inv["revio_service_id"])
        assert fields_by_label(service)["Username"] == row["username"]
        assert service["description"] == row["username"]  # globex maps the username to both
        assert fields_by_label(service)["Cost Center 3"] == "X"
    for row in plan["status_j"][3]:
        assert sims.jasper.state(row["iccid"])["status"] == "DEACTIVATED"
    for row in plan["status_t"][3]:
        assert sims.telegence.state(row["msisdn"])["status"] == "S"
    for row in plan["plan_j"][3]:
        assert sims.jasper.state(row["iccid"])["ratePlan"] == "IOT_5GB"
        inv = next(d for d in stack.inventories["globex"] if d["iccid"] == row["iccid"])
        assert sims.revio.state(inv["revio_service_id"])["usage_plan_group_id"] == 105
    for row in plan["plan_t"][3]:
        assert traits(sims.telegence.state(row["msisdn"]))["singleUserCode"] == "SOC5GB"
    for row in plan["equip_t"][3]:
        assert traits(sims.telegence.state(row["msisdn"]))["IMEI"] == row["new_imei"]

    # the AMOP inventory agrees too
    device = stack.repo.devices_by_key("acme", "jasper", [plan["ucc_j"][3][0]["iccid"]])
    assert next(iter(device.values()))["username"] == "u0"
    assert stack.violations() == {
        s: {"rate": 0, "in_flight": 0} for s in ("jasper", "telegence", "revio")
    }, stack.crowded_windows()


def test_with_20_percent_server_errors_every_valid_device_is_processed(stack):
    for sim in stack.sims.all():
        sim.configure(error_rate=0.2)
    try:
        ids = [
            stack.submit(
                "acme",
                "username_cost_center",
                "telegence",
                [
                    {"msisdn": d["msisdn"], "cost_center_2": "R"}
                    for d in devices(stack, "acme", "telegence", 20, 15)
                ],
            ),
            stack.submit(
                "globex",
                "device_status",
                "jasper",
                [
                    {"iccid": d["iccid"], "status": "DEACTIVATED"}
                    for d in devices(stack, "globex", "jasper", 20, 15)
                ],
            ),
        ]
        stack.wait_final(ids)
    finally:
        for sim in stack.sims.all():
            sim.configure(error_rate=0.0)
    for bulk_id in ids:
        report = stack.status_json(bulk_id)
        assert report["status"] == "PROCESSED", report
        assert report["counts"] == {"PROCESSED": 15}
    assert sum(s.stats()["faults"]["5xx"] for s in stack.sims.all()) > 0


def test_lost_answers_of_applied_writes_are_read_back_and_no_write_is_repeated(stack):
    """Every fault comes after the write was applied: 5% of Jasper edits answered 200
    without iccid, 10% HTML 502, 20% 5xx, 5% timeouts (answered 504 late), 5% dropped
    connections. A write sent again blind would land twice at the simulators."""
    repeated_before = {s.system: s.stats()["repeated_writes"] for s in stack.sims.all()}
    for sim in stack.sims.all():
        sim.configure(
            faults_apply=True,
            error_rate=0.2,
            garbage_rate=0.1,
            timeout_rate=0.05,
            timeout_seconds=1.0,
            drop_rate=0.05,
            seed=17,
        )
    stack.sims.jasper.configure(unconfirmed_rate=0.05)
    try:
        ids = [
            stack.submit(
                "acme",
                "username_cost_center",
                "jasper",
                [
                    {"iccid": d["iccid"], "username": f"lost-{i}", "cost_center_1": "L"}
                    for i, d in enumerate(devices(stack, "acme", "jasper", 50, 30))
                ],
            ),
            stack.submit(
                "globex",
                "carrier_rate_plan",
                "telegence",
                [
                    {"msisdn": d["msisdn"], "rate_plan": "SOC5GB"}
                    for d in devices(stack, "globex", "telegence", 50, 20)
                ],
            ),
        ]
        stack.wait_final(ids)
    finally:
        for sim in stack.sims.all():
            sim.configure(
                faults_apply=False,
                error_rate=0.0,
                garbage_rate=0.0,
                timeout_rate=0.0,
                drop_rate=0.0,
            )
        stack.sims.jasper.configure(unconfirmed_rate=0.0)
    assert [stack.status_json(i)["counts"] for i in ids] == [{"PROCESSED": 30}, {"PROCESSED": 20}]
    repeated = {
        s.system: s.stats()["repeated_writes"] - repeated_before[s.system] for s in stack.sims.all()
    }
    assert repeated == {"jasper": 0, "telegence": 0, "revio": 0}


def test_with_network_jitter_no_call_is_throttled_and_no_write_repeated(stack):
    """0-50 ms of network jitter before each call counts at every simulator: the
    limiter learns it from the round trips and keeps every window, with no throttled
    answer, while the run goes on."""
    before = {s.system: s.stats() for s in stack.sims.all()}
    for sim in stack.sims.all():
        sim.configure(arrival_jitter_ms=50, seed=23)
    try:
        bulk_id = stack.submit(
            "globex",
            "username_cost_center",
            "jasper",
            [
                {"iccid": d["iccid"], "username": f"jit-{i}", "cost_center_2": "J"}
                for i, d in enumerate(devices(stack, "globex", "jasper", 40, 60))
            ],
        )
        stack.wait_final([bulk_id])
    finally:
        for sim in stack.sims.all():
            sim.configure(arrival_jitter_ms=0)
    assert stack.status_json(bulk_id)["counts"] == {"PROCESSED": 60}
    after = {s.system: s.stats() for s in stack.sims.all()}
    assert {s: after[s]["throttled"] - before[s]["throttled"] for s in after} == {
        "jasper": 0,
        "telegence": 0,
        "revio": 0,
    }
    assert {s: after[s]["repeated_writes"] - before[s]["repeated_writes"] for s in after} == {
        "jasper": 0,
        "telegence": 0,
        "revio": 0,
    }
    assert stack.violations() == {
        s: {"rate": 0, "in_flight": 0} for s in ("jasper", "telegence", "revio")
    }, stack.crowded_windows()


def test_permanently_failing_device_ends_error_with_the_carriers_message(stack):
    rows = devices(stack, "acme", "jasper", 40, 3)
    stack.sims.jasper.configure(fail_keys={rows[0]["iccid"]: "Device is locked by the operator"})
    try:
        bulk_id = stack.submit(
            "acme",
            "device_status",
            "jasper",
            [{"iccid": r["iccid"], "status": "RETIRED"} for r in rows],
        )
        stack.wait_final([bulk_id])
    finally:
        stack.sims.jasper.configure(fail_keys={})
    report = stack.status_json(bulk_id)
    by_device = {d["device"]: d for d in report["devices"]}
    assert by_device[rows[0]["iccid"]]["status"] == "ERROR"
    assert "Device is locked by the operator" in by_device[rows[0]["iccid"]]["reason"]
    assert [by_device[r["iccid"]]["status"] for r in rows[1:]] == ["PROCESSED", "PROCESSED"]


def telegence_lines(tenant_index: int, count: int) -> list[dict[str, str]]:
    return [
        {
            "integration": "telegence",
            "iccid": demo_iccid(tenant_index, n),
            "msisdn": demo_msisdn(tenant_index, n),
            "status": "A",
            "rate_plan": "SOC1GB",
            "revio_service_id": "",
        }
        for n in range(count)
    ]


def wait_processed(stack, bulk_id: int, at_least: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while stack.repo.counts(bulk_id).get("PROCESSED", 0) < at_least:
        assert time.monotonic() < deadline, stack.repo.counts(bulk_id)
        time.sleep(0.2)


def assert_each_line_patched_once(stack, rows, calls_before: int) -> None:
    patches = Counter(
        call["key"]
        for call in stack.sims.telegence.calls(calls_before)
        if call["method"] == "PATCH" and 200 <= call["status"] < 300
    )
    assert set(patches) == {r["msisdn"] for r in rows}
    assert max(patches.values()) == 1, [k for k, n in patches.items() if n > 1]


def test_killed_run_worker_on_the_embedded_default_recovers_without_an_operator(stack):
    """kill -9 of the run worker: dead_run_worker_sensor marks the run failed, the
    instance's run retries (bulk_changes/defaults/dagster.yaml) re-execute it, and every
    device ends final with no step called twice."""
    from dagster import DagsterInstance, RunsFilter

    rows = telegence_lines(7, 600)
    stack.import_devices("acme", rows)
    calls_before = len(stack.sims.telegence.calls())
    bulk_id = stack.submit(
        "acme", "device_status", "telegence", [{"msisdn": r["msisdn"], "status": "S"} for r in rows]
    )
    wait_processed(stack, bulk_id, 150)
    run_id = stack.repo.get_bulk_change(bulk_id).last_run_id
    pids = run_worker_pids(run_id)
    assert pids, "no run worker process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert stack.repo.counts(bulk_id).get("PROCESSED", 0) < 600

    stack.wait_final([bulk_id])
    report = stack.status_json(bulk_id)
    assert report["status"] == "PROCESSED" and report["counts"] == {"PROCESSED": 600}
    assert_each_line_patched_once(stack, rows, calls_before)
    with DagsterInstance.from_config(stack.env["DAGSTER_HOME"]) as instance:
        retries = instance.get_runs(filters=RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert len(retries) == 1
    assert stack.violations() == {
        s: {"rate": 0, "in_flight": 0} for s in ("jasper", "telegence", "revio")
    }, stack.crowded_windows()


def test_whole_daemon_killed_on_the_embedded_default_recovers_without_an_operator(stack):
    """kill -9 of the daemon's process group (daemon, code server, run worker) mid-run,
    then the daemon started again, as a service manager would: the run nobody knows any
    more is marked failed and retried; every device ends final, no step called twice."""
    rows = telegence_lines(8, 400)
    stack.import_devices("globex", rows)
    calls_before = len(stack.sims.telegence.calls())
    bulk_id = stack.submit(
        "globex",
        "device_status",
        "telegence",
        [{"msisdn": r["msisdn"], "status": "S"} for r in rows],
    )
    wait_processed(stack, bulk_id, 100)
    run_id = stack.repo.get_bulk_change(bulk_id).last_run_id
    stack.kill_daemon()
    assert run_worker_pids(run_id) == []
    assert stack.repo.counts(bulk_id).get("PROCESSED", 0) < 400
    stack.start_daemon()

    stack.wait_final([bulk_id])
    report = stack.status_json(bulk_id)
    assert report["status"] == "PROCESSED" and report["counts"] == {"PROCESSED": 400}
    assert_each_line_patched_once(stack, rows, calls_before)
    assert stack.sims.telegence.stats()["repeated_writes"] == 0


def test_the_daemon_sweeps_the_outbox_and_alerts_on_failed_runs(stack, monkeypatch):
    """The notification sensors run in the daemon: the sweep delivers an event no run
    delivered; each failed run (the killed worker's, above) has its one alert."""
    from dataclasses import asdict

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    from bulk_changes.db.outbox import Outbox
    from bulk_changes.domain import notifications as n

    outbox = Outbox(stack.repo.engine)
    bulk = stack.repo.list_bulk_changes(limit=1)[0]
    data = n.completed_data(asdict(bulk), bulk.status, stack.repo.counts(bulk.id))
    assert outbox.add_alert(
        n.EMAIL_COMPLETION, {**data, "notify": ["sweep@acme.example"]}, "e2e-sweep"
    )
    event = next(e for e in outbox.events() if e.type == n.EMAIL_COMPLETION and not e.tenant_id)
    mail = stack.root / "outbox-mail" / f"{event.event_id}@bulk-changes.eml"
    deadline = time.monotonic() + 60
    while not mail.exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert mail.exists(), f"the sweep sensor did not deliver {event.event_id}; logs: {stack.root}"
    assert outbox.by_event_id(event.event_id)[0].status == "DELIVERED"
    # every bulk change's notifications were delivered (by its run or the sweep)
    for b in stack.repo.list_bulk_changes(limit=100):
        states = {d["status"] for e in outbox.notifications_of(b.id) for d in e["deliveries"]}
        assert states <= {"DELIVERED"}, (b.id, states)

    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    failed = DagsterInstance.get().get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alerts = {e.data["run_id"] for e in outbox.events() if e.type == n.ALERT_RUN_FAILURE}
        if {r.run_id for r in failed} <= alerts:
            break
        time.sleep(1)
    assert {r.run_id for r in failed} <= alerts
    assert len([e for e in outbox.events() if e.type == n.ALERT_RUN_FAILURE]) == len(alerts)
