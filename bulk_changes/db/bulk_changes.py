"""A bulk change's life in the AMOP database: stored with its device changes at intake,
opened by a run, made final once (or cancelled), its events written to the outbox in
the same transactions. Every state change is one short transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, String, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from bulk_changes.db import outbox_events
from bulk_changes.db import schema as t
from bulk_changes.db.device_changes import status_counts
from bulk_changes.db.utc_datetime import UtcDateTime
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.model import FINAL_DEVICE_VALUES, BulkChange, NewDeviceChange
from bulk_changes.domain.state_machine import (
    FINAL_DEVICE,
    BulkStatus,
    DeviceStatus,
    final_bulk_status,
)

# engine -> its database's id: read once per process (it never changes)
_DATABASE_IDS: dict[int, str] = {}


def _bulk(row: Any, digest: str | None = None) -> BulkChange:
    return BulkChange(
        id=row.id,
        tenant_id=row.tenant_id,
        change_type=row.change_type,
        integration=row.integration,
        status=row.status,
        idempotency_key=row.idempotency_key,
        notify=json.loads(row.notify or "[]"),
        requested_by=row.requested_by,
        source=row.source,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_run_id=row.last_run_id,
        request_digest=digest,
    )


class BulkChanges:
    """Bulk changes (table ``bulk_changes``) and the moves of the whole bulk change."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find_by_idempotency_key(self, tenant_id: str, key: str) -> BulkChange | None:
        """The tenant's bulk change stored with ``key``, with its request digest."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.bulk_changes, t.request_digests.c.digest)
                .outerjoin(
                    t.request_digests,
                    t.request_digests.c.bulk_change_id == t.bulk_changes.c.id,
                )
                .where(
                    t.bulk_changes.c.tenant_id == tenant_id, t.bulk_changes.c.idempotency_key == key
                )
            ).first()
        return _bulk(row, row.digest) if row else None

    def idempotency_key_elsewhere(self, tenant_id: str, key: str) -> int | None:
        """The first bulk change another tenant stored with ``key`` (its id only)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(func.min(t.bulk_changes.c.id)).where(
                    t.bulk_changes.c.idempotency_key == key,
                    t.bulk_changes.c.tenant_id != tenant_id,
                )
            ).scalar()
        return int(found) if found is not None else None

    def create_bulk_change(
        self,
        *,
        tenant_id: str,
        change_type: str,
        integration: str,
        notify: Sequence[str],
        idempotency_key: str | None,
        requested_by: str | None,
        source: str,
        changes: Sequence[NewDeviceChange],
        request_digest: str | None = None,
        enqueue: bool = False,
    ) -> tuple[int, bool]:
        """Store a bulk change and all its device changes at once. -> (id, created).

        With an idempotency key already used by the tenant, returns that bulk change.
        ``enqueue``: its queue message goes into the queue outbox in the same transaction,
        so a stored bulk change is sent even if the queue is down now (db.queue_outbox).
        """
        if idempotency_key:
            existing = self.find_by_idempotency_key(tenant_id, idempotency_key)
            if existing:
                return existing.id, False
        stamp = utc_now()
        try:
            with self.engine.begin() as conn:
                bulk_id = conn.execute(
                    insert(t.bulk_changes)
                    .values(
                        tenant_id=tenant_id,
                        change_type=change_type,
                        integration=integration,
                        status=BulkStatus.NEW.value,
                        idempotency_key=idempotency_key,
                        notify=json.dumps(list(notify)),
                        requested_by=requested_by,
                        source=source,
                        created_at=stamp,
                    )
                    .returning(t.bulk_changes.c.id)
                ).scalar_one()
                rows = [
                    {
                        "bulk_change_id": bulk_id,
                        "row_number": c.row_number,
                        "device_key": c.device_key,
                        "device_id": c.device_id,
                        "request": json.dumps(dict(c.request), sort_keys=True),
                        "status": c.status.value,
                        "attempts": 0,
                        "last_error": c.error,
                        "error_field": c.error_field,
                        "created_at": stamp,
                        "updated_at": stamp,
                        "finished_at": stamp if c.status in FINAL_DEVICE else None,
                    }
                    for c in changes
                ]
                if request_digest:
                    conn.execute(
                        insert(t.request_digests).values(
                            bulk_change_id=bulk_id, digest=request_digest
                        )
                    )
                for start in range(0, len(rows), 1000):
                    conn.execute(insert(t.device_changes), rows[start : start + 1000])
                rejected = [c for c in changes if c.status is DeviceStatus.ERROR]
                if rejected:
                    conn.execute(
                        insert(t.audit_log),
                        [
                            {
                                "bulk_change_id": bulk_id,
                                "system": "amop",
                                "description": "Intake validation",
                                "outcome": "error",
                                "error": f"row {c.row_number}: {c.error_field}: {c.error}",
                                "created_at": stamp,
                            }
                            for c in rejected
                        ],
                    )
                if enqueue:
                    conn.execute(
                        insert(t.queue_outbox).values(
                            bulk_change_id=bulk_id,
                            body=json.dumps({"bulk_change_id": int(bulk_id)}),
                            created_at=stamp,
                            attempts=0,
                        )
                    )
            return int(bulk_id), True
        except IntegrityError:
            # Two producers raced with the same idempotency key: the other one won.
            if idempotency_key:
                existing = self.find_by_idempotency_key(tenant_id, idempotency_key)
                if existing:
                    return existing.id, False
            raise

    def database_id(self) -> str:
        """This AMOP database's own id (schema version 5), part of every run key."""
        cached = _DATABASE_IDS.get(id(self.engine))
        if cached is None:
            with self.engine.connect() as conn:
                cached = str(conn.execute(select(t.amop_identity.c.id)).scalar_one())
            _DATABASE_IDS[id(self.engine)] = cached
        return cached

    def get_bulk_change(self, bulk_change_id: int) -> BulkChange | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.bulk_changes).where(t.bulk_changes.c.id == bulk_change_id)
            ).first()
        return _bulk(row) if row else None

    def list_bulk_changes(self, limit: int = 50) -> list[BulkChange]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.bulk_changes).order_by(t.bulk_changes.c.id.desc()).limit(limit)
            )
            return [_bulk(r) for r in rows]

    def start_processing(self, bulk_change_id: int, run_id: str, retry_failed_only: bool) -> int:
        """Open the bulk change for this run. With retry_failed_only, API_FAILED devices go
        back to NEW (their completed steps stay completed). -> devices reopened."""
        reopened = 0
        with self.engine.begin() as conn:
            bulk = conn.execute(
                select(t.bulk_changes.c.status).where(t.bulk_changes.c.id == bulk_change_id)
            ).scalar_one()
            if retry_failed_only:
                # their next final result is a new one: it goes out again by webhook
                outbox_events.forget_reports(
                    conn,
                    conn.execute(
                        select(t.device_changes.c.id).where(
                            t.device_changes.c.bulk_change_id == bulk_change_id,
                            t.device_changes.c.status == DeviceStatus.API_FAILED.value,
                        )
                    ).scalars(),
                )
                # What the earlier run ended with is kept, not overwritten: the device's
                # attempts go on counting and its reason moves to the history.
                last_run = conn.execute(
                    select(t.bulk_changes.c.last_run_id).where(
                        t.bulk_changes.c.id == bulk_change_id
                    )
                ).scalar_one()
                failed = t.device_changes.c
                conn.execute(
                    insert(t.device_change_history).from_select(
                        [
                            "device_change_id",
                            "run_id",
                            "status",
                            "attempts",
                            "reason",
                            "finished_at",
                            "reopened_at",
                        ],
                        select(
                            failed.id,
                            literal(last_run, String()),
                            failed.status,
                            failed.attempts,
                            failed.last_error,
                            failed.finished_at,
                            literal(utc_now(), UtcDateTime()),
                        ).where(
                            failed.bulk_change_id == bulk_change_id,
                            failed.status == DeviceStatus.API_FAILED.value,
                        ),
                    )
                )
                reopened = conn.execute(
                    update(t.device_changes)
                    .where(
                        t.device_changes.c.bulk_change_id == bulk_change_id,
                        t.device_changes.c.status == DeviceStatus.API_FAILED.value,
                    )
                    .values(
                        status=DeviceStatus.NEW.value,
                        finished_at=None,
                        updated_at=utc_now(),
                    )
                ).rowcount
            values: dict[str, Any] = {"last_run_id": run_id}
            if bulk == BulkStatus.NEW.value or (
                bulk == BulkStatus.PROCESSED_WITH_ERRORS.value and reopened
            ):
                # conditional: of two runs racing, one moves it and writes the event
                moved = conn.execute(
                    update(t.bulk_changes)
                    .where(t.bulk_changes.c.id == bulk_change_id, t.bulk_changes.c.status == bulk)
                    .values(
                        status=BulkStatus.PROCESSING.value, started_at=utc_now(), finished_at=None
                    )
                ).rowcount
                if moved:
                    outbox_events.write_processing(conn, bulk_change_id)
            conn.execute(
                update(t.bulk_changes).where(t.bulk_changes.c.id == bulk_change_id).values(**values)
            )
            seen = conn.execute(
                select(t.runs_seen.c.run_id).where(t.runs_seen.c.run_id == run_id)
            ).first()
            if not seen:
                conn.execute(
                    insert(t.runs_seen).values(
                        run_id=run_id,
                        bulk_change_id=bulk_change_id,
                        retry_failed_only=retry_failed_only,
                        started_at=utc_now(),
                    )
                )
        return reopened

    def finalize(self, bulk_change_id: int) -> tuple[str, dict[str, int], bool]:
        """Make the bulk change final if every device is. -> (status, counts, changed now).

        The conditional update makes this happen exactly once, whatever runs race.
        """
        with self.engine.begin() as conn:
            counts = status_counts(conn, bulk_change_id)
            target = final_bulk_status(counts)
            current = conn.execute(
                select(t.bulk_changes.c.status).where(t.bulk_changes.c.id == bulk_change_id)
            ).scalar_one()
            if target is None:
                return current, counts, False
            changed = conn.execute(
                update(t.bulk_changes)
                .where(
                    t.bulk_changes.c.id == bulk_change_id,
                    t.bulk_changes.c.status.in_(
                        [BulkStatus.NEW.value, BulkStatus.PROCESSING.value]
                    ),
                )
                .values(status=target.value, finished_at=utc_now())
            ).rowcount
            if changed:
                conn.execute(
                    insert(t.audit_log).values(
                        bulk_change_id=bulk_change_id,
                        system="amop",
                        description="Bulk change final",
                        outcome="ok",
                        response=json.dumps({"status": target.value, "counts": counts}),
                        created_at=utc_now(),
                    )
                )
                outbox_events.write_final(conn, bulk_change_id, target.value, counts)
                return target.value, counts, True
            return current, counts, False

    def report_final_devices(self, bulk_change_id: int, device_change_ids: Sequence[int]) -> int:
        """device_changes.completed events for those of ``device_change_ids`` that are
        final and not reported yet (a batch that finished). -> devices reported."""
        with self.engine.begin() as conn:
            return outbox_events.report_final_devices(conn, bulk_change_id, device_change_ids)

    def cancel_bulk_change(
        self, bulk_change_id: int, reason: str, run_id: str | None = None
    ) -> tuple[bool, dict[str, int]]:
        """Stop a bulk change for good, in one transaction: every device change not final
        becomes CANCELLED with ``reason`` (and, for one that was under way, the steps it
        had completed), the bulk change CANCELLED, audited, its final event written.
        -> (changed now, counts). A final bulk change is left as it is."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(t.bulk_changes)
                .where(
                    t.bulk_changes.c.id == bulk_change_id,
                    t.bulk_changes.c.status.in_(
                        (BulkStatus.NEW.value, BulkStatus.PROCESSING.value)
                    ),
                )
                .values(status=BulkStatus.CANCELLED.value, finished_at=utc_now())
            ).rowcount
            if moved:
                open_rows = conn.execute(
                    select(t.device_changes.c.id, t.device_changes.c.status).where(
                        t.device_changes.c.bulk_change_id == bulk_change_id,
                        t.device_changes.c.status.not_in(FINAL_DEVICE_VALUES),
                    )
                ).all()
                under_way = [r.id for r in open_rows if r.status != DeviceStatus.NEW.value]
                done: dict[int, list[str]] = {i: [] for i in under_way}
                for start in range(0, len(under_way), 500):
                    for r in conn.execute(
                        select(t.completed_steps.c.device_change_id, t.completed_steps.c.step)
                        .where(
                            t.completed_steps.c.device_change_id.in_(under_way[start : start + 500])
                        )
                        .order_by(t.completed_steps.c.completed_at)
                    ):
                        done[r.device_change_id].append(r.step)
                stamp = utc_now()
                conn.execute(
                    update(t.device_changes)
                    .where(
                        t.device_changes.c.bulk_change_id == bulk_change_id,
                        t.device_changes.c.status == DeviceStatus.NEW.value,
                    )
                    .values(
                        status=DeviceStatus.CANCELLED.value,
                        last_error=f"{reason} before it started",
                        updated_at=stamp,
                        finished_at=stamp,
                    )
                )
                for device_change_id, steps in done.items():
                    conn.execute(
                        update(t.device_changes)
                        .where(
                            t.device_changes.c.id == device_change_id,
                            t.device_changes.c.status.not_in(FINAL_DEVICE_VALUES),
                        )
                        .values(
                            status=DeviceStatus.CANCELLED.value,
                            last_error=f"{reason}; steps completed: "
                            + (", ".join(steps) if steps else "none"),
                            updated_at=stamp,
                            finished_at=stamp,
                        )
                    )
            counts = status_counts(conn, bulk_change_id)
            if moved:
                conn.execute(
                    insert(t.audit_log).values(
                        bulk_change_id=bulk_change_id,
                        system="amop",
                        description="Bulk change stopped",
                        outcome="cancelled",
                        error=reason,
                        run_id=run_id,
                        response=json.dumps(
                            {"status": BulkStatus.CANCELLED.value, "counts": counts}
                        ),
                        created_at=utc_now(),
                    )
                )
                outbox_events.write_final(conn, bulk_change_id, BulkStatus.CANCELLED.value, counts)
        return bool(moved), counts
