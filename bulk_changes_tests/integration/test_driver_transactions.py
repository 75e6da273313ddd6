"""Transactions on the driver (db/driver_transactions.py), on SQLite and PostgreSQL: they
commit, roll back on any exception, tell the driver's errors as SQLAlchemy's, let the
process's SQLite writer go once ended, and never use a lost connection again."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from bulk_changes.db.driver_statements import DriverInsert, DriverStatement
from bulk_changes.db.driver_transactions import lean_transaction
from bulk_changes.db.engine import make_engine
from bulk_changes.db.store_errors import store_errors
from bulk_changes.domain.errors import StoreRefused
from bulk_changes_tests.postgres import PG_ADMIN_URL

metadata = MetaData()
rows_table = Table(
    "driver_transaction_rows",
    metadata,
    Column("key", Integer, primary_key=True),
    Column("data", String(16)),
)
INSERT = DriverInsert(rows_table)
BACKEND_PID = DriverStatement(select(func.pg_backend_pid()))


@pytest.fixture
def engine(any_engine):
    rows_table.create(any_engine)
    return any_engine


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    rows_table.create(engine)
    yield engine
    engine.dispose()


def stored(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(rows_table.c.key).order_by(rows_table.c.key)).scalars())


def write_from_another_thread(engine, key: int) -> bool:
    """-> whether another thread of the process could write (the writer lock is free)."""

    def insert() -> None:
        with lean_transaction(engine) as tx:
            INSERT.execute(tx, [{"key": key, "data": "other"}])

    writer = threading.Thread(target=insert, daemon=True)
    writer.start()
    writer.join(10)
    return not writer.is_alive()


def test_a_transaction_commits_its_statements(engine) -> None:
    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}, {"key": 2, "data": "b"}])
    assert stored(engine) == [1, 2]


def test_an_exception_rolls_the_whole_transaction_back(engine) -> None:
    with pytest.raises(LookupError), lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
        raise LookupError("the device is no longer in the inventory")
    assert stored(engine) == []


def test_a_refused_statement_fails_as_sqlalchemys_error_that_store_errors_tells_refused(
    engine,
) -> None:
    @store_errors
    def write() -> None:
        with lean_transaction(engine) as tx:
            INSERT.execute(tx, [{"key": 2, "data": "b"}])
            INSERT.execute(tx, [{"key": 1, "data": "a"}])  # its key is taken

    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
    with pytest.raises(StoreRefused) as refused:
        write()
    assert isinstance(refused.value.__cause__, IntegrityError)
    assert stored(engine) == [1]


def test_the_connection_goes_back_to_the_pool_when_the_transaction_ends(engine) -> None:
    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
    assert engine.pool.checkedout() == 0


def test_a_transaction_after_the_engine_was_disposed_of_commits(engine) -> None:
    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
    engine.dispose()
    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 2, "data": "b"}])
    assert stored(engine) == [1, 2]


def test_an_engine_made_elsewhere_gets_sqlalchemys_transaction(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    rows_table.create(engine)
    with pytest.raises(LookupError), lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
        raise LookupError("rolled back")
    with lean_transaction(engine) as tx:
        INSERT.execute(tx, [{"key": 2, "data": "b"}])
    assert stored(engine) == [2]
    engine.dispose()


# ---- SQLite: the process's writer lock --------------------------------------------


def test_sqlite_a_transaction_holds_the_write_lock_until_it_ends(sqlite_engine, tmp_path) -> None:
    with lean_transaction(sqlite_engine):
        other = sqlite3.connect(tmp_path / "amop.sqlite", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()


def test_sqlite_the_writer_lock_is_let_go_after_a_commit(sqlite_engine) -> None:
    with lean_transaction(sqlite_engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
    assert write_from_another_thread(sqlite_engine, 2)
    assert stored(sqlite_engine) == [1, 2]


def test_sqlite_the_writer_lock_is_let_go_after_a_rollback(sqlite_engine) -> None:
    with pytest.raises(RuntimeError), lean_transaction(sqlite_engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
        raise RuntimeError("the caller gave up")
    assert write_from_another_thread(sqlite_engine, 2)
    assert stored(sqlite_engine) == [2]


def test_sqlite_a_failed_commit_rolls_back_fails_as_sqlalchemys_error_and_lets_the_writer_go(
    tmp_path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    with engine.begin() as conn:
        # a foreign key checked only at COMMIT: the commit fails
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            text(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
                "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    child = Table(
        "child",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("parent", Integer, ForeignKey("parent.id")),
    )
    insert_child = DriverInsert(child)
    with pytest.raises(IntegrityError, match="FOREIGN KEY"), lean_transaction(engine) as tx:
        insert_child.execute(tx, [{"id": 1, "parent": 7}])
    rows_table.create(engine)
    assert write_from_another_thread(engine, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
    engine.dispose()


def test_sqlite_a_begin_refused_by_a_locked_database_fails_as_sqlalchemys_error_and_lets_the_writer_go(  # noqa: E501
    sqlite_engine, tmp_path
) -> None:
    with lean_transaction(sqlite_engine) as tx:
        # the transactions' connection gives up at once on a lock held elsewhere
        tx.connection.execute("PRAGMA busy_timeout=0")
    holder = sqlite3.connect(tmp_path / "amop.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(OperationalError, match="locked"), lean_transaction(sqlite_engine):
        pass
    holder.execute("COMMIT")
    holder.close()
    assert write_from_another_thread(sqlite_engine, 1)
    assert stored(sqlite_engine) == [1]


def test_sqlite_the_transactions_take_none_of_the_pools_connections(sqlite_engine) -> None:
    with lean_transaction(sqlite_engine) as tx:
        INSERT.execute(tx, [{"key": 1, "data": "a"}])
        assert sqlite_engine.pool.checkedout() == 0


# ---- PostgreSQL: a lost connection --------------------------------------------------


def terminate(pid: int) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


@pytest.fixture
def pg_engine(pg_database):
    # one connection: a lost one would be handed out again if it went back to the pool
    engine = make_engine(pg_database, pool_size=1)
    yield engine
    engine.dispose()


def test_postgresql_a_connection_lost_mid_transaction_fails_as_lost_and_is_not_reused(
    pg_engine,
) -> None:
    with pytest.raises(DBAPIError) as lost, lean_transaction(pg_engine) as tx:
        pid = BACKEND_PID.column(tx, {})[0]
        terminate(pid)
        BACKEND_PID.column(tx, {})
    assert lost.value.connection_invalidated
    with lean_transaction(pg_engine) as tx:
        assert BACKEND_PID.column(tx, {})[0] != pid
    assert pg_engine.pool.checkedout() == 0


def test_postgresql_a_connection_dropped_between_transactions_is_replaced(pg_engine) -> None:
    with lean_transaction(pg_engine) as tx:
        pid = BACKEND_PID.column(tx, {})[0]
    terminate(pid)
    with lean_transaction(pg_engine) as tx:  # pre-ping: no error, another connection
        assert BACKEND_PID.column(tx, {})[0] != pid
