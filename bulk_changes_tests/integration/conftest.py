from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from bulk_changes.db.engine import make_engine
from bulk_changes.db.schema import upgrade
from bulk_changes_tests.conftest import require_service

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    require_service(
        "PostgreSQL at 127.0.0.1:5432",
        _pg_reachable(),
        "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    )
    name = f"bulk_changes_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'amop.sqlite'}"
    base = request.getfixturevalue("pg_database")
    # each test gets its own schema state: drop everything first
    engine = make_engine(base)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return base


@pytest.fixture
def any_engine(any_db_url):
    engine = make_engine(any_db_url)
    upgrade(engine)
    yield engine
    engine.dispose()
