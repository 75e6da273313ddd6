"""Answers that leave a write's effect unknown, through the real path: the stage runner,
the real clients over HTTP to the simulators, the AMOP database on SQLite and PostgreSQL.

The simulators apply each faulted write before losing its answer (``faults_apply``), so a
write sent again blind lands twice and shows in their ``repeated_writes``."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bulk_changes.db.repository import Repository
from bulk_changes.domain.retry import RetryPolicy
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.launcher.tenants import simulator_tenants
from bulk_changes.processing.runner import StageRunner
from bulk_changes.processing.service_directory import directory_for
from bulk_changes.resources.amop_db import limiter_for
from bulk_changes.resources.device_work import AccountClients
from bulk_changes.resources.jasper import JasperClient
from bulk_changes.resources.revio import RevioClient
from bulk_changes.resources.telegence import TelegenceClient
from bulk_changes.schemas.tenants_file import parse_settings
from bulk_changes.simulators import SimulatorSet, start_simulators
from bulk_changes.simulators.seeding import seed_from_inventory_rows
from bulk_changes_tests.helpers import iccid, msisdn

POLICY = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05, jitter=0.0)
CLIENT_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def sims() -> Iterator[SimulatorSet]:
    sims = start_simulators()
    yield sims
    sims.stop()


@pytest.fixture(autouse=True)
def fresh(sims: SimulatorSet) -> None:
    for sim in sims.all():
        sim.reset(settings=True)
    sims.telegence.configure(rate_per_second=40, max_in_flight=6)


def settings_for(sims: SimulatorSet, telegence: dict[str, Any] | None = None) -> Any:
    data = simulator_tenants(sims)
    for account in data["accounts"].values():
        account["timeout_seconds"] = CLIENT_TIMEOUT
    data["accounts"]["telegence-e2e"].update(telegence or {})
    data["accounts"]["revio-e2e"]["password"] = "sim-revio-password"  # no env expansion here
    return parse_settings(data)


def devices(count: int) -> list[dict[str, str]]:
    rows = []
    for n in range(count):
        jasper = n % 2 == 0
        rows.append(
            {
                "integration": "jasper" if jasper else "telegence",
                "iccid": iccid(7000 + n),
                "msisdn": "" if jasper else msisdn(7000 + n),
                "status": "ACTIVATED" if jasper else "A",
                "rate_plan": "IOT_1GB" if jasper else "SOC1GB",
                "revio_service_id": str(70_000 + n),
            }
        )
    return rows


def submit(
    repo: Repository, settings: Any, change_type: str, integration: str, rows: list[dict]
) -> int:
    result = submit_bulk_change(
        repo,
        settings,
        SubmitRequest(
            tenant="acme",
            change_type=change_type,
            integration=integration,
            rows=rows,
            idempotency_key=None,
            requested_by="tester",
        ),
    )
    return result.id


def run_device_changes(repo: Repository, settings: Any, bulk_id: int, integration: str) -> None:
    """What the batch op does for the bulk change's pending device changes."""
    bulk = repo.get_bulk_change(bulk_id)
    assert bulk is not None
    tenant = settings.tenant("acme")
    limiter = limiter_for(repo.engine)

    def clients(recorder: Any) -> AccountClients:
        carrier_cls = JasperClient if integration == "jasper" else TelegenceClient
        return AccountClients(
            lambda: carrier_cls(tenant.carrier_account(integration), limiter, recorder),
            lambda: RevioClient(tenant.billing_account(), limiter, recorder),
            directory_for(tenant.billing_account().name, f"run-{bulk_id}"),
        )

    StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=tenant,
        clients_factory=clients,
        policy=POLICY,
        run_id=f"run-{bulk_id}",
        max_workers=4,
        rng=random.Random(1),
    ).run(repo.pending_device_change_ids(bulk_id), STAGE_ORDER)


def run_bulk_change(
    repo: Repository, settings: Any, change_type: str, integration: str, rows: list[dict]
) -> int:
    bulk_id = submit(repo, settings, change_type, integration, rows)
    run_device_changes(repo, settings, bulk_id, integration)
    return bulk_id


def faulty(sims: SimulatorSet, **faults: Any) -> None:
    for sim in sims.all():
        sim.configure(faults_apply=True, timeout_seconds=CLIENT_TIMEOUT + 0.5, seed=7, **faults)


@pytest.fixture
def repo_and_sims(any_engine: Any, sims: SimulatorSet) -> tuple[Repository, SimulatorSet]:
    repo = Repository(any_engine)
    rows = devices(40)
    repo.upsert_devices("acme", inventory_rows(rows, "test"))
    seed_from_inventory_rows(sims, rows)
    return repo, sims


def jasper_rows(count: int) -> list[dict[str, str]]:
    return [
        {"iccid": r["iccid"], "username": f"user-{i}", "cost_center_1": f"CC-{i}"}
        for i, r in enumerate(d for d in devices(40) if d["integration"] == "jasper")
    ][:count]


def test_jasper_answers_without_iccid_are_read_back_never_repeated(repo_and_sims) -> None:
    repo, sims = repo_and_sims
    sims.jasper.configure(unconfirmed_rate=0.3, seed=3)
    bulk_id = run_bulk_change(
        repo, settings_for(sims), "username_cost_center", "jasper", jasper_rows(20)
    )
    assert repo.counts(bulk_id) == {"PROCESSED": 20}
    assert sims.jasper.stats()["repeated_writes"] == 0


def test_faults_after_the_write_was_applied_repeat_no_write(repo_and_sims) -> None:
    repo, sims = repo_and_sims
    faulty(sims, error_rate=0.2, garbage_rate=0.1, timeout_rate=0.05, drop_rate=0.05)
    sims.jasper.configure(unconfirmed_rate=0.05)
    bulk_id = run_bulk_change(
        repo, settings_for(sims), "username_cost_center", "jasper", jasper_rows(20)
    )
    assert repo.counts(bulk_id) == {"PROCESSED": 20}
    assert {s.system: s.stats()["repeated_writes"] for s in sims.all()} == {
        "jasper": 0,
        "telegence": 0,
        "revio": 0,
    }


def test_telegence_rate_plan_after_lost_answers_is_not_repeated(repo_and_sims) -> None:
    repo, sims = repo_and_sims
    faulty(sims, error_rate=0.2, garbage_rate=0.1, timeout_rate=0.05, drop_rate=0.05)
    rows = [
        {"msisdn": d["msisdn"], "rate_plan": "SOC5GB"}
        for d in devices(40)
        if d["integration"] == "telegence"
    ]
    bulk_id = run_bulk_change(repo, settings_for(sims), "carrier_rate_plan", "telegence", rows)
    assert repo.counts(bulk_id) == {"PROCESSED": 20}
    assert sims.telegence.stats()["repeated_writes"] == 0
    assert sims.revio.stats()["repeated_writes"] == 0


def test_the_read_back_is_in_the_audit_trail(repo_and_sims) -> None:
    repo, sims = repo_and_sims
    sims.jasper.configure(unconfirmed_rate=1.0)
    bulk_id = run_bulk_change(
        repo, settings_for(sims), "username_cost_center", "jasper", jasper_rows(1)
    )
    calls = [
        (e["method"], e["response_status"], e["outcome"])
        for e in repo.audit_of(bulk_id)
        if e["system"] == "jasper"
    ]
    assert calls == [("PUT", 200, "retry"), ("GET", 200, "ok")]


def activation_requests(sims: SimulatorSet) -> Counter[str]:
    """Activation requests that reached Telegence, per subscriber number."""
    asked: Counter[str] = Counter()
    for call in sims.telegence.calls():
        if call["endpoint"] == "POST /serviceactivation" and not call["throttled"]:
            for line in call["body"]["serviceActivations"]:
                asked[line["subscriberNumber"]] += 1
    return asked


def activate(repo: Repository, sims: SimulatorSet, count: int, **telegence: Any) -> int:
    """Activation of ``count`` cancelled lines, every activation request's answer lost
    after Telegence took it; -> the bulk change's id."""
    rows = [dict(d) for d in devices(40) if d["integration"] == "telegence"][:count]
    for row in rows:
        row["status"] = "C"  # a cancelled line can be activated again
    repo.upsert_devices("acme", inventory_rows(rows, "test"))
    seed_from_inventory_rows(sims, rows)
    sims.telegence.configure(
        faults_apply=True, error_rate=1.0, faults_writes_only=True, **telegence
    )
    settings = settings_for(
        sims, telegence={"activation_poll_seconds": 0.1, "activation_poll_attempts": 20}
    )
    bulk_id = submit(
        repo,
        settings,
        "device_status",
        "telegence",
        [{"msisdn": r["msisdn"], "status": "A"} for r in rows],
    )
    run_device_changes(repo, settings, bulk_id, "telegence")
    return bulk_id


def test_a_lost_activation_answer_is_watched_on_the_line_never_asked_again(
    any_engine: Any, sims: SimulatorSet
) -> None:
    repo = Repository(any_engine)
    bulk_id = activate(repo, sims, 3, activation_seconds=0.3)
    assert repo.counts(bulk_id) == {"PROCESSED": 3}
    assert sorted(activation_requests(sims).values()) == [1, 1, 1]


def test_an_activation_that_never_shows_ends_api_failed_and_is_not_asked_again(
    any_engine: Any, sims: SimulatorSet
) -> None:
    repo = Repository(any_engine)
    bulk_id = activate(repo, sims, 1, activation_seconds=None)  # completes only when polled
    assert repo.counts(bulk_id) == {"API_FAILED": 1}
    (reason,) = {d.last_error or "" for d in repo.device_changes_of(bulk_id)}
    assert "not requested again" in reason
    assert list(activation_requests(sims).values()) == [1]


def jasper_rate_plan_puts(sims: SimulatorSet) -> Counter[str]:
    return Counter(
        call["key"]
        for call in sims.jasper.calls()
        if call["method"] == "PUT" and not call["throttled"]
    )


def rate_plan_rows(effective: date) -> list[dict[str, str]]:
    return [
        {"iccid": d["iccid"], "rate_plan": "IOT_5GB", "effective_date": effective.isoformat()}
        for d in devices(4)
        if d["integration"] == "jasper"
    ]


def test_a_future_dated_rate_plan_whose_answer_was_lost_ends_api_failed_not_resent(
    repo_and_sims,
) -> None:
    repo, sims = repo_and_sims
    sims.jasper.configure(unconfirmed_rate=1.0)  # 200 without iccid: applied or not?
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    bulk_id = run_bulk_change(
        repo, settings_for(sims), "carrier_rate_plan", "jasper", rate_plan_rows(tomorrow)
    )
    assert repo.counts(bulk_id) == {"API_FAILED": 2}
    reasons = {d.last_error or "" for d in repo.device_changes_of(bulk_id)}
    assert all("not sent again" in r and tomorrow.isoformat() in r for r in reasons)
    assert set(jasper_rate_plan_puts(sims).values()) == {1}


def test_a_rate_plan_effective_today_is_read_back_after_a_lost_answer(repo_and_sims) -> None:
    repo, sims = repo_and_sims
    sims.jasper.configure(unconfirmed_rate=1.0)
    today = datetime.now(UTC).date()
    bulk_id = run_bulk_change(
        repo, settings_for(sims), "carrier_rate_plan", "jasper", rate_plan_rows(today)
    )
    assert repo.counts(bulk_id) == {"PROCESSED": 2}
    assert set(jasper_rate_plan_puts(sims).values()) == {1}
