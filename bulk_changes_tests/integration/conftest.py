from __future__ import annotations

import pytest
from sqlalchemy import text

from bulk_changes.db.engine import make_engine
from bulk_changes.db.schema import upgrade
from bulk_changes_tests.postgres import database_url, fresh_database, require_postgres


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    require_postgres()
    with fresh_database("bulk_changes_test") as name:
        yield database_url(name)


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
