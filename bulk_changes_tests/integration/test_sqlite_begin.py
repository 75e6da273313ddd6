"""SQLite transactions begin with BEGIN IMMEDIATE on the driver's connection: a database
another connection keeps locked fails as SQLAlchemy's error (the store's edge translates
it), and the process's writers are not left waiting on the failed one."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from bulk_changes.db.engine import make_engine


def test_a_transaction_takes_the_write_lock_when_it_begins(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    with engine.begin():
        other = sqlite3.connect(tmp_path / "amop.sqlite", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    engine.dispose()


def test_a_begin_refused_by_a_locked_database_fails_as_sqlalchemys_error_and_frees_the_next(
    tmp_path,
) -> None:
    path = tmp_path / "amop.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
        conn.execute(text("PRAGMA busy_timeout=0"))  # this pooled connection gives up at once
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(OperationalError, match="locked"), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    holder.execute("COMMIT")
    holder.close()

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))

    # another thread: the writer lock is reentrant, this one would take it again anyway
    writer = threading.Thread(target=insert, daemon=True)
    writer.start()
    writer.join(10)
    assert not writer.is_alive(), "the failed BEGIN kept the process's writer lock"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == [2]
    engine.dispose()


def test_a_transaction_is_committed_before_the_process_lets_its_next_writer_in(tmp_path) -> None:
    # SQLAlchemy tells its listeners of a commit before the driver commits: a listener
    # registered after the engine's own runs once the process's writer lock is let go,
    # when the next writer of the process would begin
    path = tmp_path / "amop.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    seen: list[object] = []

    @event.listens_for(engine, "commit")
    def _next_writer(connection) -> None:  # type: ignore[no-untyped-def]
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            seen.append(other.execute("SELECT v FROM t").fetchall())
            other.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            other.close()

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert seen == [[(1,)]]
    engine.dispose()


def test_a_rolled_back_transaction_leaves_nothing_and_frees_the_next_writer(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("the caller gave up")

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))

    writer = threading.Thread(target=insert, daemon=True)
    writer.start()
    writer.join(10)
    assert not writer.is_alive(), "the rolled back transaction kept the process's writer lock"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == [2]
    engine.dispose()
