"""The notification outbox's write side: events written inside the caller's transaction.

Every ``write_*`` function takes the open connection of the transaction that changes the
state (the bulk-change repository calls them), so an event exists exactly when its cause
does. Delivering them is ``db/outbox.py``'s (the leased delivery queue).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, insert, select, tuple_

from bulk_changes.db import schema as t
from bulk_changes.domain import notifications as n
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.model import FINAL_DEVICE_VALUES


def _bulk_row(conn: Connection, bulk_change_id: int) -> dict[str, Any]:
    row = conn.execute(select(t.bulk_changes).where(t.bulk_changes.c.id == bulk_change_id)).first()
    if row is None:
        raise LookupError(f"bulk change {bulk_change_id} does not exist")
    return dict(row._mapping)


def write_event(
    conn: Connection,
    event_type: str,
    data: Mapping[str, Any],
    *,
    bulk_change_id: int | None = None,
    tenant_id: str | None = None,
    dedupe_key: str | None = None,
) -> int:
    """One event; its id (``msg_...``) is fixed here for every attempt that follows."""
    created = utc_now()
    return int(
        conn.execute(
            insert(t.outbox_events).values(
                event_id=n.new_event_id(),
                type=event_type,
                bulk_change_id=bulk_change_id,
                tenant_id=tenant_id,
                payload=n.webhook_body(event_type, created, data),
                dedupe_key=dedupe_key,
                created_at=created,
            )
        ).inserted_primary_key[0]
    )


def write_processing(conn: Connection, bulk_change_id: int) -> int:
    """bulk_change.processing, in the transaction that moved the bulk change to PROCESSING."""
    bulk = _bulk_row(conn, bulk_change_id)
    devices = conn.execute(
        select(func.count())
        .select_from(t.device_changes)
        .where(t.device_changes.c.bulk_change_id == bulk_change_id)
    ).scalar_one()
    return write_event(
        conn,
        n.BULK_CHANGE_PROCESSING,
        n.processing_data(bulk, int(devices)),
        bulk_change_id=bulk_change_id,
        tenant_id=bulk["tenant_id"],
    )


# Device results read at a time, to report them or to write them into a mail: memory stays
# flat however large the bulk change (all 100,000 rows at once were 1.1 KB each, the run
# worker's peak).
REPORT_CHUNK = 1000


def _device_results_query() -> Select[Any]:
    return select(
        t.device_changes.c.id,
        t.device_changes.c.row_number,
        t.device_changes.c.device_key,
        t.device_changes.c.device_id,
        t.device_changes.c.request,
        t.device_changes.c.status,
        t.device_changes.c.attempts,
        t.device_changes.c.last_error,
        t.device_changes.c.finished_at,
        t.devices.c.iccid,
        t.devices.c.msisdn,
    ).select_from(
        t.device_changes.outerjoin(t.devices, t.devices.c.id == t.device_changes.c.device_id)
    )


def _result(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def device_results(
    conn: Connection, bulk_change_id: int, ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The device changes of ``ids`` (of one bulk change), with their inventory keys."""
    query = _device_results_query().where(t.device_changes.c.bulk_change_id == bulk_change_id)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows.extend(_result(r) for r in conn.execute(query.where(t.device_changes.c.id.in_(chunk))))
    rows.sort(key=lambda r: r["id"])
    return rows


def device_result_pages(
    engine: Engine, bulk_change_id: int, size: int
) -> Iterator[list[dict[str, Any]]]:
    """Every device change of a bulk change with its inventory keys, in row order, ``size``
    at a time: a page per short read, so neither the rows nor a transaction are held
    while the caller works through them."""
    c = t.device_changes.c
    after: tuple[int, int] | None = None
    while True:
        query = _device_results_query().where(c.bulk_change_id == bulk_change_id)
        if after is not None:
            query = query.where(c.row_number >= after[0], tuple_(c.row_number, c.id) > after)
        with engine.connect() as conn:
            page = [
                _result(r) for r in conn.execute(query.order_by(c.row_number, c.id).limit(size))
            ]
        if page:
            yield page
        if len(page) < size:
            return
        after = (page[-1]["row_number"], page[-1]["id"])


def report_final_devices(
    conn: Connection, bulk_change_id: int, ids: Sequence[int] | None = None
) -> int:
    """device_changes.completed events, in groups of up to 100, for the final device
    changes (of ``ids``, or all) not reported yet: each device once across the groups."""
    if ids is None:
        ids = _unreported_final_ids(conn, bulk_change_id)
    if not ids:
        return 0
    bulk = _bulk_row(conn, bulk_change_id)
    return sum(
        _report_chunk(conn, bulk, ids[start : start + REPORT_CHUNK])
        for start in range(0, len(ids), REPORT_CHUNK)
    )


def _unreported_final_ids(conn: Connection, bulk_change_id: int) -> list[int]:
    reported = select(t.outbox_device_reports.c.device_change_id).where(
        t.outbox_device_reports.c.device_change_id == t.device_changes.c.id
    )
    query = (
        select(t.device_changes.c.id)
        .where(
            t.device_changes.c.bulk_change_id == bulk_change_id,
            t.device_changes.c.status.in_(FINAL_DEVICE_VALUES),
            ~reported.exists(),
        )
        .order_by(t.device_changes.c.id)
    )
    return [int(i) for i in conn.execute(query).scalars()]


def _report_chunk(conn: Connection, bulk: Mapping[str, Any], ids: Sequence[int]) -> int:
    bulk_change_id = int(bulk["id"])
    results = [
        r for r in device_results(conn, bulk_change_id, ids) if r["status"] in FINAL_DEVICE_VALUES
    ]
    if not results:
        return 0
    already = {
        row[0]
        for row in conn.execute(
            select(t.outbox_device_reports.c.device_change_id).where(
                t.outbox_device_reports.c.device_change_id.in_([r["id"] for r in results])
            )
        )
    }
    results = [r for r in results if r["id"] not in already]
    if not results:
        return 0
    group = conn.execute(
        select(func.count())
        .select_from(t.outbox_events)
        .where(
            t.outbox_events.c.bulk_change_id == bulk_change_id,
            t.outbox_events.c.type == n.DEVICE_CHANGES_COMPLETED,
        )
    ).scalar_one()
    for members in n.device_groups([n.device_result(r) for r in results]):
        group += 1
        row_id = write_event(
            conn,
            n.DEVICE_CHANGES_COMPLETED,
            n.group_data(bulk, int(group), members),
            bulk_change_id=bulk_change_id,
            tenant_id=bulk["tenant_id"],
        )
        conn.execute(
            insert(t.outbox_device_reports),
            [{"device_change_id": m["device_change_id"], "event_row_id": row_id} for m in members],
        )
    return len(results)


def forget_reports(conn: Connection, device_change_ids: Iterable[int]) -> None:
    """Device changes reopened for a retry: their next final result is reported again."""
    ids = list(device_change_ids)
    for start in range(0, len(ids), 500):
        conn.execute(
            t.outbox_device_reports.delete().where(
                t.outbox_device_reports.c.device_change_id.in_(ids[start : start + 500])
            )
        )


def write_final(
    conn: Connection, bulk_change_id: int, status: str, counts: Mapping[str, int]
) -> list[int]:
    """In the transaction that made the bulk change final: the device results no batch
    reported, bulk_change.completed, then the emails (completion, username report,
    errors)."""
    report_final_devices(conn, bulk_change_id)
    bulk = _bulk_row(conn, bulk_change_id)
    data = n.completed_data(bulk, status, counts)
    written = [
        write_event(
            conn,
            n.BULK_CHANGE_COMPLETED,
            data,
            bulk_change_id=bulk_change_id,
            tenant_id=bulk["tenant_id"],
        )
    ]
    notify = json.loads(bulk.get("notify") or "[]")
    for email in n.final_events(bulk["change_type"], counts):
        written.append(
            write_event(
                conn,
                email,
                {**data, "notify": notify},
                bulk_change_id=bulk_change_id,
                tenant_id=bulk["tenant_id"],
            )
        )
    return written
