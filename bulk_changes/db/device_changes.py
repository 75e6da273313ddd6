"""Reads of a bulk change's device changes: which are open, their rows, their counts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, func, select

from bulk_changes.db import schema as t
from bulk_changes.db.store_errors import store_errors
from bulk_changes.domain.model import FINAL_DEVICE_VALUES, DeviceChange


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


def status_counts(conn: Any, bulk_change_id: int) -> dict[str, int]:
    """The bulk change's device changes per status, on the caller's connection (inside
    its transaction when it has one)."""
    rows = conn.execute(
        select(t.device_changes.c.status, func.count())
        .where(t.device_changes.c.bulk_change_id == bulk_change_id)
        .group_by(t.device_changes.c.status)
    )
    return {status: int(n) for status, n in rows}


class DeviceChanges:
    """The device changes (table ``device_changes``) as the runner and the reports read them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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

    @store_errors
    def revio_service_ids(self, bulk_change_id: int) -> set[int]:
        """The Rev.io services the inventory knows for the bulk change's devices."""
        dc, d = t.device_changes.c, t.devices.c
        query = (
            select(d.revio_service_id)
            .join_from(t.device_changes, t.devices, dc.device_id == d.id)
            .where(dc.bulk_change_id == bulk_change_id, d.revio_service_id.is_not(None))
            .distinct()
        )
        with self.engine.connect() as conn:
            return {int(i) for i in conn.execute(query).scalars()}

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
            return status_counts(conn, bulk_change_id)
