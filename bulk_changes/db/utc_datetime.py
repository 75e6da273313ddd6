"""The one datetime column type of the AMOP database: aware UTC in, aware UTC out.

Stored as before (``DateTime(timezone=True)``: a timestamptz on PostgreSQL, the text
SQLAlchemy writes on SQLite), so existing databases read back the same instants. SQLite
keeps no zone and hands the value back naive; the project writes UTC only, so a naive
value read is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        # an aware value in another zone would be stored as its wall time on SQLite
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
