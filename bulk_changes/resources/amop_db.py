"""The AMOP database as a Dagster resource."""

from __future__ import annotations

import threading

from dagster import ConfigurableResource, InitResourceContext
from sqlalchemy import Engine

from bulk_changes.db.engine import DEFAULT_POOL_SIZE, make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.db.store_errors import TranslatedLimiter
from bulk_changes.paths import default_database_url
from bulk_changes.run_worker_record import register_run_worker

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine_for(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """One engine per URL per process, schema upgraded on first use. Its pool is sized
    by the first caller: the process's connections stay bounded by one pool."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url, pool_size)
            upgrade(engine)
            _engines[url] = engine
        return engine


_limiters: dict[int, TranslatedLimiter] = {}


def limiter_for(engine: Engine) -> TranslatedLimiter:
    """One limiter per engine per process: the steps running at once in a run worker
    (threaded executor) queue on its in-process gates and hand its slots on, instead of
    contending for the account through the database."""
    with _lock:
        limiter = _limiters.get(id(engine))
        if limiter is None:
            limiter = _limiters[id(engine)] = TranslatedLimiter(DbLimiter(engine))
        return limiter


class AmopDatabase(ConfigurableResource):
    """``url`` empty: $BULK_CHANGES_DB_URL, else a SQLite file under $BULK_CHANGES_HOME.

    Set up in a run's worker, it also records that process on the run (host, pid) so
    ``dead_run_worker_sensor`` can tell when it dies (every op of the job uses it)."""

    url: str = ""
    # PostgreSQL: the most connections this process holds to the database, shared by all
    # its threads; each borrows one only for a short transaction (docs/production.md)
    pool_size: int = DEFAULT_POOL_SIZE

    def setup_for_execution(self, context: InitResourceContext) -> None:
        register_run_worker(context.instance, context.dagster_run, context.log)

    def resolved_url(self) -> str:
        return self.url or default_database_url()

    def engine(self) -> Engine:
        return engine_for(self.resolved_url(), self.pool_size)

    def repository(self) -> Repository:
        return Repository(self.engine())

    def limiter(self) -> TranslatedLimiter:
        return limiter_for(self.engine())
