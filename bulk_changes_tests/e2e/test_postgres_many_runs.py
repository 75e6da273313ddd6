"""Many runs at once on PostgreSQL (issue 20): tenants each with their own Jasper and Rev.io
accounts, one bulk change each, all sent through the queue at once, the AMOP database and
Dagster's storage on PostgreSQL (deploy/dagster.yaml), one long-lived code server as in
production. Every connection to the AMOP database is dropped once mid-way, as a failover
would. Every bulk change ends final, every run ends SUCCESS, no write reaches a simulator
twice, and the AMOP database never sees more connections than docs/production.md says a
host needs for that many runs.

Time is compressed (budgets x SCALE) and the bulk changes are small: what is tested is
the runs' concurrency on one database, not the budgets."""

from __future__ import annotations

import time

import pytest
from dagster import DagsterInstance, RunsFilter

from bench.pg_sampler import PgSampler
from bench.run_bench import configure, credentials, inventory, request_rows, tenants_file
from bench.scenarios import many_accounts
from bulk_changes.db.engine import DEFAULT_POOL_SIZE, amop_connections_needed
from bulk_changes.launcher import start_stack, stop_stack
from bulk_changes.launcher.instance import production_instance
from bulk_changes_tests.postgres import PG_ADMIN_URL, require_postgres, terminate_connections

pytestmark = pytest.mark.e2e

RUNS = 6
DEVICES = 30
SCALE = 5.0


@pytest.fixture(scope="module")
def scenario():
    return many_accounts("many_runs", RUNS, DEVICES)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, scenario, monkeypatch_module):
    import yaml

    require_postgres()
    instance = production_instance()  # 10 runs at once, at most 3 of any one tenant
    stack = start_stack(
        tmp_path_factory.mktemp("e2e_pg_many"),
        backend="postgresql",
        tenants=tenants_file(scenario, SCALE),
        credentials=credentials(scenario),
        configure_sims=configure(scenario, SCALE),
        dagster_yaml=yaml.safe_dump(instance),
        # every run's two batch steps at once
        pool_limits={"bulk_changes_devices": 2 * RUNS},
        code_server=True,
    )
    for name, value in stack.env.items():
        monkeypatch_module.setenv(name, value)
    yield stack
    stop_stack(stack)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def runs_of(instance, bulk_ids: list[int]) -> list:
    return [
        run
        for bulk_id in bulk_ids
        for run in instance.get_runs(
            filters=RunsFilter(tags={"bulk_changes/bulk_change_id": str(bulk_id)})
        )
    ]


def test_many_runs_at_once_end_final_with_no_write_repeated_and_connections_bounded(
    stack, scenario
):
    bulk_ids = []
    for index, send in enumerate(scenario.sends, start=1):
        rows = inventory(index, "jasper", DEVICES, 0)
        stack.import_devices(send.tenant, rows)
        bulk_ids.append(
            stack.create(
                send.tenant,
                send.change_type,
                "jasper",
                request_rows(send.change_type, "jasper", rows),
            )
        )
    sampler = PgSampler(PG_ADMIN_URL, [stack.amop_database], interval=0.2).start()
    try:
        for bulk_id in bulk_ids:
            stack.queue.send({"bulk_change_id": bulk_id})
        # once a few devices are done somewhere, every AMOP connection is dropped
        deadline = time.monotonic() + 120
        while sum(stack.repo.counts(b).get("PROCESSED", 0) for b in bulk_ids) < RUNS * 3:
            assert time.monotonic() < deadline, "no device processed"
            time.sleep(0.3)
        assert terminate_connections(stack.amop_database) > 0
        stack.wait_final(bulk_ids, timeout=240)
    finally:
        figures = sampler.stop()

    repo = stack.repo
    for bulk_id in bulk_ids:
        assert repo.get_bulk_change(bulk_id).status == "PROCESSED"
        assert repo.counts(bulk_id) == {"PROCESSED": DEVICES}
    with DagsterInstance.get() as instance:
        deadline = time.monotonic() + 60
        while not all(r.is_finished for r in runs_of(instance, bulk_ids)):
            assert time.monotonic() < deadline, "runs still going after their bulk changes"
            time.sleep(0.5)
        finished = runs_of(instance, bulk_ids)
    # a run failed by the dropped connections is retried to success (run_retries)
    for bulk_id in bulk_ids:
        statuses = [
            r.status.value
            for r in finished
            if r.tags["bulk_changes/bulk_change_id"] == str(bulk_id)
        ]
        assert "SUCCESS" in statuses, (bulk_id, statuses)
    assert {s.system: s.stats()["repeated_writes"] for s in stack.sims.all()} == {
        "jasper": 0,
        "telegence": 0,
        "revio": 0,
    }
    writes = [
        (c["method"], c["path"])
        for sim in (stack.sims.jasper, stack.sims.revio)
        for c in sim.calls()
        if c["method"] in ("PUT", "PATCH") and 200 <= c["status"] < 300
    ]
    assert len(writes) == len(set(writes)) == 2 * RUNS * DEVICES
    # the run workers and the code server, each its pool; this test's process its own
    bound = amop_connections_needed(RUNS, code_servers=1) + DEFAULT_POOL_SIZE
    assert 0 < figures["peak_connections"] <= bound, figures
    print(
        f"\n{RUNS} runs x {DEVICES} devices on PostgreSQL: AMOP connections at peak"
        f" {figures['peak_connections']} (bound {bound}), {figures}"
    )
