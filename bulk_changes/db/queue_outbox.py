"""The queue outbox: bulk changes stored but not yet taken by the queue.

``submit`` writes the row in the transaction that stores the bulk change, then sends it;
if the queue is down the row stays unsent and the queue sensor sends it on a later tick
(``send_unsent``). ``bulk-changes send ID`` sends one again whatever its state. A message
sent twice is harmless: the run key keeps a bulk change to one run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from bulk_changes.db import schema as t

MAX_ERROR_CHARS = 500

Send = Callable[[dict[str, Any]], str]  # body -> message id


@dataclass(frozen=True)
class SweepResult:
    sent: list[int]
    failed: dict[int, str]


def unsent(engine: Engine, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
    query = (
        select(t.queue_outbox.c.bulk_change_id, t.queue_outbox.c.body)
        .where(t.queue_outbox.c.sent_at.is_(None))
        .order_by(t.queue_outbox.c.bulk_change_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [(int(i), json.loads(body)) for i, body in conn.execute(query)]


def state_of(engine: Engine, bulk_change_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(t.queue_outbox).where(t.queue_outbox.c.bulk_change_id == bulk_change_id)
        ).first()
    if row is None:
        return None
    return {
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "message_id": row.message_id,
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


def send_one(engine: Engine, bulk_change_id: int, send: Send) -> str:
    """Send the bulk change's message now (an outbox row is made if it had none) and mark
    it sent. -> the message id. The queue's error is recorded on the row, then raised."""
    body = {"bulk_change_id": bulk_change_id}
    with engine.begin() as conn:
        exists = conn.execute(
            select(t.queue_outbox.c.bulk_change_id).where(
                t.queue_outbox.c.bulk_change_id == bulk_change_id
            )
        ).first()
        if not exists:
            conn.execute(
                insert(t.queue_outbox).values(
                    bulk_change_id=bulk_change_id,
                    body=json.dumps(body),
                    created_at=datetime.now(UTC),
                    attempts=0,
                )
            )
    return _send(engine, bulk_change_id, body, send)


def send_unsent(engine: Engine, send: Send, limit: int = 100) -> SweepResult:
    """Send every unsent row (oldest first); one failure stops the sweep (the queue is
    likely down: the rest wait for the next)."""
    result = SweepResult([], {})
    for bulk_change_id, body in unsent(engine, limit):
        try:
            _send(engine, bulk_change_id, body, send)
        except Exception as exc:
            result.failed[bulk_change_id] = str(exc)[:MAX_ERROR_CHARS]
            break
        result.sent.append(bulk_change_id)
    return result


def _send(engine: Engine, bulk_change_id: int, body: dict[str, Any], send: Send) -> str:
    row = t.queue_outbox.c
    try:
        message_id = send(body)
    except Exception as exc:
        with engine.begin() as conn:
            conn.execute(
                update(t.queue_outbox)
                .where(row.bulk_change_id == bulk_change_id)
                .values(attempts=row.attempts + 1, last_error=str(exc)[:MAX_ERROR_CHARS])
            )
        raise
    with engine.begin() as conn:
        conn.execute(
            update(t.queue_outbox)
            .where(row.bulk_change_id == bulk_change_id)
            .values(
                attempts=row.attempts + 1,
                sent_at=datetime.now(UTC),
                message_id=message_id,
                last_error=None,
            )
        )
    return message_id
