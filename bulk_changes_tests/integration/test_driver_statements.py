"""Statements executed on the driver's cursor inside SQLAlchemy's transaction
(db/driver_statements.py), on SQLite and PostgreSQL: the values stored as SQLAlchemy
stores them, the statement's own literal values applied, the driver's errors told as
SQLAlchemy's, and the transaction still SQLAlchemy's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from bulk_changes.db.driver_statements import DriverInsert, DriverStatement
from bulk_changes.db.store_errors import store_errors
from bulk_changes.db.utc_datetime import UtcDateTime
from bulk_changes.domain.errors import StoreRefused

WHEN = datetime(2026, 12, 6, 13, 0, 0, 123456, tzinfo=UTC)
rows_table = Table(
    "driver_statement_rows",
    MetaData(),
    Column("key", Integer, primary_key=True),
    Column("step", String(16), primary_key=True),
    Column("data", String(16)),
    Column("at", UtcDateTime()),
)
c = rows_table.c


@pytest.fixture
def engine(any_engine):
    rows_table.create(any_engine)
    return any_engine


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        query = select(c.key, c.step, c.data, c.at).order_by(c.key, c.step)
        return [tuple(r) for r in conn.execute(query)]


def test_rows_inserted_on_the_driver_read_back_as_sqlalchemy_wrote_them(engine) -> None:
    rows = [
        {"key": 1, "step": "a", "data": "x", "at": WHEN},
        # another zone: stored as its UTC instant (the column type's own conversion)
        {"key": 1, "step": "b", "data": "y", "at": WHEN.astimezone(timezone(timedelta(hours=2)))},
    ]
    with engine.begin() as conn:
        assert DriverInsert(rows_table).execute(conn, rows) == 2
    assert stored(engine) == [(1, "a", "x", WHEN), (1, "b", "y", WHEN)]


def test_an_insert_that_leaves_existing_rows_inserts_only_the_new_ones(engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(rows_table), {"key": 1, "step": "a", "data": "old", "at": WHEN})
    rows = [{"key": 1, "step": step, "data": "new", "at": WHEN} for step in ("a", "b")]
    with engine.begin() as conn:
        DriverInsert(rows_table, on_conflict_do_nothing=True).execute(conn, rows)
    assert [(r[1], r[2]) for r in stored(engine)] == [("a", "old"), ("b", "new")]


def test_an_update_applies_the_literal_values_of_its_where_clause(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(rows_table),
            [{"key": 1, "step": s, "data": "x", "at": WHEN} for s in ("done", "open")],
        )
    touch = DriverStatement(update(rows_table).where(c.key == bindparam("b_key"), c.step != "done"))
    with engine.begin() as conn:
        changed = touch.execute(conn, {"b_key": 1, "data": "y"})
    assert changed == 1
    assert [(r[1], r[2]) for r in stored(engine)] == [("done", "x"), ("open", "y")]


def test_a_select_gives_its_first_column_row_by_row_with_its_limit_and_literals(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(rows_table),
            [{"key": k, "step": s, "data": "x", "at": WHEN} for k in (1, 2, 3) for s in "ab"],
        )
    # a limit taken as a parameter (SQLite adds an OFFSET of its own) and a literal value
    keys = DriverStatement(
        select(c.key)
        .where(c.key >= bindparam("b_from"), c.step == "a")
        .order_by(c.key)
        .limit(bindparam("b_n"))
    )
    with engine.begin() as conn:
        assert keys.column(conn, {"b_from": 2, "b_n": 5}) == [2, 3]
        assert keys.column(conn, {"b_from": 1, "b_n": 1}) == [1]
        assert keys.column(conn, {"b_from": 4, "b_n": 5}) == []


def test_a_refused_row_fails_as_sqlalchemys_error_and_rolls_the_transaction_back(
    engine,
) -> None:
    row = {"key": 1, "step": "a", "data": "x", "at": WHEN}
    plain = DriverInsert(rows_table)

    @store_errors
    def write() -> None:
        with engine.begin() as conn:
            plain.execute(conn, [{**row, "step": "b"}])
            plain.execute(conn, [row])  # its primary key is taken

    with engine.begin() as conn:
        plain.execute(conn, [row])
    with pytest.raises(StoreRefused) as refused:
        write()
    assert isinstance(refused.value.__cause__, IntegrityError)
    assert [r[1] for r in stored(engine)] == ["a"]
