"""What `bulk-changes status` shows: the bulk change, its counts, its devices."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from bulk_changes.db import queue_outbox
from bulk_changes.db import schema as t
from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository


def status_of(repo: Repository, bulk_change_id: int, with_devices: bool) -> dict[str, Any] | None:
    bulk = repo.get_bulk_change(bulk_change_id)
    if bulk is None:
        return None
    # from creation to final: what the requester waited, retries included (a retry run
    # moves started_at; measured from it, a 62 s bulk change once showed 1.6 s)
    duration = (
        (bulk.finished_at - bulk.created_at).total_seconds()
        if bulk.finished_at and bulk.created_at
        else None
    )
    report: dict[str, Any] = {
        "id": bulk.id,
        "tenant": bulk.tenant_id,
        "change_type": bulk.change_type,
        "integration": bulk.integration,
        "status": bulk.status,
        "requested_by": bulk.requested_by,
        "source": bulk.source,
        "created_at": bulk.created_at.isoformat() if bulk.created_at else None,
        "started_at": bulk.started_at.isoformat() if bulk.started_at else None,
        "finished_at": bulk.finished_at.isoformat() if bulk.finished_at else None,
        "duration_seconds": duration,
        "counts": repo.counts(bulk.id),
        "calls": repo.audit_summary(bulk.id),
        "notifications": notifications_of(repo, bulk.id),
        "runs": runs_of(repo.engine, bulk.id),
        "queue": queue_outbox.state_of(repo.engine.raw_connection, bulk.id),
    }
    if with_devices:
        history = history_of(repo.engine, bulk.id)
        report["devices"] = [
            {
                "row": c.row_number,
                "device": c.device_key,
                "status": c.status,
                "attempts": c.attempts,
                "reason": c.last_error,
                "request": c.request,
                "earlier": history.get(c.id, []),
            }
            for c in repo.device_changes_of(bulk.id)
        ]
    return report


def runs_of(engine: Engine, bulk_change_id: int) -> list[dict[str, Any]]:
    """Every run that worked on the bulk change, oldest first."""
    query = (
        select(t.runs_seen)
        .where(t.runs_seen.c.bulk_change_id == bulk_change_id)
        .order_by(t.runs_seen.c.started_at)
    )
    with engine.connect() as conn:
        return [
            {
                "run_id": r.run_id,
                "retry_failed_only": bool(r.retry_failed_only),
                "started_at": _iso(r.started_at),
            }
            for r in conn.execute(query)
        ]


def history_of(engine: Engine, bulk_change_id: int) -> dict[int, list[dict[str, Any]]]:
    """Device change id -> what its earlier runs ended with (a retry reopened it)."""
    h = t.device_change_history
    query = (
        select(h)
        .join(t.device_changes, t.device_changes.c.id == h.c.device_change_id)
        .where(t.device_changes.c.bulk_change_id == bulk_change_id)
        .order_by(h.c.id)
    )
    out: dict[int, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for r in conn.execute(query):
            out.setdefault(r.device_change_id, []).append(
                {
                    "run_id": r.run_id,
                    "status": r.status,
                    "attempts": r.attempts,
                    "reason": r.reason,
                    "finished_at": _iso(r.finished_at),
                }
            )
    return out


def _shown_target(channel: str, target: str) -> str:
    # a webhook URL's query may hold a token: show the endpoint only
    return target.split("?", 1)[0] if channel == "webhook" else target


def notifications_of(repo: Repository, bulk_change_id: int) -> list[dict[str, Any]]:
    """Each notification event and the state of its deliveries (no secrets: endpoints
    without their query, addresses, statuses, errors as stored, already redacted)."""
    out = []
    for event in Outbox(repo.engine).notifications_of(bulk_change_id):
        out.append(
            {
                "event_id": event["event_id"],
                "type": event["type"],
                "created_at": _iso(event["created_at"]),
                "planned": event["planned"],
                "deliveries": [
                    {
                        "id": d["id"],
                        "channel": d["channel"],
                        "target": _shown_target(d["channel"], d["target"]),
                        "status": d["status"],
                        "attempts": d["attempts"],
                        "last_error": d["last_error"],
                        "next_attempt_at": _iso(d["next_attempt_at"]),
                        "delivered_at": _iso(d["delivered_at"]),
                        "failed_at": _iso(d["failed_at"]),
                    }
                    for d in event["deliveries"]
                ],
            }
        )
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _delivery_line(d: dict[str, Any]) -> str:
    line = f"{d['channel']} {d['target']}: {d['status']} ({d['attempts']} attempt(s))"
    if d["status"] == "PENDING" and d.get("next_attempt_at"):
        line += f", next {d['next_attempt_at']}"
    if d["status"] != "DELIVERED" and d.get("last_error"):
        line += f", last error: {d['last_error']}"
    return line


def format_text(report: dict[str, Any]) -> str:
    lines = [
        f"bulk change {report['id']}: {report['status']}",
        f"  tenant {report['tenant']}, {report['change_type']} on {report['integration']}"
        + (f", requested by {report['requested_by']}" if report.get("requested_by") else ""),
        f"  created {report['created_at']}, finished {report['finished_at'] or '-'}"
        + (
            f" ({report['duration_seconds']:.1f} s)"
            if report.get("duration_seconds") is not None
            else ""
        ),
        "  devices: " + ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items())),
    ]
    if report["calls"]:
        lines.append(
            "  calls: "
            + "; ".join(
                f"{system} " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items()))
                for system, outcomes in sorted(report["calls"].items())
            )
        )
    if report.get("notifications"):
        lines.append("  notifications:")
        for event in report["notifications"]:
            head = f"    {event['type']:<26} {event['event_id']}"
            if not event["planned"]:
                lines.append(f"{head}  (not sent yet: the next delivery pass takes it)")
            elif not event["deliveries"]:
                lines.append(f"{head}  (no destination configured)")
            else:
                lines.append(head)
            for d in event["deliveries"]:
                lines.append(f"      {_delivery_line(d)}")
    if report.get("runs"):
        lines.append(
            "  runs: "
            + ", ".join(
                f"{r['run_id'][:8]}{' (retry of failed devices)' if r['retry_failed_only'] else ''}"
                for r in report["runs"]
            )
        )
    queue = report.get("queue")
    if queue and not queue["sent_at"]:
        lines.append(
            f"  queue: not sent yet ({queue['attempts']} attempt(s)"
            + (f", last error: {queue['last_error']}" if queue["last_error"] else "")
            + f"); the queue sensor sends it, or: bulk-changes send {report['id']}"
        )
    for device in report.get("devices", []):
        reason = f"  {device['reason']}" if device["reason"] else ""
        lines.append(
            f"  row {device['row']:>5}  {device['device'] or '-':<20}  {device['status']:<10}"
            f"  attempts {device['attempts']}{reason}"
        )
        for earlier in device.get("earlier", []):
            run = (earlier["run_id"] or "?")[:8]
            lines.append(
                f"  {'':>5}  {'':<20}  earlier run {run}: {earlier['status']},"
                f" {earlier['attempts']} attempt(s): {earlier['reason'] or '-'}"
            )
    return "\n".join(lines)


# ---- bulk-changes list ------------------------------------------------------------------


def list_bulk_changes(
    engine: Engine,
    *,
    tenant: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Bulk changes, newest first, with their device counts (one grouped query)."""
    b = t.bulk_changes
    query = select(b).order_by(b.c.id.desc()).limit(limit)
    if tenant:
        query = query.where(b.c.tenant_id == tenant)
    if status:
        query = query.where(b.c.status == status.upper())
    if since is not None:
        query = query.where(b.c.created_at >= since)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        ids = [r.id for r in rows]
        counts: dict[int, dict[str, int]] = {i: {} for i in ids}
        if ids:
            d = t.device_changes
            for bulk_id, device_status, n in conn.execute(
                select(d.c.bulk_change_id, d.c.status, func.count())
                .where(d.c.bulk_change_id.in_(ids))
                .group_by(d.c.bulk_change_id, d.c.status)
            ):
                counts[bulk_id][device_status] = int(n)
    out = []
    for r in rows:
        created, finished = r.created_at, r.finished_at
        out.append(
            {
                "id": r.id,
                "tenant": r.tenant_id,
                "change_type": r.change_type,
                "integration": r.integration,
                "status": r.status,
                "created_at": _iso(created),
                "finished_at": _iso(finished),
                "duration_seconds": (finished - created).total_seconds()
                if finished and created
                else None,
                "devices": sum(counts[r.id].values()),
                "counts": counts[r.id],
            }
        )
    return out


def format_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no bulk changes match"
    lines = [
        f"{'id':>6}  {'tenant':<12} {'change type':<22} {'integration':<11} {'status':<22}"
        f" {'devices':>7}  created"
    ]
    for r in rows:
        lines.append(
            f"{r['id']:>6}  {r['tenant']:<12} {r['change_type']:<22} {r['integration']:<11}"
            f" {r['status']:<22} {r['devices']:>7}  {r['created_at']}"
        )
    return "\n".join(lines)


# ---- bulk-changes export ----------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """What ``bulk-changes export`` writes: a header row and one row per device change."""

    headers: list[str]
    rows: list[list[Any]]


def export_table(engine: Engine, bulk_change_id: int) -> Export:
    """One row per device change, in row order: its result (status, attempts, reason,
    earlier runs' reasons) and, per changed field, the previous and the new value.

    The previous value is the one the AMOP update replaced (its audit row keeps it); for
    a device not updated (yet), the inventory's current value. Built without pandas (a
    quarter of a second of the command's start-up)."""
    from bulk_changes.domain.change_types import parse_change_type
    from bulk_changes.domain.outcomes import inventory_changes

    d = t.device_changes
    with engine.connect() as conn:
        change_type = parse_change_type(
            conn.execute(
                select(t.bulk_changes.c.change_type).where(t.bulk_changes.c.id == bulk_change_id)
            ).scalar_one()
        )
        changes = conn.execute(
            select(
                d.c.id,
                d.c.row_number,
                d.c.device_key,
                d.c.device_id,
                d.c.status,
                d.c.attempts,
                d.c.last_error,
                d.c.request,
            )
            .where(d.c.bulk_change_id == bulk_change_id)
            .order_by(d.c.row_number)
        ).all()
        a = t.audit_log
        replaced = {
            int(i): json.loads(resp).get("previous", {})
            for i, resp in conn.execute(
                select(a.c.device_change_id, a.c.response).where(
                    a.c.bulk_change_id == bulk_change_id,
                    a.c.step == "amop.update_device",
                    a.c.outcome == "ok",
                    a.c.response.is_not(None),
                )
            )
        }
        dv = t.devices
        device_ids = sorted({int(c.device_id) for c in changes if c.device_id is not None})
        current: dict[int, dict[str, Any]] = {}
        for start in range(0, len(device_ids), 5000):
            for row in conn.execute(
                select(dv).where(dv.c.id.in_(device_ids[start : start + 5000]))
            ):
                current[row.id] = dict(row._mapping)
    history = history_of(engine, bulk_change_id)

    new_values = [inventory_changes(change_type, json.loads(c.request)) for c in changes]
    columns = list(dict.fromkeys(c for values in new_values for c in values))
    headers = ["row", "device", "status", "attempts", "reason"]
    for column in columns:
        headers += [f"previous_{column}", f"new_{column}"]
    headers.append("earlier_runs")

    def previous(change: Any, column: str) -> str:
        before = replaced.get(int(change.id))
        if before is not None and column in before:
            return _text(before[column])
        if change.device_id is not None:
            return _text(current.get(int(change.device_id), {}).get(column))
        return ""

    rows: list[list[Any]] = []
    for change, new in zip(changes, new_values, strict=True):
        row: list[Any] = [
            change.row_number,
            change.device_key or "",
            change.status,
            change.attempts,
            change.last_error or "",
        ]
        for column in columns:
            row += [previous(change, column), _text(new.get(column))]
        row.append(
            " | ".join(
                f"{e['status']} after {e['attempts']} attempt(s): {e['reason'] or '-'}"
                for e in history.get(int(change.id), [])
            )
        )
        rows.append(row)
    return Export(headers, rows)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def write_export(table: Export, path: Path, file_format: str) -> None:
    """CSV or .xlsx; formula-looking text written as text (``domain.spreadsheet``)."""
    from bulk_changes.domain.spreadsheet import write_table

    write_table(table.headers, table.rows, path, file_format)
