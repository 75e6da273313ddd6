"""The device inventory of the AMOP database: import, look-ups by key and by id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from bulk_changes.db import schema as t
from bulk_changes.db.store_errors import store_errors
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.errors import DevicesHeldElsewhere
from bulk_changes.domain.model import INVENTORY_FIELDS


class Inventory:
    """The tenants' devices (table ``devices``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
                values["updated_at"] = utc_now()
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
