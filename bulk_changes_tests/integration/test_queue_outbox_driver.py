"""The queue outbox through the driver alone (db.dbapi), on SQLite and PostgreSQL: what it
writes reads back through SQLAlchemy's schema as the same moments and values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from bulk_changes.db import queue_outbox
from bulk_changes.db import schema as t
from bulk_changes.db.dbapi import connector, opened, schema_version
from bulk_changes.db.schema import LATEST, UPGRADES


def _bulk_change(engine, bulk_change_id: int) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(t.bulk_changes).values(
                id=bulk_change_id,
                tenant_id="acme",
                change_type="username_cost_center",
                integration="jasper",
                status="NEW",
                source="cli",
                created_at=now,
            )
        )


def test_the_cli_knows_the_newest_schema_version_without_sqlalchemy():
    assert UPGRADES[-1][0] == LATEST


def test_schema_version_read_by_the_driver_matches_the_upgrades(any_engine, any_db_url):
    with opened(connector(any_db_url)) as conn:
        assert schema_version(conn) == LATEST


def test_a_database_without_amop_tables_has_version_zero(tmp_path):
    with opened(connector(f"sqlite:///{tmp_path / 'empty.sqlite'}")) as conn:
        assert schema_version(conn) == 0


@pytest.mark.parametrize("through", ["driver", "engine"])
def test_send_one_records_the_message_and_the_moment_it_was_sent(any_engine, any_db_url, through):
    _bulk_change(any_engine, 7)
    connect = connector(any_db_url) if through == "driver" else any_engine.raw_connection
    before = datetime.now(UTC)

    message_id = queue_outbox.send_one(connect, 7, lambda body: f"m-{body['bulk_change_id']}")

    assert message_id == "m-7"
    with any_engine.connect() as conn:
        row = conn.execute(select(t.queue_outbox)).one()
    sent_at = row.sent_at if row.sent_at.tzinfo else row.sent_at.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert (row.bulk_change_id, row.message_id, row.attempts, row.last_error) == (7, "m-7", 1, None)
    state = queue_outbox.state_of(connect, 7)
    assert state is not None and state["message_id"] == "m-7"
    assert datetime.fromisoformat(state["sent_at"]) == sent_at


def test_a_failed_send_is_recorded_then_the_sweep_sends_it(any_engine, any_db_url):
    _bulk_change(any_engine, 8)
    connect = connector(any_db_url)

    def down(body):
        raise ConnectionError("queue unreachable")

    with pytest.raises(ConnectionError):
        queue_outbox.send_one(connect, 8, down)
    assert queue_outbox.unsent(connect) == [(8, {"bulk_change_id": 8})]
    assert queue_outbox.state_of(connect, 8)["last_error"] == "queue unreachable"

    result = queue_outbox.send_unsent(any_engine.raw_connection, lambda body: "m-8")

    assert result.sent == [8] and result.failed == {}
    assert queue_outbox.unsent(connect) == []
    assert queue_outbox.state_of(connect, 8)["attempts"] == 2


def test_sending_twice_keeps_one_outbox_row(any_engine, any_db_url):
    _bulk_change(any_engine, 9)
    connect = connector(any_db_url)
    queue_outbox.send_one(connect, 9, lambda body: "first")
    queue_outbox.send_one(connect, 9, lambda body: "second")
    with any_engine.connect() as conn:
        rows = conn.execute(select(t.queue_outbox.c.message_id)).all()
    assert rows == [("second",)]
