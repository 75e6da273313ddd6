"""The queue outbox: bulk changes stored but not yet taken by the queue.

``submit`` writes the row in the transaction that stores the bulk change, then sends it;
if the queue is down the row stays unsent and the queue sensor sends it on a later tick
(``send_unsent``). ``bulk-changes send ID`` sends one again whatever its state. A message
sent twice is harmless: the run key keeps a bulk change to one run.

It speaks to the database through the driver (``db.dbapi``): ``bulk-changes send`` then
starts without SQLAlchemy. A holder of an Engine passes ``engine.raw_connection``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bulk_changes.db.dbapi import Connect, execute, fetch, opened, read_timestamp, timestamp
from bulk_changes.domain.clock import utc_now

MAX_ERROR_CHARS = 500

Send = Callable[[dict[str, Any]], str]  # body -> message id


@dataclass(frozen=True)
class SweepResult:
    sent: list[int]
    failed: dict[int, str]


def unsent(connect: Connect, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
    with opened(connect) as conn:
        rows = fetch(
            conn,
            "SELECT bulk_change_id, body FROM queue_outbox WHERE sent_at IS NULL"
            " ORDER BY bulk_change_id LIMIT :limit",
            {"limit": limit},
        )
    return [(int(i), json.loads(body)) for i, body in rows]


def state_of(connect: Connect, bulk_change_id: int) -> dict[str, Any] | None:
    with opened(connect) as conn:
        rows = fetch(
            conn,
            "SELECT sent_at, message_id, attempts, last_error FROM queue_outbox"
            " WHERE bulk_change_id = :id",
            {"id": bulk_change_id},
        )
    if not rows:
        return None
    sent_at, message_id, attempts, last_error = rows[0]
    sent = read_timestamp(sent_at)
    return {
        "sent_at": sent.isoformat() if sent else None,
        "message_id": message_id,
        "attempts": attempts,
        "last_error": last_error,
    }


def send_one(connect: Connect, bulk_change_id: int, send: Send) -> str:
    """Send the bulk change's message now (an outbox row is made if it had none) and mark
    it sent. -> the message id. The queue's error is recorded on the row, then raised."""
    body = {"bulk_change_id": bulk_change_id}
    with opened(connect) as conn:
        # one statement: two senders at once make one row
        execute(
            conn,
            "INSERT INTO queue_outbox (bulk_change_id, body, created_at, attempts)"
            " VALUES (:id, :body, :now, 0) ON CONFLICT (bulk_change_id) DO NOTHING",
            {"id": bulk_change_id, "body": json.dumps(body), "now": timestamp(conn, utc_now())},
        )
    return _send(connect, bulk_change_id, body, send)


def send_unsent(connect: Connect, send: Send, limit: int = 100) -> SweepResult:
    """Send every unsent row (oldest first); one failure stops the sweep (the queue is
    likely down: the rest wait for the next)."""
    result = SweepResult([], {})
    for bulk_change_id, body in unsent(connect, limit):
        try:
            _send(connect, bulk_change_id, body, send)
        except Exception as exc:
            result.failed[bulk_change_id] = str(exc)[:MAX_ERROR_CHARS]
            break
        result.sent.append(bulk_change_id)
    return result


def _send(connect: Connect, bulk_change_id: int, body: dict[str, Any], send: Send) -> str:
    try:
        message_id = send(body)
    except Exception as exc:
        with opened(connect) as conn:
            execute(
                conn,
                "UPDATE queue_outbox SET attempts = attempts + 1, last_error = :error"
                " WHERE bulk_change_id = :id",
                {"id": bulk_change_id, "error": str(exc)[:MAX_ERROR_CHARS]},
            )
        raise
    with opened(connect) as conn:
        execute(
            conn,
            "UPDATE queue_outbox SET attempts = attempts + 1, sent_at = :now,"
            " message_id = :message_id, last_error = NULL WHERE bulk_change_id = :id",
            {"id": bulk_change_id, "now": timestamp(conn, utc_now()), "message_id": message_id},
        )
    return message_id
