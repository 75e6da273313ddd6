"""Account call limiters. The shared one lives in the AMOP database (see db_limiter)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bulk_changes.domain.settings import RateLimit


class NoLimiter:
    """No limit at all: for unit tests and one-off tools, never for processing."""

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[None]:
        yield

    def penalize(self, account_name: str, seconds: float) -> None:
        return None
