"""The AMOP database through the driver alone (sqlite3, psycopg2), without SQLAlchemy.

Importing SQLAlchemy costs a command-line call about 0.2 s, more than the work of
``bulk-changes send`` itself; the few single-statement reads and writes such commands
need go through here. Code that holds an Engine passes ``engine.raw_connection``, so the
same SQL serves the queue sensor and the CLI.

Each statement is its own transaction (autocommit): nothing here needs more, and a
connection is never left idle inside a transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any

from bulk_changes.paths import sqlite_path

Connection = Any  # a DB-API 2.0 connection (sqlite3 or psycopg2)
Connect = Callable[[], Connection]

# SQLite waits this long for another process's write lock (as db/engine.py's engines do)
BUSY_TIMEOUT_SECONDS = 60
_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")


def connector(url: str) -> Connect:
    """A function opening a new connection to the database at ``url`` (sqlite:/// or
    postgresql://). Nothing connects until it is called."""
    path = sqlite_path(url)
    if path is not None:
        return lambda: _sqlite(str(path))
    if url.startswith(("postgresql", "postgres")):
        dsn = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)
        return lambda: _postgres(dsn)
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


def _sqlite(path: str) -> Connection:
    import sqlite3

    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    return conn


def _postgres(dsn: str) -> Connection:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _is_postgres(conn: Connection) -> bool:
    return type(conn).__module__.startswith("psycopg2") or hasattr(conn, "get_dsn_parameters")


def _driver(conn: Connection) -> Connection:
    """The driver's own connection under SQLAlchemy's pooled proxy, if it is one."""
    return getattr(conn, "driver_connection", None) or getattr(conn, "dbapi_connection", conn)


def _statement(conn: Connection, sql: str) -> str:
    """``:name`` parameters in the driver's own style."""
    if _is_postgres(_driver(conn)):
        return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    return sql


@contextmanager
def opened(connect: Connect) -> Iterator[Connection]:
    with closing(connect()) as conn:
        yield conn


def execute(conn: Connection, sql: str, params: dict[str, Any] | None = None) -> int:
    """One statement, committed. -> rows affected."""
    cursor = conn.cursor()
    try:
        cursor.execute(_statement(conn, sql), params or {})
        count = int(cursor.rowcount)
    finally:
        cursor.close()
    conn.commit()
    return count


def fetch(conn: Connection, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
    cursor = conn.cursor()
    try:
        cursor.execute(_statement(conn, sql), params or {})
        rows = list(cursor.fetchall())
    finally:
        cursor.close()
    conn.commit()  # ends the read's transaction (psycopg2 outside autocommit)
    return rows


def timestamp(conn: Connection, moment: datetime) -> Any:
    """A UTC moment as the column stores it: SQLAlchemy's SQLite text form (naive UTC),
    or the datetime itself for PostgreSQL."""
    moment = moment.astimezone(UTC)
    if _is_postgres(_driver(conn)):
        return moment
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def read_timestamp(value: Any) -> datetime | None:
    """A stored moment (text from SQLite, a datetime from PostgreSQL) as an aware UTC
    datetime."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def schema_version(conn: Connection) -> int:
    """The AMOP schema's version (0 for a database without the AMOP tables)."""
    try:
        rows = fetch(conn, "SELECT MAX(version) FROM schema_version")
    except Exception as exc:
        if "schema_version" not in str(exc):
            raise
        conn.rollback()
        return 0
    return int(rows[0][0] or 0) if rows else 0
