"""The stage runner on a real SQLite AMOP database with fake API clients."""

from __future__ import annotations

import random

import pytest

from bulk_changes.domain.errors import Rejected, ServerError, Throttled
from bulk_changes.domain.retry import RetryPolicy
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.processing.runner import StageRunner
from bulk_changes_tests.conftest import inventory, seed_services, submit
from bulk_changes_tests.fakes import FakeClients, fake_systems
from bulk_changes_tests.transactions import tell_transactions

POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0)


def run_all_stages(repo, settings, bulk_id, fake_key, integration):
    bulk = repo.get_bulk_change(bulk_id)
    ids = [int(i) for i in repo.pending_device_changes_frame(bulk_id)["id"]]
    runner = StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=settings.tenant(bulk.tenant_id),
        clients_factory=lambda recorder: FakeClients(fake_key, integration),
        policy=POLICY,
        run_id="run-1",
        sleep=lambda s: None,
        rng=random.Random(0),
    )
    runner.run(ids, STAGE_ORDER)
    return {c.device_key: c for c in repo.device_changes_of(bulk_id)}


@pytest.fixture
def jasper_devices(repo, fake_key):
    rows = inventory(3, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    return [r["iccid"] for r in rows]


def test_every_step_runs_and_the_device_ends_processed(repo, settings, fake_key, jasper_devices):
    device = jasper_devices[0]
    result = submit(
        repo,
        settings,
        "username_cost_center",
        "jasper",
        [{"iccid": device, "username": "ann", "cost_center_1": "CC-9"}],
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    systems = fake_systems(fake_key)
    assert systems["jasper"].names(device) == ["set_username"]
    service = systems["revio"].services[5000]
    assert {f["label"]: f["value"] for f in service["fields"]}["Cost Center 1"] == "CC-9"
    assert repo.devices_by_key("acme", "jasper", [device])[device]["username"] == "ann"


def test_each_device_goes_on_to_billing_without_waiting_for_the_batch(
    repo, settings, fake_key, jasper_devices
):
    rows = [{"iccid": d, "username": "ann", "cost_center_1": "CC-9"} for d in jasper_devices]
    result = submit(repo, settings, "username_cost_center", "jasper", rows)
    ids = [int(i) for i in repo.pending_device_changes_frame(result.id)["id"]]
    StageRunner(
        repo=repo,
        bulk=repo.get_bulk_change(result.id),
        tenant=settings.tenant("acme"),
        clients_factory=lambda r: FakeClients(fake_key, "jasper"),
        policy=POLICY,
        run_id="r1",
        max_workers=1,
        sleep=lambda s: None,
    ).run(ids, STAGE_ORDER)
    sequence = fake_systems(fake_key)["jasper"].sequence
    carrier = [i for i, (name, _) in enumerate(sequence) if name == "set_username"]
    billing = [i for i, (name, _) in enumerate(sequence) if name.startswith("patch")]
    assert len(carrier) == 3 and billing
    # the first device's Rev.io update comes before the last device's carrier call
    assert billing[0] < carrier[-1]


def test_a_server_error_is_read_back_then_retried_and_succeeds(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    fake_systems(fake_key)["jasper"].failures[device] = [
        ServerError("503", system="jasper", status=503)
    ]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert changes[device].attempts == 2
    # the 503 may hide an applied write: the device is read before the write is sent again
    assert fake_systems(fake_key)["jasper"].names(device) == [
        "set_status",
        "get_device",
        "set_status",
    ]


def test_permanent_failure_ends_error_with_the_carrier_message_and_skips_later_steps(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    fake_systems(fake_key)["jasper"].failures[device] = [
        Rejected("Invalid rate plan", system="jasper", status=400)
    ]
    result = submit(
        repo, settings, "carrier_rate_plan", "jasper", [{"iccid": device, "rate_plan": "IOT_5GB"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "ERROR"
    assert "Invalid rate plan" in changes[device].last_error
    assert fake_systems(fake_key)["revio"].names("5000") == []


def test_attempts_exhausted_leave_api_failed_with_last_error(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    fake_systems(fake_key)["jasper"].failures[device] = [ServerError(f"boom {i}") for i in range(3)]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "API_FAILED"
    assert "boom 2" in changes[device].last_error
    assert changes[device].attempts == 3


def test_throttling_never_fails_a_device_nor_uses_attempts(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    fake_systems(fake_key)["jasper"].failures[device] = [Throttled("40000029") for _ in range(5)]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert changes[device].attempts == 1


def test_one_failing_device_does_not_stop_the_others(repo, settings, fake_key, jasper_devices):
    bad, *good = jasper_devices
    fake_systems(fake_key)["jasper"].failures[bad] = [Rejected("no such device")]
    rows = [{"iccid": d, "status": "DEACTIVATED"} for d in jasper_devices]
    result = submit(repo, settings, "device_status", "jasper", rows)
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[bad].status == "ERROR"
    assert all(changes[d].status == "PROCESSED" for d in good)


def test_rerun_repeats_no_completed_step(repo, settings, fake_key, jasper_devices):
    device = jasper_devices[0]
    result = submit(
        repo, settings, "carrier_rate_plan", "jasper", [{"iccid": device, "rate_plan": "IOT_5GB"}]
    )
    bulk = repo.get_bulk_change(result.id)
    ids = [int(i) for i in repo.pending_device_changes_frame(result.id)["id"]]
    # the carrier stage succeeded, then the run died
    StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=settings.tenant("acme"),
        clients_factory=lambda r: FakeClients(fake_key, "jasper"),
        policy=POLICY,
        run_id="r1",
        sleep=lambda s: None,
    ).run(ids, STAGE_ORDER[:1])
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert fake_systems(fake_key)["jasper"].names(device) == ["set_rate_plan"]


def test_step_started_before_a_crash_is_verified_not_called_again(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    (change,) = repo.device_changes_of(result.id)
    # the previous process called Jasper, which applied it, and died before recording it
    repo.save_step_progress(change.id, "jasper.set_status#started", {"run_id": "dead"})
    fake_systems(fake_key)["jasper"].devices[device] = {"status": "DEACTIVATED"}
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert fake_systems(fake_key)["jasper"].names(device) == ["get_device"]


def test_step_started_but_not_applied_is_called_after_the_check(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    (change,) = repo.device_changes_of(result.id)
    repo.save_step_progress(change.id, "jasper.set_status#started", {"run_id": "dead"})
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert fake_systems(fake_key)["jasper"].names(device) == ["get_device", "set_status"]


def test_a_failed_read_after_a_crash_is_read_again_never_a_blind_call(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    (change,) = repo.device_changes_of(result.id)
    # applied before the process died; the first read after the restart fails
    repo.save_step_progress(change.id, "jasper.set_status#started", {"run_id": "dead"})
    jasper = fake_systems(fake_key)["jasper"]
    jasper.devices[device] = {"status": "DEACTIVATED"}
    jasper.failures[device] = [ServerError("503", system="jasper", status=503)]
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[device].status == "PROCESSED"
    assert jasper.names(device) == ["get_device", "get_device"]


def test_audit_rows_record_each_step(repo, settings, fake_key, jasper_devices):
    device = jasper_devices[0]
    result = submit(
        repo, settings, "device_status", "jasper", [{"iccid": device, "status": "DEACTIVATED"}]
    )
    run_all_stages(repo, settings, result.id, fake_key, "jasper")
    steps = [(a["step"], a["outcome"]) for a in repo.audit_of(result.id)]
    assert ("jasper.set_status", "ok") in steps
    assert ("amop.update_device", "ok") in steps


def test_a_device_commits_twice_once_before_its_call_and_once_after(
    repo, settings, fake_key, jasper_devices
):
    requests = [{"iccid": d, "status": "DEACTIVATED"} for d in jasper_devices]
    result = submit(repo, settings, "device_status", "jasper", requests)
    commits = []

    def count(connection):
        commits.append(connection)

    stop_telling = tell_transactions(repo.engine, "commit", count)
    try:
        changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    finally:
        stop_telling()
    assert {c.status for c in changes.values()} == {"PROCESSED"}
    # the step marked started before the call; the call's record with the device's end
    assert len(commits) == 2 * len(jasper_devices)


def test_a_carrier_call_is_committed_before_the_billing_call_in_one_transaction_with_its_start(
    repo, settings, fake_key, jasper_devices
):
    device = jasper_devices[0]
    request = [{"iccid": device, "username": "ann", "cost_center_1": "CC-9"}]
    result = submit(repo, settings, "username_cost_center", "jasper", request)
    (change,) = repo.device_changes_of(result.id)
    seen_at_billing = []

    class WatchedClients(FakeClients):
        def billing(self):
            # what a crash at the billing call would leave: the carrier call recorded
            seen_at_billing.append(
                (
                    repo.completed_steps([change.id])[change.id],
                    repo.started_steps([change.id])[change.id],
                )
            )
            return super().billing()

    commits = []

    def count(connection):
        commits.append(connection)

    bulk = repo.get_bulk_change(result.id)
    runner = StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=settings.tenant(bulk.tenant_id),
        clients_factory=lambda recorder: WatchedClients(fake_key, "jasper"),
        policy=POLICY,
        run_id="run-1",
        sleep=lambda s: None,
    )
    stop_telling = tell_transactions(repo.engine, "commit", count)
    try:
        runner.run([change.id], STAGE_ORDER)
    finally:
        stop_telling()
    assert repo.device_changes_of(result.id)[0].status == "PROCESSED"
    assert seen_at_billing[0] == (
        {"jasper.set_username"},
        {"jasper.set_username", "revio.set_cost_centers"},
    )
    # the carrier's start; its record with the billing step's start; the end
    assert len(commits) == 3


def test_telegence_suspended_line_is_restored_by_a_patch(repo, settings, fake_key):
    rows = inventory(1, "telegence")
    rows[0]["status"] = "S"
    repo.upsert_devices("acme", rows)
    number = rows[0]["msisdn"]
    result = submit(
        repo, settings, "device_status", "telegence", [{"msisdn": number, "status": "A"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "telegence")
    assert changes[number].status == "PROCESSED"
    assert fake_systems(fake_key)["telegence"].names(number) == ["change_status"]


def test_telegence_username_lands_in_revio_by_label(repo, settings, fake_key):
    rows = inventory(1, "telegence")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    number = rows[0]["msisdn"]
    result = submit(
        repo, settings, "username_cost_center", "telegence", [{"msisdn": number, "username": "zoe"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "telegence")
    assert changes[number].status == "PROCESSED"
    fields = {
        f["label"]: f["value"] for f in fake_systems(fake_key)["revio"].services[5000]["fields"]
    }
    assert fields["Username"] == "zoe"
    assert fake_systems(fake_key)["telegence"].calls == []


def test_telegence_cancelled_line_is_activated_once_and_polled(repo, settings, fake_key):
    rows = inventory(1, "telegence")
    rows[0]["status"] = "C"
    repo.upsert_devices("acme", rows)
    number = rows[0]["msisdn"]
    result = submit(
        repo, settings, "device_status", "telegence", [{"msisdn": number, "status": "A"}]
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "telegence")
    assert changes[number].status == "PROCESSED"
    assert fake_systems(fake_key)["telegence"].names(number) == [
        "request_activation",
        "activation_status",
    ]


def test_revio_services_are_read_in_pages_not_one_per_device(repo, settings, fake_key):
    rows = inventory(30, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    result = submit(
        repo,
        settings,
        "username_cost_center",
        "jasper",
        [{"iccid": r["iccid"], "cost_center_1": "CC"} for r in rows],
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert {c.status for c in changes.values()} == {"PROCESSED"}
    revio = fake_systems(fake_key)["revio"].names()
    assert revio.count("patch_service") == 30
    assert revio.count("get_service") == 0
    assert revio.count("list_services") == 1


def test_device_already_up_to_date_costs_no_revio_write(repo, settings, fake_key):
    rows = inventory(1, "jasper")
    repo.upsert_devices("acme", rows)
    seed_services(fake_systems(fake_key), rows)
    service = fake_systems(fake_key)["revio"].services[5000]
    next(f for f in service["fields"] if f["label"] == "Cost Center 1")["value"] = "CC"
    result = submit(
        repo,
        settings,
        "username_cost_center",
        "jasper",
        [{"iccid": rows[0]["iccid"], "cost_center_1": "CC"}],
    )
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert changes[rows[0]["iccid"]].status == "PROCESSED"
    assert "patch_service" not in fake_systems(fake_key)["revio"].names()


def test_a_batch_waits_for_its_devices_once_not_device_by_device(
    repo, settings, fake_key, jasper_devices, monkeypatch
):
    """The batch's thread is woken once its devices are all done (one wake-up a batch),
    not as each device ends: no device's outcome is looked at before every one is done."""
    import threading
    import time
    from concurrent.futures import Future

    from bulk_changes.processing import runner as runner_module

    looked_at_pending: list[bool] = []

    class SpyFuture(Future):
        def exception(self, timeout=None):
            looked_at_pending.append(not self.done())
            return super().exception(timeout)

    class OneByOneLanes:
        """Devices one after the other on a thread of their own, each a little late."""

        def submit(self, fn, *args):
            future = SpyFuture()

            def work():
                time.sleep(0.005)
                future.set_running_or_notify_cancel()
                future.set_result(fn(*args))

            previous = getattr(self, "last", None)

            def after():
                if previous is not None:
                    previous.join()
                work()

            self.last = threading.Thread(target=after)
            self.last.start()
            return future

    monkeypatch.setattr(runner_module, "device_lanes", lambda workers: OneByOneLanes())
    rows = [{"iccid": d, "username": "ann", "cost_center_1": "CC-9"} for d in jasper_devices]
    result = submit(repo, settings, "username_cost_center", "jasper", rows)
    changes = run_all_stages(repo, settings, result.id, fake_key, "jasper")
    assert {c.status for c in changes.values()} == {"PROCESSED"}
    assert looked_at_pending and not any(looked_at_pending)
