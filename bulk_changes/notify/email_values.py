"""What the emails show, as plain values: each device's result row (the CSV attachment),
the username report's lines (previous and new values, from the audit of the AMOP update),
and how dates and durations read. No markup here: ``notify.emails`` renders them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FAILED_STATUSES = ("API_FAILED", "ERROR")

RESULT_COLUMNS = (
    "row",
    "device",
    "iccid",
    "msisdn",
    "status",
    "attempts",
    "reason",
    "finished_at",
    "request",
)

USERNAME_COLUMNS = (
    "device",
    "msisdn",
    "previous_username",
    "new_username",
    "previous_cost_center_1",
    "new_cost_center_1",
    "previous_cost_center_2",
    "new_cost_center_2",
    "previous_cost_center_3",
    "new_cost_center_3",
    "date",
    "changed_by",
)

USERNAME_FIELDS = ("username", "cost_center_1", "cost_center_2", "cost_center_3")


def cell(value: Any) -> str:
    """A value in a mail: "-" for nothing, a date in ISO form to the second."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def when(value: Any) -> str:
    """An ISO timestamp as people read it: 2024-05-01 12:00:03 UTC."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    suffix = " UTC" if parsed.utcoffset() is not None and not parsed.utcoffset() else ""
    return parsed.strftime("%Y-%m-%d %H:%M:%S") + suffix


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def failed(device: Mapping[str, Any]) -> bool:
    return device["status"] in FAILED_STATUSES


def result_row(d: Mapping[str, Any]) -> list[Any]:
    """One device's result (a ``device_results`` row), for the CSV attachment."""
    request = d.get("request")
    if isinstance(request, str):
        request = json.loads(request)
    return [
        d["row_number"],
        d.get("device_key"),
        d.get("iccid"),
        d.get("msisdn"),
        d["status"],
        d.get("attempts", 0),
        d.get("last_error"),
        cell(d.get("finished_at")) if d.get("finished_at") else None,
        json.dumps(request, sort_keys=True) if request is not None else None,
    ]


@dataclass(frozen=True)
class UsernameLine:
    device: str | None
    msisdn: str | None
    previous: Mapping[str, Any]
    new: Mapping[str, Any]
    date: str | None
    changed_by: str | None

    def row(self) -> list[Any]:
        return [
            self.device,
            self.msisdn,
            self.previous.get("username"),
            self.new.get("username"),
            self.previous.get("cost_center_1"),
            self.new.get("cost_center_1"),
            self.previous.get("cost_center_2"),
            self.new.get("cost_center_2"),
            self.previous.get("cost_center_3"),
            self.new.get("cost_center_3"),
            self.date,
            self.changed_by,
        ]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def username_lines(
    devices: Iterable[Mapping[str, Any]],
    inventory: Mapping[int, Mapping[str, Any]],
    audit: Sequence[Mapping[str, Any]],
    changed_by: str | None,
) -> list[UsernameLine]:
    """The devices a username_cost_center change updated, previous and new values, in
    the order of ``devices`` (row order).

    ``audit``: the rows of step ``amop.update_device`` (request: the columns written,
    response ``{"previous": {...}}``: their values before). Fields the request did not
    change are the same before and after: the inventory row's value.
    """
    by_change = {a["device_change_id"]: a for a in audit if a.get("outcome") == "ok"}
    lines = []
    for d in devices:
        entry = by_change.get(d["id"])
        if d["status"] != "PROCESSED" or entry is None:
            continue
        written = _json(entry.get("request")) or {}
        previous_written = (_json(entry.get("response")) or {}).get("previous") or {}
        current = inventory.get(d.get("device_id") or -1, {})
        previous: dict[str, Any] = {}
        new: dict[str, Any] = {}
        for name in USERNAME_FIELDS:
            if name in written:
                previous[name] = previous_written.get(name)
                new[name] = written[name]
            else:
                previous[name] = new[name] = current.get(name)
        created = entry.get("created_at")
        lines.append(
            UsernameLine(
                device=d.get("device_key"),
                msisdn=d.get("msisdn") or current.get("msisdn"),
                previous=previous,
                new=new,
                date=cell(created) if created else None,
                changed_by=changed_by,
            )
        )
    return lines
