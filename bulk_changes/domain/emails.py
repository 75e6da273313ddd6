"""The emails: completion, errors, username report, run failure alert. HTML and plain-text
parts from the templates in ``bulk_changes/templates/email`` (``string.Template``), CSV
attachments. Pure: builds ``email.message.EmailMessage`` values, sends nothing.
"""

from __future__ import annotations

import email.policy
import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from bulk_changes.domain.spreadsheet import to_csv

# Longest tables in a mail body; the attachment always has every row.
MAX_TABLE_ROWS = 200

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


@cache
def template(name: str) -> Template:
    text = resources.files("bulk_changes").joinpath(f"templates/email/{name}").read_text("utf-8")
    return Template(text)


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _when(value: Any) -> str:
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


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_text(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _escaped(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: html.escape(_text(v)) for k, v in values.items()}


def _counts_rows(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items())


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
        _text(d.get("finished_at")) if d.get("finished_at") else None,
        json.dumps(request, sort_keys=True) if request is not None else None,
    ]


def _failed(device: Mapping[str, Any]) -> bool:
    return device["status"] in FAILED_STATUSES


def _failure_table(failed: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(text, html) of the devices that did not succeed, capped at MAX_TABLE_ROWS."""
    if not failed:
        return "", ""
    headers = ("row", "device", "status", "reason")
    rows = [
        [d["row_number"], d.get("device_key"), d["status"], d.get("last_error")] for d in failed
    ]
    shown = rows[:MAX_TABLE_ROWS]
    more = (
        f"... and {len(rows) - len(shown)} more: see the attachment.\n"
        if len(rows) > len(shown)
        else ""
    )
    title = f"Devices that did not succeed ({len(rows)}):"
    text = f"\n{title}\n{text_table(headers, shown)}\n{more}"
    markup = (
        f'<h2 style="font-size:15px">{html.escape(title)}</h2>'
        + html_table(headers, shown)
        + (f"<p>{html.escape(more)}</p>" if more else "")
    )
    return text, markup


def _message(
    event_id: str,
    subject: str,
    to: Sequence[str],
    sender: str,
    text: str,
    body_html: str,
    sent_at: datetime,
    attachments: Sequence[tuple[str, str]] = (),
) -> EmailMessage:
    # Headers unfolded up to RFC 5322's 998: the library's folding at 78 can put a
    # subject of about that length on a continuation line, read back with a leading space.
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(sent_at)
    # Stable across retries: a mail that went twice is recognisably the same mail.
    message["Message-ID"] = f"<{event_id}@bulk-changes>" if event_id else make_msgid()
    message["X-Bulk-Changes-Event"] = event_id
    message.set_content(text)
    page = template("layout.html").substitute(
        title=html.escape(subject), body=body_html, event_id=html.escape(event_id)
    )
    message.add_alternative(page, subtype="html")
    for filename, content in attachments:
        message.add_attachment(
            content.encode("utf-8"), maintype="text", subtype="csv", filename=filename
        )
    return message


def _facts(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "bulk_change_id": data["bulk_change_id"],
        "tenant": data["tenant"],
        "change_type": data["change_type"],
        "integration": data["integration"],
        "requested_by": data.get("requested_by") or "-",
        "status": data.get("status", "-"),
        "created_at": _when(data.get("created_at")),
        "started_at": _when(data.get("started_at")),
        "finished_at": _when(data.get("finished_at")),
        "duration": duration_text(data.get("duration_seconds")),
        "devices": data.get("devices", 0),
    }


def completion_email(
    event_id: str,
    data: Mapping[str, Any],
    devices: Iterable[Mapping[str, Any]],
    to: Sequence[str],
    sender: str,
    sent_at: datetime,
) -> EmailMessage:
    """When a bulk change becomes final: facts, counts by status, the devices that did
    not succeed with their reasons, every device's result as CSV.

    ``devices`` in row order, read once (a bulk change's may be too many to hold)."""
    facts = _facts(data)
    counts = _counts_rows(data.get("counts") or {})
    failed: list[Mapping[str, Any]] = []

    def rows() -> Iterable[list[Any]]:
        for d in devices:
            if _failed(d):
                failed.append(d)
            yield result_row(d)

    results_csv = to_csv(RESULT_COLUMNS, rows())
    failures_text, failures_html = _failure_table(failed)
    csv_name = f"bulk-change-{data['bulk_change_id']}-results.csv"
    values = {**facts, "csv_name": csv_name, "event_id": event_id}
    text = template("completion.txt").substitute(
        values,
        counts_text=text_table(("status", "devices"), counts),
        failures_text=failures_text,
    )
    body = template("completion.html").substitute(
        _escaped(values),
        counts_html=html_table(("status", "devices"), counts),
        failures_html=failures_html,
    )
    subject = (
        f"Bulk change {facts['bulk_change_id']} {facts['status']}: {facts['change_type']} "
        f"on {facts['integration']} ({facts['tenant']})"
    )
    return _message(
        event_id,
        subject,
        to,
        sender,
        text,
        body,
        sent_at,
        [(csv_name, results_csv)],
    )


def errors_email(
    event_id: str,
    data: Mapping[str, Any],
    devices: Iterable[Mapping[str, Any]],
    to: Sequence[str],
    sender: str,
    sent_at: datetime,
) -> EmailMessage:
    """One mail for the devices that ended API_FAILED or ERROR: reasons, then devices
    (``devices`` in row order, read once)."""
    facts = _facts(data)
    failed = [d for d in devices if _failed(d)]
    by_status = Counter(d["status"] for d in failed)
    failed_counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    reasons = Counter((d["status"], d.get("last_error") or "-") for d in failed).most_common()
    reason_rows = [[status, reason, count] for (status, reason), count in reasons]
    failures_text, failures_html = _failure_table(failed)
    values = {
        **facts,
        "failed": len(failed),
        "failed_counts": failed_counts or "none",
        "event_id": event_id,
    }
    text = template("errors.txt").substitute(
        values,
        reasons_text=text_table(("status", "reason", "devices"), reason_rows),
        failures_text=failures_text,
    )
    body = template("errors.html").substitute(
        _escaped(values),
        reasons_html=html_table(("status", "reason", "devices"), reason_rows),
        failures_html=failures_html,
    )
    subject = (
        f"Bulk change {facts['bulk_change_id']}: {len(failed)} device(s) failed "
        f"({failed_counts}), {facts['change_type']} on {facts['integration']} ({facts['tenant']})"
    )
    return _message(event_id, subject, to, sender, text, body, sent_at)


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
                date=_text(created) if created else None,
                changed_by=changed_by,
            )
        )
    return lines


def username_report_email(
    event_id: str,
    data: Mapping[str, Any],
    lines: Iterable[UsernameLine],
    to: Sequence[str],
    sender: str,
    sent_at: datetime,
) -> EmailMessage:
    """``lines`` read once: the first MAX_TABLE_ROWS in the body, every one in the CSV."""
    facts = _facts(data)
    headers = (
        "device",
        "MSISDN",
        "previous username",
        "new username",
        "previous cost centers (1 / 2 / 3)",
        "new cost centers (1 / 2 / 3)",
        "date",
        "changed by",
    )

    def centers(values: Mapping[str, Any]) -> str:
        return " / ".join(_text(values.get(f"cost_center_{i}")) for i in (1, 2, 3))

    shown: list[list[Any]] = []
    count = 0

    def csv_rows() -> Iterable[list[Any]]:
        nonlocal count
        for line in lines:
            count += 1
            if len(shown) < MAX_TABLE_ROWS:
                shown.append(
                    [
                        line.device,
                        line.msisdn,
                        line.previous.get("username"),
                        line.new.get("username"),
                        centers(line.previous),
                        centers(line.new),
                        _when(line.date),
                        line.changed_by,
                    ]
                )
            yield line.row()

    report_csv = to_csv(USERNAME_COLUMNS, csv_rows())
    more = f"... and {count - len(shown)} more: see the attachment." if count > len(shown) else ""
    csv_name = f"bulk-change-{data['bulk_change_id']}-username-report.csv"
    values = {
        **facts,
        "lines": count,
        "changed_by": facts["requested_by"],
        "csv_name": csv_name,
        "event_id": event_id,
    }
    text = template("username_report.txt").substitute(
        values, table_text=text_table(headers, shown) + (f"\n{more}" if more else "") + "\n"
    )
    body = template("username_report.html").substitute(
        _escaped(values),
        table_html=html_table(headers, shown) + (f"<p>{html.escape(more)}</p>" if more else ""),
    )
    subject = (
        f"Username report: bulk change {facts['bulk_change_id']} ({facts['tenant']}, "
        f"{facts['integration']}), {count} device(s)"
    )
    return _message(
        event_id,
        subject,
        to,
        sender,
        text,
        body,
        sent_at,
        [(csv_name, report_csv)],
    )


def run_url(base_url: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}"


def run_failure_email(
    event_id: str,
    data: Mapping[str, Any],
    to: Sequence[str],
    sender: str,
    sent_at: datetime,
    ui_base_url: str,
) -> EmailMessage:
    values = {
        "job_name": data.get("job_name") or "-",
        "run_id": data["run_id"],
        "bulk_change_id": data.get("bulk_change_id") or "-",
        "tenant": data.get("tenant") or "-",
        "failed_at": _when(data.get("failed_at")),
        "error": data.get("error") or "-",
        "run_url": run_url(ui_base_url, data["run_id"]),
        "event_id": event_id,
    }
    text = template("run_failure.txt").substitute(values)
    body = template("run_failure.html").substitute(_escaped(values))
    subject = f"Run failed: {values['job_name']} {str(data['run_id'])[:8]}" + (
        f" (bulk change {data['bulk_change_id']})" if data.get("bulk_change_id") else ""
    )
    return _message(event_id, subject, to, sender, text, body, sent_at)
