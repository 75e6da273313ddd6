"""Reads and writes of the AMOP database. Every state change is one short transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Engine, String, Table, and_, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from bulk_changes.db import outbox
from bulk_changes.db import schema as t
from bulk_changes.db.store_errors import store_errors, store_errors_and_values
from bulk_changes.domain.audit import to_text
from bulk_changes.domain.errors import DevicesHeldElsewhere
from bulk_changes.domain.model import (
    FINAL_DEVICE_VALUES,
    AuditEntry,
    BulkChange,
    DeviceChange,
    NewDeviceChange,
    StepSuccess,
)
from bulk_changes.domain.state_machine import (
    FINAL_DEVICE,
    BulkStatus,
    DeviceStatus,
    final_bulk_status,
)

if TYPE_CHECKING:
    import pandas as pd

INVENTORY_FIELDS = (
    "iccid",
    "msisdn",
    "imei",
    "status",
    "rate_plan",
    "communication_plan",
    "username",
    "cost_center_1",
    "cost_center_2",
    "cost_center_3",
    "revio_service_id",
)

# engine -> its database's id: read once per process (it never changes)
_DATABASE_IDS: dict[int, str] = {}


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; the project writes them in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


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
        created_at=aware(row.created_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        last_run_id=row.last_run_id,
        request_digest=digest,
    )


def _device_change(row: Any) -> DeviceChange:
    return DeviceChange(
        id=row.id,
        bulk_change_id=row.bulk_change_id,
        row_number=row.row_number,
        device_key=row.device_key,
        device_id=row.device_id,
        request=json.loads(row.request),
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
    )


def storable(text: str | None) -> str | None:
    """Text the project writes itself (errors, audit), storable in any database: what an
    external system echoes may hold a NUL character, which PostgreSQL refuses in text."""
    return text.replace("\x00", "\ufffd") if text else text


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- inventory -------------------------------------------------------------

    def upsert_devices(
        self,
        tenant_id: str,
        rows: Sequence[Mapping[str, Any]],
        exclusive_of: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[int, int]:
        """Insert new devices, update known ones (by tenant, integration, key). -> (new, updated)

        ``exclusive_of`` maps an integration to the other tenants sharing the tenant's carrier
        account: a device one of them holds is refused (:class:`DevicesHeldElsewhere`), and
        nothing is written.
        """
        inserted = updated = 0
        with self.engine.begin() as conn:
            if exclusive_of:
                if conn.dialect.name == "postgresql":
                    # Two imports racing for one device: one at a time, so both cannot pass
                    # the check below before either has written.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74210005)")
                taken = self._held_by(conn, rows, exclusive_of)
                if taken:
                    raise DevicesHeldElsewhere(taken)
            existing = {
                (r.integration, r.device_key): r.id
                for r in conn.execute(
                    select(t.devices.c.id, t.devices.c.integration, t.devices.c.device_key).where(
                        t.devices.c.tenant_id == tenant_id
                    )
                )
            }
            to_insert = []
            for row in rows:
                values = {k: row.get(k) for k in INVENTORY_FIELDS}
                values["updated_at"] = now()
                key = (row["integration"], row["device_key"])
                if key in existing:
                    conn.execute(
                        update(t.devices).where(t.devices.c.id == existing[key]).values(**values)
                    )
                    updated += 1
                else:
                    values.update(
                        tenant_id=tenant_id,
                        integration=row["integration"],
                        device_key=row["device_key"],
                    )
                    to_insert.append(values)
                    existing[key] = -1
            if to_insert:
                conn.execute(insert(t.devices), to_insert)
                inserted = len(to_insert)
        return inserted, updated

    @staticmethod
    def _held_by(
        conn: Any, rows: Sequence[Mapping[str, Any]], exclusive_of: Mapping[str, Sequence[str]]
    ) -> list[tuple[str, str]]:
        taken: list[tuple[str, str]] = []
        for integration, others in exclusive_of.items():
            keys = [r["device_key"] for r in rows if r["integration"] == integration]
            if not others or not keys:
                continue
            for start in range(0, len(keys), 500):
                taken += [
                    (integration, r.device_key)
                    for r in conn.execute(
                        select(t.devices.c.device_key).where(
                            t.devices.c.integration == integration,
                            t.devices.c.tenant_id.in_(list(others)),
                            t.devices.c.device_key.in_(keys[start : start + 500]),
                        )
                    )
                ]
        return taken

    def devices_by_key(
        self, tenant_id: str, integration: str, keys: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for r in conn.execute(
                    select(t.devices).where(
                        t.devices.c.tenant_id == tenant_id,
                        t.devices.c.integration == integration,
                        t.devices.c.device_key.in_(chunk),
                    )
                ):
                    found[r.device_key] = dict(r._mapping)
        return found

    @store_errors
    def devices_by_id(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = list(ids)
        with self.engine.connect() as conn:
            return {
                r.id: dict(r._mapping)
                for r in conn.execute(select(t.devices).where(t.devices.c.id.in_(ids)))
            }

    def device(self, device_id: int) -> dict[str, Any] | None:
        return self.devices_by_id([device_id]).get(device_id)

    def count_devices(self, tenant_id: str | None = None) -> int:
        query = select(func.count()).select_from(t.devices)
        if tenant_id:
            query = query.where(t.devices.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # ---- bulk changes -----------------------------------------------------------

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
        stamp = now()
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
                outbox.forget_reports(
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
                            literal(now(), DateTime(timezone=True)),
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
                        updated_at=now(),
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
                    .values(status=BulkStatus.PROCESSING.value, started_at=now(), finished_at=None)
                ).rowcount
                if moved:
                    outbox.write_processing(conn, bulk_change_id)
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
                        started_at=now(),
                    )
                )
        return reopened

    def pending_device_change_ids(self, bulk_change_id: int) -> list[int]:
        """The ids of the device changes not yet final, in order (a list of ints: at
        100,000 devices a frame of their rows was a run worker's largest allocation)."""
        query = (
            select(t.device_changes.c.id)
            .where(
                t.device_changes.c.bulk_change_id == bulk_change_id,
                t.device_changes.c.status.not_in(FINAL_DEVICE_VALUES),
            )
            .order_by(t.device_changes.c.id)
        )
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]

    def pending_device_changes_frame(self, bulk_change_id: int) -> pd.DataFrame:
        """Device changes not yet final, joined to their inventory row, as a DataFrame."""
        query = (
            select(
                t.device_changes.c.id,
                t.device_changes.c.row_number,
                t.device_changes.c.device_key,
                t.device_changes.c.device_id,
                t.device_changes.c.status,
                t.device_changes.c.attempts,
            )
            .where(
                t.device_changes.c.bulk_change_id == bulk_change_id,
                t.device_changes.c.status.not_in(FINAL_DEVICE_VALUES),
            )
            .order_by(t.device_changes.c.id)
        )
        # imported here: pandas costs every run worker half a second of start-up (measured),
        # and the processing path does not use it
        import pandas as pd

        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    @store_errors
    def device_changes(self, ids: Iterable[int]) -> list[DeviceChange]:
        ids = list(ids)
        result: list[DeviceChange] = []
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(t.device_changes).where(
                        t.device_changes.c.id.in_(ids[start : start + 500])
                    )
                )
                result.extend(_device_change(r) for r in rows)
        result.sort(key=lambda c: c.id)
        return result

    def device_changes_of(self, bulk_change_id: int) -> list[DeviceChange]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.device_changes)
                .where(t.device_changes.c.bulk_change_id == bulk_change_id)
                .order_by(t.device_changes.c.row_number)
            )
            return [_device_change(r) for r in rows]

    def intake_rejections(self, bulk_change_id: int) -> list[dict[str, Any]]:
        """Rows refused at intake: [{"row", "field", "reason"}] in row order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.device_changes.c.row_number,
                    t.device_changes.c.error_field,
                    t.device_changes.c.last_error,
                )
                .where(
                    t.device_changes.c.bulk_change_id == bulk_change_id,
                    t.device_changes.c.error_field.is_not(None),
                )
                .order_by(t.device_changes.c.row_number)
            )
            return [
                {"row": r.row_number, "field": r.error_field, "reason": r.last_error} for r in rows
            ]

    def counts(self, bulk_change_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.device_changes.c.status, func.count())
                .where(t.device_changes.c.bulk_change_id == bulk_change_id)
                .group_by(t.device_changes.c.status)
            )
            return {status: int(n) for status, n in rows}

    # ---- device change progress -----------------------------------------------

    @store_errors
    def completed_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]:
        ids = list(device_change_ids)
        done: dict[int, set[str]] = {i: set() for i in ids}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                for r in conn.execute(
                    select(t.completed_steps.c.device_change_id, t.completed_steps.c.step).where(
                        t.completed_steps.c.device_change_id.in_(ids[start : start + 500])
                    )
                ):
                    done[r.device_change_id].add(r.step)
        return done

    @store_errors
    def started_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]:
        """Steps begun (their call may have been made) by any run, per device change."""
        ids = list(device_change_ids)
        started: dict[int, set[str]] = {i: set() for i in ids}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                for r in conn.execute(
                    select(t.step_progress.c.device_change_id, t.step_progress.c.step).where(
                        t.step_progress.c.device_change_id.in_(ids[start : start + 500]),
                        t.step_progress.c.step.like("%#started"),
                    )
                ):
                    started[r.device_change_id].add(r.step.removesuffix("#started"))
        return started

    @store_errors
    def begin_step(self, device_change_id: int, step: str, run_id: str | None) -> bool:
        """Before a step's call, in one transaction: the device change is PROCESSING and
        the step is marked started (so a crash after the call can be checked, not repeated).
        -> False, and nothing marked, if the device change is final (an operator stopped
        the bulk change): the call must not be made."""
        marker = f"{step}#started"
        with self.engine.begin() as conn:
            open_ = conn.execute(
                update(t.device_changes)
                .where(
                    t.device_changes.c.id == device_change_id,
                    t.device_changes.c.status.in_(
                        (DeviceStatus.NEW.value, DeviceStatus.PROCESSING.value)
                    ),
                )
                .values(status=DeviceStatus.PROCESSING.value, updated_at=now())
            ).rowcount
            if not open_:
                return False
            conn.execute(
                self._insert_new(t.step_progress).values(
                    device_change_id=device_change_id,
                    step=marker,
                    data=json.dumps({"run_id": run_id}),
                    updated_at=now(),
                )
            )
        return True

    def _insert_new(self, table: Table) -> Any:
        """INSERT that leaves an existing row (same primary key) as it is: one statement
        instead of a SELECT then an INSERT, on both SQLite and PostgreSQL."""
        # imported here: the PostgreSQL dialect's modules cost every CLI command on SQLite
        # 25 ms of start-up (the engine imports its own dialect anyway)
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    def _audit_rows(
        self,
        bulk_change_id: int,
        device_change_id: int | None,
        step: str | None,
        run_id: str | None,
        entries: Sequence[AuditEntry],
    ) -> list[dict[str, Any]]:
        rows = []
        for e in entries:
            x = e.exchange
            rows.append(
                {
                    "bulk_change_id": bulk_change_id,
                    "device_change_id": device_change_id,
                    "step": step,
                    "system": e.system,
                    "account": x.account if x else None,
                    "description": e.description,
                    "method": x.method if x else None,
                    "url": storable(x.url) if x else None,
                    "request": storable(x.request_body if x else to_text(e.request)),
                    "response_status": x.status if x else None,
                    "response": storable(x.response_body if x else to_text(e.response)),
                    "duration_ms": x.duration_ms if x else None,
                    "outcome": e.outcome,
                    "error": storable(e.error or (x.error if x else None)),
                    "attempt": e.attempt,
                    "run_id": run_id,
                    "created_at": now(),
                }
            )
        return rows

    @store_errors
    def record_step_success(
        self, bulk_change_id: int, device_change_id: int, success: StepSuccess, run_id: str | None
    ) -> None:
        with self.engine.begin() as conn:
            self._write_step_success(conn, bulk_change_id, device_change_id, success, run_id)
            self._add_attempts(conn, device_change_id, success.attempts)

    def _write_step_success(
        self,
        conn: Any,
        bulk_change_id: int,
        device_change_id: int,
        success: StepSuccess,
        run_id: str | None,
    ) -> None:
        result = success.result
        conn.execute(
            self._insert_new(t.completed_steps).values(
                device_change_id=device_change_id,
                step=success.step,
                completed_at=now(),
                result=json.dumps(result, default=str) if result is not None else None,
            )
        )
        if success.audit:
            conn.execute(
                insert(t.audit_log),
                self._audit_rows(
                    bulk_change_id, device_change_id, success.step, run_id, success.audit
                ),
            )

    def _add_attempts(self, conn: Any, device_change_id: int, attempts: int) -> None:
        conn.execute(
            update(t.device_changes)
            .where(t.device_changes.c.id == device_change_id)
            .values(attempts=t.device_changes.c.attempts + attempts, updated_at=now())
        )

    @store_errors
    def record_attempt_failure(
        self,
        *,
        bulk_change_id: int,
        device_change_id: int,
        step: str,
        error: str,
        audit: Sequence[AuditEntry],
        run_id: str | None,
        count: bool = True,
    ) -> None:
        """A failed try that will be retried: audited, counted unless it was throttling."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.device_changes)
                .where(t.device_changes.c.id == device_change_id)
                .values(
                    attempts=t.device_changes.c.attempts + (1 if count else 0),
                    last_error=storable(error),
                    updated_at=now(),
                )
            )
            if audit:
                conn.execute(
                    insert(t.audit_log),
                    self._audit_rows(bulk_change_id, device_change_id, step, run_id, audit),
                )

    @store_errors_and_values
    def finish_device_change(
        self,
        *,
        bulk_change_id: int,
        device_change_id: int,
        status: DeviceStatus,
        reason: str | None,
        step: str | None,
        audit: Sequence[AuditEntry] = (),
        run_id: str | None = None,
        count_attempt: bool = False,
        inventory_update: Mapping[str, Any] | None = None,
        device_id: int | None = None,
        after: StepSuccess | None = None,
    ) -> bool:
        """Move a device change to a final status, once. -> False if it was final already.

        With ``inventory_update`` the AMOP device row changes in the same transaction,
        and zero rows updated is an error (the device vanished from the inventory): the
        whole transaction rolls back, ``after`` included.

        ``after``: the external step that led here, recorded in the same transaction (one
        commit per device instead of two); recorded even if the device change was final.
        """
        values: dict[str, Any] = {
            "status": status.value,
            "last_error": storable(reason),
            "updated_at": now(),
            "finished_at": now(),
        }
        added = (1 if count_attempt else 0) + (after.attempts if after is not None else 0)
        if added:
            values["attempts"] = t.device_changes.c.attempts + added
        with self.engine.begin() as conn:
            if after is not None:
                self._write_step_success(conn, bulk_change_id, device_change_id, after, run_id)
            moved = conn.execute(
                update(t.device_changes)
                .where(
                    t.device_changes.c.id == device_change_id,
                    t.device_changes.c.status.not_in(FINAL_DEVICE_VALUES),
                )
                .values(**values)
            ).rowcount
            if not moved:
                if after is not None and after.attempts:
                    self._add_attempts(conn, device_change_id, after.attempts)
                return False
            if inventory_update is not None:
                changed = conn.execute(
                    update(t.devices)
                    .where(t.devices.c.id == device_id)
                    .values(**inventory_update, updated_at=now())
                ).rowcount
                if changed != 1:
                    # Rolls the whole transaction back: the device change stays open.
                    raise LookupError(f"device {device_id} is no longer in the inventory")
                if step:
                    conn.execute(
                        insert(t.completed_steps).values(
                            device_change_id=device_change_id,
                            step=step,
                            completed_at=now(),
                            result=json.dumps(dict(inventory_update), default=str),
                        )
                    )
            if audit:
                conn.execute(
                    insert(t.audit_log),
                    self._audit_rows(bulk_change_id, device_change_id, step, run_id, audit),
                )
        return bool(moved)

    @store_errors
    def step_progress(self, device_change_id: int, step: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.step_progress.c.data).where(
                    t.step_progress.c.device_change_id == device_change_id,
                    t.step_progress.c.step == step,
                )
            ).first()
        return json.loads(row[0]) if row else None

    @store_errors
    def save_step_progress(self, device_change_id: int, step: str, data: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(t.step_progress.c.step).where(
                    t.step_progress.c.device_change_id == device_change_id,
                    t.step_progress.c.step == step,
                )
            ).first()
            stmt = (
                update(t.step_progress).where(
                    and_(
                        t.step_progress.c.device_change_id == device_change_id,
                        t.step_progress.c.step == step,
                    )
                )
                if exists
                else insert(t.step_progress).values(device_change_id=device_change_id, step=step)
            )
            conn.execute(stmt.values(data=json.dumps(dict(data)), updated_at=now()))

    def finalize(self, bulk_change_id: int) -> tuple[str, dict[str, int], bool]:
        """Make the bulk change final if every device is. -> (status, counts, changed now).

        The conditional update makes this happen exactly once, whatever runs race.
        """
        with self.engine.begin() as conn:
            counts = {
                status: int(n)
                for status, n in conn.execute(
                    select(t.device_changes.c.status, func.count())
                    .where(t.device_changes.c.bulk_change_id == bulk_change_id)
                    .group_by(t.device_changes.c.status)
                )
            }
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
                .values(status=target.value, finished_at=now())
            ).rowcount
            if changed:
                conn.execute(
                    insert(t.audit_log).values(
                        bulk_change_id=bulk_change_id,
                        system="amop",
                        description="Bulk change final",
                        outcome="ok",
                        response=json.dumps({"status": target.value, "counts": counts}),
                        created_at=now(),
                    )
                )
                outbox.write_final(conn, bulk_change_id, target.value, counts)
                return target.value, counts, True
            return current, counts, False

    def report_final_devices(self, bulk_change_id: int, device_change_ids: Sequence[int]) -> int:
        """device_changes.completed events for those of ``device_change_ids`` that are
        final and not reported yet (a batch that finished). -> devices reported."""
        with self.engine.begin() as conn:
            return outbox.report_final_devices(conn, bulk_change_id, device_change_ids)

    def audit_of(
        self, bulk_change_id: int, device_change_id: int | None = None
    ) -> list[dict[str, Any]]:
        query = select(t.audit_log).where(t.audit_log.c.bulk_change_id == bulk_change_id)
        if device_change_id is not None:
            query = query.where(t.audit_log.c.device_change_id == device_change_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(t.audit_log.c.id))]

    def audit_summary(self, bulk_change_id: int) -> dict[str, dict[str, int]]:
        """Calls per system and outcome (ok, retry, throttled, error)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.audit_log.c.system, t.audit_log.c.outcome, func.count())
                .where(
                    t.audit_log.c.bulk_change_id == bulk_change_id,
                    t.audit_log.c.method.is_not(None),
                )
                .group_by(t.audit_log.c.system, t.audit_log.c.outcome)
            )
            summary: dict[str, dict[str, int]] = {}
            for system, outcome, n in rows:
                summary.setdefault(system, {})[outcome] = int(n)
            return summary

    # ---- what the UI shows of one bulk change ------------------------------------

    def failed_devices(self, bulk_change_id: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` device changes that did not end PROCESSED (row order), each
        with its last failed call (system, HTTP status, answer), and how many there are."""
        not_ok = (
            DeviceStatus.API_FAILED.value,
            DeviceStatus.ERROR.value,
            DeviceStatus.CANCELLED.value,
        )
        where = (
            t.device_changes.c.bulk_change_id == bulk_change_id,
            t.device_changes.c.status.in_(not_ok),
        )
        with self.engine.connect() as conn:
            total = int(
                conn.execute(
                    select(func.count()).select_from(t.device_changes).where(*where)
                ).scalar_one()
            )
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(
                        t.device_changes.c.id,
                        t.device_changes.c.row_number,
                        t.device_changes.c.device_key,
                        t.device_changes.c.status,
                        t.device_changes.c.attempts,
                        t.device_changes.c.last_error,
                        t.device_changes.c.error_field,
                    )
                    .where(*where)
                    .order_by(t.device_changes.c.row_number)
                    .limit(limit)
                )
            ]
            last_call: dict[int, Any] = {}
            ids = [r["id"] for r in rows]
            for start in range(0, len(ids), 500):
                for a in conn.execute(
                    select(
                        t.audit_log.c.device_change_id,
                        t.audit_log.c.system,
                        t.audit_log.c.response_status,
                        t.audit_log.c.response,
                    )
                    .where(
                        t.audit_log.c.device_change_id.in_(ids[start : start + 500]),
                        t.audit_log.c.outcome.in_(("error", "retry")),
                        t.audit_log.c.response_status.is_not(None),
                    )
                    .order_by(t.audit_log.c.id)
                ):
                    last_call[a.device_change_id] = a  # the latest wins
        for row in rows:
            call = last_call.get(row["id"])
            row["system"] = call.system if call else None
            row["response_status"] = call.response_status if call else None
            row["response"] = call.response if call else None
        return rows, total

    def device_results(self, bulk_change_id: int) -> Iterable[Any]:
        """Every device change of the bulk change in row order, streamed (a results file of
        100,000 devices is written without holding them all)."""
        query = (
            select(
                t.device_changes.c.row_number,
                t.device_changes.c.device_key,
                t.device_changes.c.status,
                t.device_changes.c.attempts,
                t.device_changes.c.error_field,
                t.device_changes.c.last_error,
                t.device_changes.c.request,
                t.device_changes.c.finished_at,
            )
            .where(t.device_changes.c.bulk_change_id == bulk_change_id)
            .order_by(t.device_changes.c.row_number)
        )
        with self.engine.connect() as conn:
            yield from conn.execution_options(stream_results=True, yield_per=1000).execute(query)

    # ---- stopping -------------------------------------------------------------------

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
                .values(status=BulkStatus.CANCELLED.value, finished_at=now())
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
                stamp = now()
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
            counts = {
                status: int(n)
                for status, n in conn.execute(
                    select(t.device_changes.c.status, func.count())
                    .where(t.device_changes.c.bulk_change_id == bulk_change_id)
                    .group_by(t.device_changes.c.status)
                )
            }
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
                        created_at=now(),
                    )
                )
                outbox.write_final(conn, bulk_change_id, BulkStatus.CANCELLED.value, counts)
        return bool(moved), counts
