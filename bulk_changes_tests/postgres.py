"""PostgreSQL for the tests: the local server (127.0.0.1:5432, trust auth, database
``test``), throw-away databases on it, and dropping connections on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from bulk_changes.launcher.postgres import (  # noqa: F401  (the names tests import from here)
    PG_ADMIN_URL,
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_database,
    dagster_pg_env,
    database_url,
    drop_database,
)
from bulk_changes_tests.conftest import require_service

HOW_TO_START = (
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


def pg_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL, except with CI set (then fail)."""
    require_service(f"PostgreSQL at {PG_HOST}:{PG_PORT}", pg_reachable(), HOW_TO_START)


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A database for the duration of the block (dropped afterwards, connections and all)."""
    name = create_database(prefix)
    try:
        yield name
    finally:
        drop_database(name)


def terminate_connections(database: str) -> int:
    """Drop every connection to ``database`` (pg_terminate_backend), as a failover or a
    restarted server would; returns how many were dropped."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        ).scalar_one()
    admin.dispose()
    return int(dropped)
