"""The database adapter's edge: SQLAlchemy's and the driver's errors told in the
project's terms (:class:`StoreUnavailable`, :class:`StoreRefused`), so nothing above
``db/`` needs to know SQLAlchemy to tell a database away from a refused value."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from bulk_changes.domain.errors import StoreError, StoreRefused, StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")


def refused_values(exc: Exception) -> bool:
    """The database refused a statement for the values it carried (a string PostgreSQL
    cannot store, a value too long, a broken constraint): the same values will be refused
    again, and other rows are not concerned. False for a database away or busy."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    # A value the driver would not even send (psycopg2: "A string literal cannot contain
    # NUL (0x00) characters.") comes as the driver's ValueError, as it is or wrapped.
    if isinstance(exc, ValueError | TypeError):
        return True
    return not isinstance(exc, DBAPIError) and isinstance(
        getattr(exc, "orig", None), ValueError | TypeError
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def describe_refusal(exc: Exception) -> str:
    """The database's own reason, one line, without the statement or its values (they may
    hold what could not be stored, and secrets of other columns)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return _CONTROL.sub("?", f"{type(orig).__name__}: {first}")[:300]


def translated(exc: SQLAlchemyError) -> StoreError:
    if refused_values(exc):
        return StoreRefused(describe_refusal(exc))
    return StoreUnavailable(describe_refusal(exc))


def _translating(values_too: bool) -> Callable[[Callable[P, R]], Callable[P, R]]:
    refused_before_sending = (ValueError, TypeError) if values_too else ()

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except SQLAlchemyError as exc:
                raise translated(exc) from exc
            except refused_before_sending as exc:
                raise StoreRefused(describe_refusal(exc)) from exc

        return wrapper

    return decorate


# A repository method whose SQLAlchemy errors come out as StoreError.
store_errors = _translating(values_too=False)
# The same; also a value the driver would not send (its ValueError or TypeError, raised
# before any statement) comes out as StoreRefused.
store_errors_and_values = _translating(values_too=True)


class _Limiter(Protocol):
    def slot(
        self, account_name: str, limit: Any, lease_seconds: float | None = None
    ) -> AbstractContextManager[Any]: ...

    def penalize(self, account_name: str, seconds: float) -> None: ...


class TranslatedLimiter:
    """The database limiter as the clients see it: its own database errors (taking or
    giving back a turn) come out as :class:`StoreError`, so a device whose call could not
    get a turn fails the op (Dagster retries it) instead of being judged as that device's
    failure."""

    def __init__(self, limiter: _Limiter) -> None:
        self.limiter = limiter

    @contextmanager
    def slot(
        self, account_name: str, limit: Any, lease_seconds: float | None = None
    ) -> Iterator[Any]:
        try:
            with self.limiter.slot(account_name, limit, lease_seconds) as departures:
                yield departures
        except SQLAlchemyError as exc:
            raise translated(exc) from exc

    def penalize(self, account_name: str, seconds: float) -> None:
        try:
            self.limiter.penalize(account_name, seconds)
        except SQLAlchemyError as exc:
            raise translated(exc) from exc

    def __getattr__(self, name: str) -> Any:
        # the limiter's own reads (pace, margin...) for whoever holds this wrapper
        return getattr(self.limiter, name)
