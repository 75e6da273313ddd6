"""Engines for the AMOP database, with the settings each backend needs."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, PoolProxiedConnection

# Each pooled connection keeps a page cache of its own (SQLite's default: 2 MB), filled
# as the database grows; in WAL mode another connection's write empties it anyway.
SQLITE_CACHE_KIB = 512

# PostgreSQL: the most connections one process holds to the AMOP database. Its threads
# (a run worker's device threads, the limiter's next-turn thread, the op's own thread; a
# code server's sensors) borrow one for one short transaction and give it back before any
# vendor call or wait, so a few serve them all: a thread that finds none free waits in
# this process for the next one given back. A host then needs at most this many per
# process (docs/production.md: connections for N runs at once).
DEFAULT_POOL_SIZE = 2
# how long a thread waits for a connection of the pool before the transaction fails (a
# pool this long exhausted is a stuck transaction, not load: transactions take ms)
POOL_TIMEOUT_SECONDS = 60.0
# how our sessions show in pg_stat_activity (Dagster's storage: "dagster", deploy/)
APPLICATION_NAME = "bulk_changes"
# a SQLite connection's info: it holds the process's writer lock (its transaction is open)
_WRITER_HELD = "bulk_changes.sqlite_writer_held"


def normalize_url(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the project ships psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """The engine of a process. PostgreSQL: at most ``pool_size`` connections, none
    beyond it (no overflow), each checked before use (a connection the server dropped is
    replaced instead of failing the transaction)."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _make_sqlite_writes_wait(engine)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=max(1, pool_size),
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # the most recently used connection first: when few threads are busy, the pool's
        # other connections stay idle and the server's caches warm on the used ones
        pool_use_lifo=True,
        connect_args={"application_name": APPLICATION_NAME},
    )
    _LEAN[engine] = LeanBackend(None)
    return engine


def amop_connections_needed(
    runs: int, pool_size: int = DEFAULT_POOL_SIZE, code_servers: int = 1, cli_commands: int = 0
) -> int:
    """The most connections a host holds to the AMOP database on PostgreSQL with ``runs``
    runs at once: a pool of ``pool_size`` per run worker and per code server (it evaluates
    the sensors), one per CLI command running (it pools nothing). The daemon and the
    webserver open none. docs/production.md sets max_connections or PgBouncer from it."""
    return pool_size * (runs + code_servers) + cli_commands


def make_short_lived_engine(url: str) -> Engine:
    """An engine that holds no connection between uses (CLI commands, sensors)."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return make_engine(url)
    return create_engine(
        url, poolclass=NullPool, connect_args={"application_name": APPLICATION_NAME}
    )


def _make_sqlite_writes_wait(engine: Engine) -> None:
    # Several processes and threads write one SQLite file. A deferred transaction that
    # reads and then writes fails at once with "database is locked" instead of waiting;
    # taking the write lock at BEGIN makes every writer wait its turn (busy timeout).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    # Threads of one process queue on a lock rather than in SQLite's busy handler, which
    # sleeps in steps of up to 100 ms between tries: measured, that sleeping was most of
    # a device's time. Other processes still wait in the busy handler.
    writer = SqliteWriter(engine)
    _LEAN[engine] = LeanBackend(writer)

    @event.listens_for(engine, "engine_disposed")
    def _on_dispose(_engine):  # type: ignore[no-untyped-def]
        writer.drop()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # on the driver's connection: through SQLAlchemy's execution the BEGIN cost
        # a sixth of a short transaction's CPU (about 10 us)
        writer.begin(connection.connection.driver_connection)
        connection.info[_WRITER_HELD] = True

    # SQLAlchemy tells of a commit or rollback before it asks the driver: the lock is let
    # go only once the driver has ended the transaction (see SqliteWriter). SQLAlchemy's
    # own commit or rollback after this finds no transaction open: a no-op.
    @event.listens_for(engine, "commit")
    def _on_commit(connection):  # type: ignore[no-untyped-def]
        if connection.info.pop(_WRITER_HELD, False):
            writer.commit(connection.connection.driver_connection)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection):  # type: ignore[no-untyped-def]
        if connection.info.pop(_WRITER_HELD, False):
            writer.rollback(connection.connection.driver_connection)


class SqliteWriter:
    """The writer lock of one SQLite engine's process, and the transactions begun and
    ended under it on the driver's connection: SQLAlchemy's (the engine's listeners) and
    db/driver_transactions.py's alike.

    The latter all run on one connection of the engine's kept here (``connection``), used
    only by the thread holding the lock: checking one out of the pool and back for each
    transaction cost about 6 us, a fifth of a one-row transaction's CPU."""

    def __init__(self, engine: Engine) -> None:
        self.lock = threading.RLock()
        self._engine = engine
        self._kept: PoolProxiedConnection | None = None
        self._kept_pid = 0

    def begin(self, driver: sqlite3.Connection) -> None:
        """The lock, then SQLite's write lock (BEGIN IMMEDIATE); neither kept on failure."""
        self.lock.acquire()
        try:
            self.begin_held(driver)
        except BaseException:
            self.lock.release()
            raise

    @staticmethod
    def begin_held(driver: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, the lock held by the caller."""
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            # told as SQLAlchemy tells the driver's errors (store_errors translates them)
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc

    # The lock is let go only once the driver has ended the transaction. Let go before,
    # the next thread's BEGIN IMMEDIATE found SQLite's write lock still held and slept in
    # the busy handler (1-25 ms; two threads of one-row transactions: 137 of 4,000 over
    # 1 ms).
    def commit(self, driver: sqlite3.Connection) -> None:
        try:
            driver.execute("COMMIT")
        except sqlite3.Error as exc:
            # not committed: rolled back here (the lock is never kept past this)
            if driver.in_transaction:
                driver.rollback()
            raise DBAPIError.instance("COMMIT", None, exc, sqlite3.Error) from exc
        finally:
            self.lock.release()

    def rollback(self, driver: sqlite3.Connection) -> None:
        try:
            if driver.in_transaction:
                driver.rollback()
        finally:
            self.lock.release()

    def connection(self) -> PoolProxiedConnection:
        """The connection of the transactions on the driver, the lock held by the caller:
        opened by the engine's pool (its connect settings) and then detached from it, so
        the pool's connections are all still there for the others (a detached one is
        closed here, see ``drop``, not by the pool). A process forked
        with it opens its own."""
        kept = self._kept
        if kept is None or self._kept_pid != os.getpid() or not kept.is_valid:
            kept = self._engine.raw_connection()
            kept.detach()
            self._kept, self._kept_pid = kept, os.getpid()
        return kept

    def drop(self, kept: PoolProxiedConnection | None = None) -> None:
        """Close the kept connection (``kept``, if still the one kept): lost, or the
        engine disposed of (its next transaction opens a new one)."""
        with self.lock:
            if self._kept is not None and kept in (None, self._kept):
                if self._kept_pid == os.getpid():
                    with suppress(sqlite3.Error):
                        self._kept.dbapi_connection.close()  # type: ignore[union-attr]
                self._kept = None


class LeanBackend:
    """How an engine made here has its transactions on the driver alone
    (db/driver_transactions.py)."""

    __slots__ = ("writer", "listeners")

    def __init__(self, writer: SqliteWriter | None) -> None:
        # SQLite's writer; None for PostgreSQL, whose driver begins a transaction itself
        self.writer = writer
        # told "begin", "commit" or "rollback" as such a transaction does it (tests count
        # transactions, as SQLAlchemy's events tell of its own)
        self.listeners: list[Callable[[str], None]] = []


# The engines made here. Other engines (tests' own) are not in it.
_LEAN: weakref.WeakKeyDictionary[Engine, LeanBackend] = weakref.WeakKeyDictionary()


def lean_backend(engine: Engine) -> LeanBackend | None:
    """-> how ``engine``'s transactions go on the driver; None if it was not made here."""
    try:
        return _LEAN[engine]
    except (KeyError, TypeError):
        return None
