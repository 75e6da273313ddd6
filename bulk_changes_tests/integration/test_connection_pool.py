"""A process's connections to the AMOP database on PostgreSQL: one small pool that its
threads borrow from for one short transaction at a time (docs/production.md)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import yaml
from sqlalchemy import event, text

from bulk_changes.db.engine import APPLICATION_NAME, make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.environments import wire
from bulk_changes.intake import inventory_rows
from bulk_changes.jobs import process_bulk_change
from bulk_changes.launcher.tenants import simulator_tenants
from bulk_changes.resources.amop_db import AmopDatabase, engine_for
from bulk_changes.resources.apis import JasperApi, ProcessingSettings, RevioApi, TelegenceApi
from bulk_changes.resources.tenant_config import TenantConfig, load_settings
from bulk_changes.resources.webhooks import NotificationSettings
from bulk_changes.simulators import seed_from_inventory_rows, start_simulators
from bulk_changes_tests.conftest import submit
from bulk_changes_tests.helpers import iccid
from bulk_changes_tests.notify_fakes import FakeMailer, FakeWebhookSender
from bulk_changes_tests.postgres import database_url, fresh_database, require_postgres
from bulk_changes_tests.unit.test_ops import run_config

DEVICES = 40


@pytest.fixture
def pg_url():
    require_postgres()
    with fresh_database("pool_test") as name:
        url = database_url(name)
        yield url
        engine = engine_for(url)
        engine.dispose()


class Holdings:
    """Connections checked out of an engine's pool, per thread and in all, at most."""

    def __init__(self, engine) -> None:
        self._lock = threading.Lock()
        self._by_thread: Counter[int] = Counter()
        self.most_by_one_thread = 0
        self.most_at_once = 0
        event.listen(engine, "checkout", self._out)
        event.listen(engine, "checkin", self._in)

    def _out(self, *_args) -> None:
        with self._lock:
            me = threading.get_ident()
            self._by_thread[me] += 1
            self.most_by_one_thread = max(self.most_by_one_thread, self._by_thread[me])
            self.most_at_once = max(self.most_at_once, sum(self._by_thread.values()))

    def _in(self, *_args) -> None:
        with self._lock:
            me = threading.get_ident()
            # a connection given back by another thread than the one that took it (the
            # pool's cleanup) counts against the thread that took it: look it up
            owner = me if self._by_thread[me] else next(t for t, n in self._by_thread.items() if n)
            self._by_thread[owner] -= 1


@pytest.fixture
def sims():
    sims = start_simulators()
    # the documented limits, ten times faster: the limiter's transactions as in production
    sims.jasper.configure(rate_limit=50)
    sims.revio.configure(rate_limit=5000)
    yield sims
    sims.stop()


def test_a_bulk_change_runs_on_a_pool_of_two_and_no_thread_holds_two_connections(
    pg_url, sims, tmp_path, fake_key
):
    """The whole job through the real clients and limiter: device threads, the limiter's
    next-turn thread and the op's each take a connection only for one transaction and give
    it back before taking another (or calling a vendor), so a pool smaller than the threads
    bounds the process's connections and never deadlocks."""
    tenants = simulator_tenants(sims)
    tenants["accounts"]["jasper-e2e"]["calls_per_second"] = 50
    tenants["accounts"]["revio-e2e"].update(calls_per_minute=5000, password="sim-revio-password")
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(tenants))
    engine = engine_for(pg_url, pool_size=2)
    holdings = Holdings(engine)
    repo = Repository(engine)
    rows = [
        {
            "integration": "jasper",
            "iccid": iccid(9100 + n),
            "status": "ACTIVATED",
            "rate_plan": "IOT_1GB",
            "revio_service_id": str(91_000 + n),
        }
        for n in range(DEVICES)
    ]
    repo.upsert_devices("acme", inventory_rows(rows, "test"))
    seed_from_inventory_rows(sims, rows)
    requests = [
        {"iccid": r["iccid"], "username": f"u{n}", "cost_center_1": "CC"}
        for n, r in enumerate(rows)
    ]
    result = submit(repo, load_settings(str(path)), "username_cost_center", "jasper", requests)
    given = wire(
        {
            "amop_db": AmopDatabase(url=pg_url, pool_size=2),
            "tenant_config": TenantConfig(path=str(path)),
            "jasper": JasperApi(),
            "telegence": TelegenceApi(),
            "revio": RevioApi(),
            "processing": ProcessingSettings(base_delay_seconds=0.0, max_delay_seconds=0.0),
            "mail": FakeMailer(key=fake_key),
            "webhooks": FakeWebhookSender(key=fake_key),
            "notifications": NotificationSettings(),
        }
    )

    outcome = process_bulk_change.execute_in_process(
        run_config=run_config(result.id, batch_size=10), resources=given
    )

    assert outcome.success
    assert repo.counts(result.id) == {"PROCESSED": DEVICES}
    assert sims.jasper.stats()["violations"] == {"rate": 0, "in_flight": 0}
    assert holdings.most_by_one_thread == 1
    assert holdings.most_at_once <= 2


def test_the_pool_opens_no_more_connections_than_its_size(pg_url):
    engine = make_engine(pg_url, pool_size=3)
    database = pg_url.rsplit("/", 1)[1]
    barrier = threading.Barrier(8)
    seen: list[int] = []

    def transaction() -> None:
        barrier.wait()
        with engine.begin() as conn:
            seen.append(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = :db AND application_name = :app"
                    ),
                    {"db": database, "app": APPLICATION_NAME},
                ).scalar_one()
            )
            conn.execute(text("SELECT pg_sleep(0.05)"))

    threads = [threading.Thread(target=transaction) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()

    assert len(seen) == 8  # every thread had its transaction, waiting its turn for one
    assert max(seen) <= 3


def test_a_process_starting_on_a_current_database_takes_no_upgrade_lock(pg_url):
    """Run workers starting together each upgrade on first use: with the schema current,
    none waits for the upgraders' lock (held here by another session) in an open
    transaction."""
    engine = make_engine(pg_url)
    upgrade(engine)
    finished = threading.Event()
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(74210001)"))
        thread = threading.Thread(target=lambda: (upgrade(engine), finished.set()), daemon=True)
        thread.start()
        done_while_locked = finished.wait(10)
        holder.execute(text("SELECT pg_advisory_unlock(74210001)"))
        holder.commit()
    thread.join(30)
    engine.dispose()

    assert done_while_locked
