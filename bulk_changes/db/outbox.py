"""The notification outbox's delivery queue in the AMOP database.

``Outbox`` plans deliveries for each event, hands one delivery at a time to a single
sender (a lease), and records every attempt. The events themselves are written inside
the transactions that cause them (``db/outbox_events.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from bulk_changes.db import outbox_events as events
from bulk_changes.db import schema as t
from bulk_changes.domain.clock import utc_now

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"


# ---- delivering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxEvent:
    row_id: int
    event_id: str
    type: str
    bulk_change_id: int | None
    tenant_id: str | None
    payload: str
    created_at: datetime

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)["data"]
        return data


@dataclass(frozen=True)
class Delivery:
    id: int
    event: OutboxEvent
    channel: str
    target: str
    status: str
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None

    def busy(self, at: datetime) -> bool:
        return self.claimed_until is not None and self.claimed_until > at


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        row_id=row.id,
        event_id=row.event_id,
        type=row.type,
        bulk_change_id=row.bulk_change_id,
        tenant_id=row.tenant_id,
        payload=row.payload,
        created_at=row.created_at,
    )


_DELIVERY_COLUMNS = [
    t.outbox_deliveries.c.id.label("d_id"),
    t.outbox_deliveries.c.channel,
    t.outbox_deliveries.c.target,
    t.outbox_deliveries.c.status,
    t.outbox_deliveries.c.attempts,
    t.outbox_deliveries.c.next_attempt_at,
    t.outbox_deliveries.c.claimed_by,
    t.outbox_deliveries.c.claimed_until,
    t.outbox_deliveries.c.last_error,
    t.outbox_deliveries.c.created_at.label("d_created_at"),
    t.outbox_deliveries.c.delivered_at,
    t.outbox_deliveries.c.failed_at,
    t.outbox_events.c.id,
    t.outbox_events.c.event_id,
    t.outbox_events.c.type,
    t.outbox_events.c.bulk_change_id,
    t.outbox_events.c.tenant_id,
    t.outbox_events.c.payload,
    t.outbox_events.c.created_at,
]


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.d_id,
        event=_event(row),
        channel=row.channel,
        target=row.target,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        claimed_until=row.claimed_until,
        last_error=row.last_error,
        created_at=row.d_created_at,
        delivered_at=row.delivered_at,
        failed_at=row.failed_at,
    )


def _deliveries_query(with_payload: bool = True) -> Any:
    columns = _DELIVERY_COLUMNS
    if not with_payload:  # lists of many deliveries: bodies are read one at a time to send
        columns = [c for c in columns if c.name != "payload"] + [literal("").label("payload")]
    return select(*columns).select_from(
        t.outbox_deliveries.join(
            t.outbox_events, t.outbox_events.c.id == t.outbox_deliveries.c.event_row_id
        )
    )


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- events outside a bulk change's transactions (run failure alerts) --

    def add_alert(self, event_type: str, data: Mapping[str, Any], dedupe_key: str) -> bool:
        """An event written once per ``dedupe_key`` (a sensor that evaluates a failed run
        again writes nothing). -> True when written now."""
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(
                    select(t.outbox_events.c.id).where(t.outbox_events.c.dedupe_key == dedupe_key)
                ).first()
                if exists:
                    return False
                events.write_event(conn, event_type, data, dedupe_key=dedupe_key)
                return True
        except IntegrityError:
            return False

    def report_final_devices(self, bulk_change_id: int, ids: Sequence[int]) -> int:
        with self.engine.begin() as conn:
            return events.report_final_devices(conn, bulk_change_id, ids)

    def events(self, bulk_change_id: int | None = None) -> list[OutboxEvent]:
        query = select(t.outbox_events).order_by(t.outbox_events.c.id)
        if bulk_change_id is not None:
            query = query.where(t.outbox_events.c.bulk_change_id == bulk_change_id)
        with self.engine.connect() as conn:
            return [_event(r) for r in conn.execute(query)]

    def event(self, row_id: int) -> OutboxEvent:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.outbox_events).where(t.outbox_events.c.id == row_id)).one()
        return _event(row)

    def update_audit(
        self, bulk_change_id: int, step: str, device_change_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """The audit rows of one step of some device changes of a bulk change (the username
        report's source, a page of devices at a time)."""
        a = t.audit_log.c
        query = select(a.device_change_id, a.step, a.outcome, a.request, a.response, a.created_at)
        rows: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(device_change_ids), 500):
                chunk = device_change_ids[start : start + 500]
                rows.extend(
                    dict(r._mapping)
                    for r in conn.execute(
                        query.where(
                            a.bulk_change_id == bulk_change_id,
                            a.device_change_id.in_(chunk),
                            a.step == step,
                        ).order_by(a.id)
                    )
                )
        return rows

    def device_result_pages(
        self, bulk_change_id: int, size: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        return events.device_result_pages(self.engine, bulk_change_id, size or events.REPORT_CHUNK)

    # -- planning: which deliveries an event has --

    def unplanned(self, limit: int = 500) -> list[OutboxEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.outbox_events)
                .where(t.outbox_events.c.planned_at.is_(None))
                .order_by(t.outbox_events.c.id)
                .limit(limit)
            )
            return [_event(r) for r in rows]

    def plan(
        self, event: OutboxEvent, targets: Sequence[tuple[str, str]], at: datetime | None = None
    ) -> bool:
        """Create the event's deliveries, once (whoever plans it first)."""
        stamp = at or utc_now()
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(t.outbox_events)
                .where(t.outbox_events.c.id == event.row_id, t.outbox_events.c.planned_at.is_(None))
                .values(planned_at=stamp)
            ).rowcount
            if not claimed:
                return False
            if targets:
                conn.execute(
                    insert(t.outbox_deliveries),
                    [
                        {
                            "event_row_id": event.row_id,
                            "channel": channel,
                            "target": target,
                            "status": PENDING,
                            "attempts": 0,
                            "next_attempt_at": stamp,
                            "created_at": stamp,
                        }
                        for channel, target in dict.fromkeys(targets)
                    ],
                )
        return True

    # -- delivering --

    def pending(self, bulk_change_id: int | None = None, limit: int = 2000) -> list[Delivery]:
        """Deliveries still to make, in the order of their events (without their bodies:
        ``event`` reads one)."""
        query = _deliveries_query(with_payload=False).where(t.outbox_deliveries.c.status == PENDING)
        if bulk_change_id is not None:
            query = query.where(t.outbox_events.c.bulk_change_id == bulk_change_id)
        query = query.order_by(t.outbox_events.c.id, t.outbox_deliveries.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_delivery(r) for r in conn.execute(query)]

    def get(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _deliveries_query().where(t.outbox_deliveries.c.id == delivery_id)
            ).first()
        return _delivery(row) if row else None

    def by_event_id(self, event_id: str) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _deliveries_query()
                .where(t.outbox_events.c.event_id == event_id)
                .order_by(t.outbox_deliveries.c.id)
            )
            return [_delivery(r) for r in rows]

    def claim(
        self,
        delivery: Delivery,
        holder: str,
        lease_seconds: float,
        *,
        at: datetime | None = None,
        force: bool = False,
    ) -> int | None:
        """Take the delivery for one attempt, unless another sender holds it. -> the
        attempt's row id. An attempt an earlier holder left unfinished is marked
        'interrupted' (it may have reached the receiver: the retry has the same id)."""
        stamp = at or utc_now()
        condition = [
            t.outbox_deliveries.c.id == delivery.id,
            or_(
                t.outbox_deliveries.c.claimed_until.is_(None),
                t.outbox_deliveries.c.claimed_until <= stamp,
            ),
        ]
        if not force:
            condition.append(t.outbox_deliveries.c.status == PENDING)
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t.outbox_deliveries)
                .where(*condition)
                .values(
                    claimed_by=holder,
                    claimed_until=stamp + timedelta(seconds=lease_seconds),
                    attempts=t.outbox_deliveries.c.attempts + 1,
                )
            ).rowcount
            if not taken:
                return None
            conn.execute(
                update(t.outbox_attempts)
                .where(
                    t.outbox_attempts.c.delivery_id == delivery.id,
                    t.outbox_attempts.c.outcome == "sending",
                )
                .values(outcome="interrupted", finished_at=stamp)
            )
            attempt = conn.execute(
                select(t.outbox_deliveries.c.attempts).where(
                    t.outbox_deliveries.c.id == delivery.id
                )
            ).scalar_one()
            return int(
                conn.execute(
                    insert(t.outbox_attempts).values(
                        delivery_id=delivery.id,
                        attempt=attempt,
                        holder=holder,
                        started_at=stamp,
                        outcome="sending",
                    )
                ).inserted_primary_key[0]
            )

    def record_delivered(
        self,
        delivery: Delivery,
        attempt_row_id: int,
        *,
        status_code: int | None,
        duration_ms: float,
        at: datetime | None = None,
    ) -> None:
        stamp = at or utc_now()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.outbox_attempts)
                .where(t.outbox_attempts.c.id == attempt_row_id)
                .values(
                    outcome="delivered",
                    finished_at=stamp,
                    status_code=status_code,
                    duration_ms=duration_ms,
                )
            )
            conn.execute(
                update(t.outbox_deliveries)
                .where(t.outbox_deliveries.c.id == delivery.id)
                .values(
                    status=DELIVERED,
                    delivered_at=stamp,
                    failed_at=None,
                    last_error=None,
                    claimed_by=None,
                    claimed_until=None,
                )
            )

    def record_failed(
        self,
        delivery: Delivery,
        attempt_row_id: int,
        *,
        error: str,
        status_code: int | None,
        duration_ms: float,
        next_attempt_at: datetime | None,
        at: datetime | None = None,
    ) -> None:
        """A failed attempt: retried at ``next_attempt_at``, or None: failed for good."""
        stamp = at or utc_now()
        values: dict[str, Any] = {
            "last_error": error,
            "claimed_by": None,
            "claimed_until": None,
        }
        if next_attempt_at is None:
            values.update(status=FAILED, failed_at=stamp)
        else:
            values.update(status=PENDING, next_attempt_at=next_attempt_at)
        with self.engine.begin() as conn:
            conn.execute(
                update(t.outbox_attempts)
                .where(t.outbox_attempts.c.id == attempt_row_id)
                .values(
                    outcome="failed",
                    finished_at=stamp,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            conn.execute(
                update(t.outbox_deliveries)
                .where(t.outbox_deliveries.c.id == delivery.id)
                .values(**values)
            )

    # -- reading for people --

    def failed(self, channel: str | None = None) -> list[Delivery]:
        query = _deliveries_query().where(t.outbox_deliveries.c.status == FAILED)
        if channel:
            query = query.where(t.outbox_deliveries.c.channel == channel)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.outbox_deliveries.c.id))
            return [_delivery(r) for r in rows]

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.outbox_attempts)
                .where(t.outbox_attempts.c.delivery_id == delivery_id)
                .order_by(t.outbox_attempts.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def notifications_of(self, bulk_change_id: int) -> list[dict[str, Any]]:
        """Each event of a bulk change with its deliveries (for ``bulk-changes status``)."""
        with self.engine.connect() as conn:
            events = conn.execute(
                select(t.outbox_events)
                .where(t.outbox_events.c.bulk_change_id == bulk_change_id)
                .order_by(t.outbox_events.c.id)
            ).all()
            deliveries = conn.execute(
                _deliveries_query()
                .where(t.outbox_events.c.bulk_change_id == bulk_change_id)
                .order_by(t.outbox_deliveries.c.id)
            ).all()
        by_event: dict[int, list[Delivery]] = {}
        for row in deliveries:
            d = _delivery(row)
            by_event.setdefault(d.event.row_id, []).append(d)
        out = []
        for row in events:
            event = _event(row)
            out.append(
                {
                    "event_id": event.event_id,
                    "type": event.type,
                    "created_at": event.created_at,
                    "planned": row.planned_at is not None,
                    "deliveries": [
                        {
                            "id": d.id,
                            "channel": d.channel,
                            "target": d.target,
                            "status": d.status,
                            "attempts": d.attempts,
                            "last_error": d.last_error,
                            "next_attempt_at": d.next_attempt_at if d.status == PENDING else None,
                            "delivered_at": d.delivered_at,
                            "failed_at": d.failed_at,
                        }
                        for d in by_event.get(event.row_id, [])
                    ],
                }
            )
        return out
