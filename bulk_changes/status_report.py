"""What `bulk-changes status` shows: the bulk change, its counts, its devices."""

from __future__ import annotations

from typing import Any

from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository


def status_of(repo: Repository, bulk_change_id: int, with_devices: bool) -> dict[str, Any] | None:
    bulk = repo.get_bulk_change(bulk_change_id)
    if bulk is None:
        return None
    duration = (
        (bulk.finished_at - bulk.started_at).total_seconds()
        if bulk.finished_at and bulk.started_at
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
    }
    if with_devices:
        report["devices"] = [
            {
                "row": c.row_number,
                "device": c.device_key,
                "status": c.status,
                "attempts": c.attempts,
                "reason": c.last_error,
                "request": c.request,
            }
            for c in repo.device_changes_of(bulk.id)
        ]
    return report


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
    for device in report.get("devices", []):
        reason = f"  {device['reason']}" if device["reason"] else ""
        lines.append(
            f"  row {device['row']:>5}  {device['device'] or '-':<20}  {device['status']:<10}"
            f"  attempts {device['attempts']}{reason}"
        )
    return "\n".join(lines)
