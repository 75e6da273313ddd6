"""The UTC datetime column type on SQLite and PostgreSQL: stored as the plain
``DateTime(timezone=True)`` stored it, read back as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select

from bulk_changes.db.utc_datetime import UtcDateTime

MOMENT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _tables(engine):
    meta = MetaData()
    before = Table(
        "moments_before",
        meta,
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True)),
    )
    now = Table(
        "moments_now", meta, Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    meta.create_all(engine)
    return before, now


def _raw(engine, table) -> list:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(f"SELECT at FROM {table.name} ORDER BY id")]


def test_a_moment_is_stored_as_the_plain_datetime_column_stored_it(any_engine) -> None:
    before, now = _tables(any_engine)
    with any_engine.begin() as conn:
        conn.execute(insert(before).values(id=1, at=MOMENT))
        conn.execute(insert(now).values(id=1, at=MOMENT))
    assert _raw(any_engine, now) == _raw(any_engine, before)


def test_a_moment_stored_before_reads_back_as_the_same_aware_utc_moment(any_engine) -> None:
    before, _ = _tables(any_engine)
    with any_engine.begin() as conn:
        conn.execute(insert(before).values(id=1, at=MOMENT))
    same_column = Table(before.name, MetaData(), Column("id", Integer), Column("at", UtcDateTime()))
    with any_engine.connect() as conn:
        read = conn.execute(select(same_column.c.at)).scalar_one()
    assert read == MOMENT and read.utcoffset() == timedelta(0)


def test_a_moment_in_another_zone_is_stored_as_its_utc_moment(any_engine) -> None:
    _, now = _tables(any_engine)
    elsewhere = MOMENT.astimezone(timezone(timedelta(hours=-5)))
    with any_engine.begin() as conn:
        conn.execute(insert(now).values(id=1, at=elsewhere))
    with any_engine.connect() as conn:
        read = conn.execute(select(now.c.at)).scalar_one()
    assert read == MOMENT and read.tzinfo is UTC


def test_a_missing_moment_stays_missing(any_engine) -> None:
    _, now = _tables(any_engine)
    with any_engine.begin() as conn:
        conn.execute(insert(now).values(id=1, at=None))
    with any_engine.connect() as conn:
        assert conn.execute(select(now.c.at)).scalar_one() is None
