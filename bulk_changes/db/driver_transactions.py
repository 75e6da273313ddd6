"""Short write transactions on the driver's connection, without SQLAlchemy's Connection.

A device change makes two or three journal transactions and several of the limiter's,
each of a few one-row statements already run on the driver's cursor
(db/driver_statements.py). What was left of SQLAlchemy in them, its Connection (created,
begun, committed and closed for each transaction, with their events), cost more CPU than
the statements and the commit together: a one-row UPDATE transaction took about 45 us
through ``engine.begin()`` on SQLite (docs/benchmarks.md, lean transactions).

``lean_transaction(engine)`` keeps every guarantee of ``engine.begin()``:

- SQLite: the process's writer lock, then BEGIN IMMEDIATE; the lock let go only once the
  driver's COMMIT or ROLLBACK is done (the engine's own ``SqliteWriter``, shared with
  SQLAlchemy's transactions). All run on one connection the writer keeps, opened by the
  engine's pool (its PRAGMAs), used only under the lock;
- PostgreSQL: a connection borrowed from the engine's pool for the one transaction (its
  size, timeout, pre-ping: a connection the server dropped is replaced) and given back
  at its end, never held across a vendor call or a wait; the driver's own BEGIN before
  the first statement, as under SQLAlchemy;
- any exception rolls the transaction back (and goes on out unchanged);
- the driver's errors come out as SQLAlchemy's (``DBAPIError`` and its subclasses, for
  ``store_errors``); a connection lost (on a statement, the commit or the rollback) is
  invalidated, never used again.

An engine not made by db/engine.py (a test's own) gets ``engine.begin()`` itself: the
statements of db/driver_statements.py run on either.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.pool import PoolProxiedConnection

from bulk_changes.db.engine import LeanBackend, SqliteWriter, lean_backend


class DriverTransaction:
    """What a statement of db/driver_statements.py needs of a transaction: the pool's
    connection (``connection``), the engine's ``dialect``, and ``invalidate``."""

    __slots__ = ("connection", "dialect", "_writer", "lost")

    def __init__(
        self, connection: PoolProxiedConnection, dialect: Dialect, writer: SqliteWriter | None
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self._writer = writer
        self.lost = False

    def invalidate(self, exception: BaseException | None = None) -> None:
        """The connection is lost: closed, and never used again."""
        if self.lost:
            return
        self.lost = True
        if self._writer is not None:
            self._writer.drop(self.connection)  # the next transaction opens another
        elif self.connection.is_valid:
            self.connection.invalidate(exception)  # its place in the pool opened anew


def _told(dialect: Dialect, exc: Exception, lost: bool) -> StatementError:
    """The driver's error as SQLAlchemy tells it (no statement: a commit's, a connect's)."""
    return DBAPIError.instance(
        None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
    )


class lean_transaction:  # noqa: N801  (used as a function: ``with lean_transaction(e) as t``)
    """One transaction of ``engine`` on the driver: -> a ``DriverTransaction`` (or, for an
    engine not made by db/engine.py, the Connection of ``engine.begin()``)."""

    __slots__ = ("engine", "_backend", "_transaction", "_begun")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._backend: LeanBackend | None = None
        self._transaction: DriverTransaction | None = None
        self._begun: Any = None  # engine.begin()'s context, for an engine of elsewhere

    def __enter__(self) -> DriverTransaction | Connection:
        engine = self.engine
        backend = self._backend = lean_backend(engine)
        if backend is None:
            self._begun = engine.begin()
            return self._begun.__enter__()  # type: ignore[no-any-return]
        dialect = engine.dialect
        writer = backend.writer
        if writer is not None:
            writer.lock.acquire()  # let go by the COMMIT or ROLLBACK (or a failed BEGIN)
            try:
                fairy = writer.connection()
                writer.begin_held(fairy.dbapi_connection)  # type: ignore[arg-type]
            except dialect.loaded_dbapi.Error as exc:
                writer.lock.release()
                raise _told(dialect, exc, False) from exc
            except BaseException:
                writer.lock.release()
                raise
        else:
            try:
                fairy = engine.raw_connection()
            except dialect.loaded_dbapi.Error as exc:
                # as SQLAlchemy tells a connection refused while checking one out
                raise _told(dialect, exc, dialect.is_disconnect(exc, None, None)) from exc
        transaction = self._transaction = DriverTransaction(fairy, dialect, writer)
        for listener in backend.listeners:
            listener("begin")
        return transaction

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._begun is not None:
            self._begun.__exit__(exc_type, exc, traceback)
            return
        transaction = self._transaction
        backend = self._backend
        assert transaction is not None and backend is not None
        writer = backend.writer
        if writer is not None:
            driver: Any = transaction.connection.dbapi_connection
            if exc_type is None:
                writer.commit(driver)  # failed: rolled back; the lock let go in any case
                ended = "commit"
            else:
                try:
                    writer.rollback(driver)  # the lock let go in any case
                except transaction.dialect.loaded_dbapi.Error as failed:
                    transaction.invalidate(failed)
                ended = "rollback"
        else:
            fairy = transaction.connection
            try:
                if exc_type is None:
                    self._commit(transaction)
                    ended = "commit"
                else:
                    self._rollback(transaction)
                    ended = "rollback"
            finally:
                if not transaction.lost:
                    fairy.close()  # back to the pool (a lost one is out of it already)
        for listener in backend.listeners:
            listener(ended)

    def _commit(self, transaction: DriverTransaction) -> None:
        fairy = transaction.connection
        dialect = transaction.dialect
        try:
            fairy.commit()
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, fairy.dbapi_connection, None)
            if lost:
                transaction.invalidate(exc)
            else:
                self._rollback(transaction)
            raise _told(dialect, exc, lost) from exc

    @staticmethod
    def _rollback(transaction: DriverTransaction) -> None:
        """The reason's exception goes on out, not the rollback's: a connection that
        cannot roll back is invalidated."""
        if transaction.lost:
            return  # the server ended the transaction with the connection
        try:
            transaction.connection.rollback()
        except transaction.dialect.loaded_dbapi.Error as exc:
            transaction.invalidate(exc)


def listen(engine: Engine, listener: Callable[[str], None]) -> Callable[[], None]:
    """``listener`` told "begin", "commit" or "rollback" by every transaction of
    ``engine`` on the driver (SQLAlchemy's own transactions tell its events) until the
    function returned is called."""
    backend = lean_backend(engine)
    if backend is None:
        return lambda: None
    backend.listeners.append(listener)
    return lambda: backend.listeners.remove(listener)
