"""The one clock of the project: aware UTC datetimes, everywhere they are made."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, in UTC, with its zone (never a naive datetime)."""
    return datetime.now(UTC)
