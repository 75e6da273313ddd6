"""A few hot statements executed on the driver's cursor, inside a transaction.

Every device change writes its journal (db/journal.py) with a handful of one-row
statements. Through SQLAlchemy's execution each cost about 45 us of CPU (its execution
context, events, result set-up, the cache key of the compiled statement), against under
10 us on the driver's cursor: more than the statements themselves and SQLite's commits
together (a run worker's largest share after the HTTP calls). Here a statement is
compiled by SQLAlchemy once per dialect and set of parameter names, and executed with
the driver's own cursor on the transaction's connection. The transaction is SQLAlchemy's
(``engine.begin()``) or, for the hot ones, db/driver_transactions.py's on the driver
with the same guarantees (the pool, SQLite's BEGIN IMMEDIATE and writer lock, commit,
rollback on any error); every value's conversion stays SQLAlchemy's (the bind
processors of the columns' types, e.g. UtcDateTime's). The driver's errors come out as
SQLAlchemy's (a lost PostgreSQL connection is invalidated as SQLAlchemy would), so
``store_errors`` tells them as it tells any other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.expression import Executable

Params = Mapping[str, Any]


class InTransaction(Protocol):
    """A transaction the statements run in: SQLAlchemy's Connection in ``engine.begin()``,
    or db/driver_transactions.py's ``DriverTransaction``."""

    @property
    def connection(self) -> PoolProxiedConnection: ...

    @property
    def dialect(self) -> Dialect: ...

    def invalidate(self, exception: BaseException | None = None) -> None: ...


@dataclass(frozen=True)
class _Form:
    """One statement compiled for one dialect and set of parameter names."""

    sql: str
    # (bind name, its type's conversion or None), in the order a positional driver
    # takes them; every bind once for a driver that takes them by name
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    positional: bool
    # the binds the statement carries itself (literal values in its WHERE)
    defaults: Mapping[str, Any]

    def parameters(self, params: Params) -> Any:
        values = {**self.defaults, **params} if self.defaults else params
        converted = [
            (process(values[name]) if process is not None else values[name])
            for name, process in self.binds
        ]
        if self.positional:
            return tuple(converted)
        return dict(zip((name for name, _ in self.binds), converted, strict=True))


def _compile(statement: Any, dialect: Dialect, keys: Sequence[str]) -> _Form:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    binds = compiled.binds
    defaults = {name: bind.effective_value for name, bind in binds.items() if name not in keys}
    names = tuple(compiled.positiontup) if dialect.positional else tuple(binds)
    converters = tuple(
        (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names
    )
    return _Form(compiled.string, converters, dialect.positional, defaults)


class DriverStatement:
    """``statement`` (an UPDATE or INSERT of SQLAlchemy Core, its parameters by name; or
    a SELECT, see ``column``) executed on the driver's cursor of a SQLAlchemy connection
    in a transaction."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, tuple[str, ...]], _Form] = {}
        self._lock = threading.Lock()

    def _form(self, dialect: Dialect, keys: tuple[str, ...]) -> _Form:
        key = (dialect.name, keys)
        form = self._forms.get(key)
        if form is None:
            with self._lock:
                form = self._forms.get(key)
                if form is None:
                    form = self._forms[key] = _compile(self.statement, dialect, keys)
        return form

    def execute(self, conn: InTransaction, params: Params) -> int:
        """-> the rows the statement changed."""
        form = self._form(conn.dialect, tuple(params))
        return _run(conn, form, form.parameters(params))

    def column(self, conn: InTransaction, params: Params) -> list[Any]:
        """A SELECT's first column, row by row, as the driver gives it (no result type's
        conversion: for columns whose driver values are already the ones wanted, e.g.
        Float and Integer)."""
        form = self._form(conn.dialect, tuple(params))
        return _run(conn, form, form.parameters(params), fetch=True)


class DriverInsert:
    """An INSERT of several rows at once (one statement, rows of the same columns):
    ``INSERT ... VALUES (...), (...)``, optionally leaving rows whose primary key exists
    (``ON CONFLICT DO NOTHING``, SQLite and PostgreSQL alike)."""

    def __init__(self, table: Table, *, on_conflict_do_nothing: bool = False) -> None:
        self.table = table
        self.on_conflict_do_nothing = on_conflict_do_nothing
        self._forms: dict[tuple[str, tuple[str, ...], int], _Form] = {}
        self._lock = threading.Lock()

    def _statement(self, dialect: Dialect, keys: tuple[str, ...], count: int) -> Any:
        columns = self.table.c
        rows = [
            {k: bindparam(f"{k}_{i}", type_=columns[k].type) for k in keys} for i in range(count)
        ]
        if not self.on_conflict_do_nothing:
            return insert(self.table).values(rows)
        # imported here: the PostgreSQL dialect's modules cost every CLI command on
        # SQLite 25 ms of start-up (the engine imports its own dialect anyway)
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(self.table).values(rows).on_conflict_do_nothing()

    def _form(self, dialect: Dialect, keys: tuple[str, ...], count: int) -> _Form:
        key = (dialect.name, keys, count)
        form = self._forms.get(key)
        if form is None:
            with self._lock:
                form = self._forms.get(key)
                if form is None:
                    names = tuple(f"{k}_{i}" for i in range(count) for k in keys)
                    form = _compile(self._statement(dialect, keys, count), dialect, names)
                    self._forms[key] = form
        return form

    def execute(self, conn: InTransaction, rows: Sequence[Params]) -> int:
        """-> the rows inserted. Every row has the keys of the first."""
        if not rows:
            return 0
        keys = tuple(rows[0])
        form = self._form(conn.dialect, keys, len(rows))
        params = {f"{k}_{i}": row[k] for i, row in enumerate(rows) for k in keys}
        return _run(conn, form, form.parameters(params))


@overload
def _run(
    conn: InTransaction, form: _Form, parameters: Any, fetch: Literal[False] = False
) -> int: ...
@overload
def _run(conn: InTransaction, form: _Form, parameters: Any, fetch: Literal[True]) -> list[Any]: ...
def _run(conn: InTransaction, form: _Form, parameters: Any, fetch: bool = False) -> int | list[Any]:
    """-> the rows changed; with ``fetch``, the first column of the rows selected."""
    fairy = conn.connection  # the pool's connection, in the transaction begun
    dialect = conn.dialect
    dbapi = dialect.loaded_dbapi
    cursor = fairy.cursor()
    try:
        cursor.execute(form.sql, parameters)
        if fetch:
            return [row[0] for row in cursor.fetchall()]
        return int(cursor.rowcount)
    except dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)  # as SQLAlchemy's execution does: never back to the pool
        raise DBAPIError.instance(
            form.sql, parameters, exc, dbapi.Error, connection_invalidated=lost, dialect=dialect
        ) from exc
    finally:
        with suppress(dbapi.Error):  # the connection is gone: its error above says so
            cursor.close()
