"""The step journal: each step of a device change begun, succeeded, failed or ended,
committed the moment it is known, so a run that dies anywhere continues where it
stopped (completed steps are skipped, a started one is checked at the vendor first)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, and_, bindparam, insert, select, update

from bulk_changes.db import schema as t
from bulk_changes.db.audit import audit_rows, storable
from bulk_changes.db.driver_statements import DriverInsert, DriverStatement
from bulk_changes.db.driver_transactions import lean_transaction
from bulk_changes.db.store_errors import store_errors, store_errors_and_values
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.model import FINAL_DEVICE_VALUES, AuditEntry, StepSuccess
from bulk_changes.domain.state_machine import DeviceStatus

# a step marked begun in step_progress (before its call): "<step>#started"
STARTED = "#started"

# The statements of every device's steps, built once: building a statement and its cache
# key on every execution cost more CPU than executing it (a run worker's largest share).
# The columns to set come from the parameters' keys (compiled once per set of keys).
_dc = t.device_changes.c
_OPEN = (_dc.status == DeviceStatus.NEW.value) | (_dc.status == DeviceStatus.PROCESSING.value)
_NOT_FINAL = and_(*(_dc.status != value for value in FINAL_DEVICE_VALUES))
# a step begins: its device change is PROCESSING (and counts the attempts of the step
# recorded in the same transaction), unless an operator's stop made it final
_BEGIN = DriverStatement(
    update(t.device_changes)
    .where(_dc.id == bindparam("b_id"), _OPEN)
    .values(attempts=_dc.attempts + bindparam("b_attempts"))
)
_ADD_ATTEMPTS = DriverStatement(
    update(t.device_changes)
    .where(_dc.id == bindparam("b_id"))
    .values(attempts=_dc.attempts + bindparam("b_attempts"))
)
_FINISH = DriverStatement(
    update(t.device_changes)
    .where(_dc.id == bindparam("b_id"), _NOT_FINAL)
    .values(attempts=_dc.attempts + bindparam("b_attempts"))
)
_UPDATE_DEVICE = DriverStatement(
    update(t.devices).where(t.devices.c.id == bindparam("b_device_id"))
)
# executed on the driver's cursor (db/driver_statements.py): SQLAlchemy's execution of
# these cost more CPU than the statements and the commits together; and in a transaction
# on the driver (db/driver_transactions.py) for the same reason
_INSERT_AUDIT = DriverInsert(t.audit_log)
_INSERT_STARTED = DriverInsert(t.step_progress, on_conflict_do_nothing=True)
_INSERT_COMPLETED = DriverInsert(t.completed_steps, on_conflict_do_nothing=True)


class StepJournal:
    """Completed and started steps, step progress, and the moves of one device change."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @store_errors
    def completed_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]:
        return self._steps_of(device_change_ids, t.completed_steps)

    @store_errors
    def started_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]:
        """Steps begun (their call may have been made) by any run, per device change."""
        progress = t.step_progress
        return self._steps_of(
            device_change_ids, progress, progress.c.step.like(f"%{STARTED}"), suffix=STARTED
        )

    def _steps_of(
        self, device_change_ids: Iterable[int], table: Table, *where: Any, suffix: str = ""
    ) -> dict[int, set[str]]:
        """The steps ``table`` holds per device change (its name without ``suffix``)."""
        ids = list(device_change_ids)
        found: dict[int, set[str]] = {i: set() for i in ids}
        c = table.c
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for r in conn.execute(
                    select(c.device_change_id, c.step).where(c.device_change_id.in_(chunk), *where)
                ):
                    found[r.device_change_id].add(r.step.removesuffix(suffix))
        return found

    @store_errors
    def begin_step(
        self,
        device_change_id: int,
        step: str,
        run_id: str | None,
        *,
        after: StepSuccess | None = None,
        bulk_change_id: int | None = None,
    ) -> bool:
        """Before a step's call, in one transaction: the device change is PROCESSING and
        the step is marked started (so a crash after the call can be checked, not repeated).
        -> False, and nothing marked, if the device change is final (an operator stopped
        the bulk change): the call must not be made.

        ``after``: the device's step just done (of bulk change ``bulk_change_id``), recorded
        in the same transaction (one commit instead of two between its call and the
        next); recorded even when the device change is final and nothing begins."""
        marker = f"{step}{STARTED}"
        now = utc_now()
        attempts = after.attempts if after is not None else 0
        with lean_transaction(self.engine) as conn:
            if after is not None:
                if bulk_change_id is None:
                    raise ValueError("a step success is recorded with its bulk change's id")
                self._write_step_success(conn, bulk_change_id, device_change_id, after, run_id)
            open_ = _BEGIN.execute(
                conn,
                {
                    "b_id": device_change_id,
                    "b_attempts": attempts,
                    "status": DeviceStatus.PROCESSING.value,
                    "updated_at": now,
                },
            )
            if not open_:
                if attempts:
                    self._add_attempts(conn, device_change_id, attempts)
                return False
            _INSERT_STARTED.execute(
                conn,
                [
                    {
                        "device_change_id": device_change_id,
                        "step": marker,
                        "data": json.dumps({"run_id": run_id}),
                        "updated_at": now,
                    }
                ],
            )
        return True

    @store_errors
    def record_step_success(
        self, bulk_change_id: int, device_change_id: int, success: StepSuccess, run_id: str | None
    ) -> None:
        with lean_transaction(self.engine) as conn:
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
        _INSERT_COMPLETED.execute(
            conn, [_completed_row(device_change_id, success.step, success.result, utc_now())]
        )
        if success.audit:
            _INSERT_AUDIT.execute(
                conn,
                audit_rows(bulk_change_id, device_change_id, success.step, run_id, success.audit),
            )

    def _add_attempts(self, conn: Any, device_change_id: int, attempts: int) -> None:
        _ADD_ATTEMPTS.execute(
            conn, {"b_id": device_change_id, "b_attempts": attempts, "updated_at": utc_now()}
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
                    updated_at=utc_now(),
                )
            )
            if audit:
                conn.execute(
                    insert(t.audit_log),
                    audit_rows(bulk_change_id, device_change_id, step, run_id, audit),
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
        now = utc_now()
        added = (1 if count_attempt else 0) + (after.attempts if after is not None else 0)
        with lean_transaction(self.engine) as conn:
            moved = _FINISH.execute(
                conn,
                {
                    "b_id": device_change_id,
                    "b_attempts": added,
                    "status": status.value,
                    "last_error": storable(reason),
                    "updated_at": now,
                    "finished_at": now,
                },
            )
            completed: list[dict[str, Any]] = []
            rows: list[dict[str, Any]] = []
            if after is not None:
                completed.append(_completed_row(device_change_id, after.step, after.result, now))
                rows += audit_rows(
                    bulk_change_id, device_change_id, after.step, run_id, after.audit
                )
            if not moved:
                if after is not None and after.attempts:
                    self._add_attempts(conn, device_change_id, after.attempts)
            elif inventory_update is not None:
                changed = _UPDATE_DEVICE.execute(
                    conn, {**inventory_update, "updated_at": now, "b_device_id": device_id}
                )
                if changed != 1:
                    # Rolls the whole transaction back: the device change stays open.
                    raise LookupError(f"device {device_id} is no longer in the inventory")
                if step:
                    completed.append(
                        _completed_row(device_change_id, step, dict(inventory_update), now)
                    )
            if moved and audit:
                rows += audit_rows(bulk_change_id, device_change_id, step, run_id, audit)
            # the rows of both steps, one statement per table
            if completed:
                _INSERT_COMPLETED.execute(conn, completed)
            if rows:
                _INSERT_AUDIT.execute(conn, rows)
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
            conn.execute(stmt.values(data=json.dumps(dict(data)), updated_at=utc_now()))


def _completed_row(device_change_id: int, step: str, result: Any, now: Any) -> dict[str, Any]:
    return {
        "device_change_id": device_change_id,
        "step": step,
        "completed_at": now,
        "result": json.dumps(result, default=str) if result is not None else None,
    }
