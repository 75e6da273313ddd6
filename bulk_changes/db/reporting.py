"""What the UI and the results file show of one bulk change: its failed devices with
their last failed call, every device's result streamed, its open devices as a DataFrame."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select

from bulk_changes.db import schema as t
from bulk_changes.domain.model import FINAL_DEVICE_VALUES
from bulk_changes.domain.state_machine import DeviceStatus

if TYPE_CHECKING:
    import pandas as pd


class Reports:
    """Reads for reporting; nothing here writes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
