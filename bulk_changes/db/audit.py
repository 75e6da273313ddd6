"""The audit trail: one row per external exchange or event of the project's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from bulk_changes.db import schema as t
from bulk_changes.domain.audit import to_text
from bulk_changes.domain.clock import utc_now
from bulk_changes.domain.model import AuditEntry


def storable(text: str | None) -> str | None:
    """Text the project writes itself (errors, audit), storable in any database: what an
    external system echoes may hold a NUL character, which PostgreSQL refuses in text."""
    return text.replace("\x00", "\ufffd") if text else text


def audit_rows(
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
                "created_at": utc_now(),
            }
        )
    return rows


class AuditTrail:
    """Reads of the audit trail (table ``audit_log``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
