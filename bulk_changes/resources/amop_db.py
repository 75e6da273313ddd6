"""The AMOP database as a Dagster resource."""

from __future__ import annotations

import threading

from dagster import ConfigurableResource
from sqlalchemy import Engine

from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.paths import default_database_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, schema upgraded on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url)
            upgrade(engine)
            _engines[url] = engine
        return engine


class AmopDatabase(ConfigurableResource):
    """``url`` empty: $BULK_CHANGES_DB_URL, else a SQLite file under $BULK_CHANGES_HOME."""

    url: str = ""

    def resolved_url(self) -> str:
        return self.url or default_database_url()

    def engine(self) -> Engine:
        return engine_for(self.resolved_url())

    def repository(self) -> Repository:
        return Repository(self.engine())

    def limiter(self) -> DbLimiter:
        return DbLimiter(self.engine())
