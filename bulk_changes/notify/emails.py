"""The emails: completion, errors, username report, run failure alert. Both parts are
rendered from the Jinja2 templates in ``bulk_changes/templates/email``; the HTML ones
autoescape every value (a username or a carrier's error text is data, never markup).
Builds ``email.message.EmailMessage`` values with CSV attachments; sends nothing."""

from __future__ import annotations

import email.policy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bulk_changes.domain.spreadsheet import to_csv
from bulk_changes.notify.email_values import (
    RESULT_COLUMNS,
    USERNAME_COLUMNS,
    UsernameLine,
    cell,
    duration_text,
    failed,
    result_row,
    when,
)

# Longest tables in a mail body; the attachment always has every row.
MAX_TABLE_ROWS = 200


@cache
def templates() -> Environment:
    return Environment(
        loader=PackageLoader("bulk_changes", "templates/email"),
        # .html escaped, .txt as it is (a plain-text part has no markup to break)
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,  # a name missing from a mail's values fails, never blank
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only a tag leaves no blank line
    )


def render(name: str, values: Mapping[str, Any]) -> str:
    environment = templates()
    environment.filters.setdefault("cell", cell)
    return environment.get_template(name).render(values)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


FAILURE_HEADERS = ("row", "device", "status", "reason")


def _failures(devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The devices that did not succeed, capped at MAX_TABLE_ROWS: title, headers, rows,
    "... and N more" (the HTML part's table), and ``text`` (the plain part's)."""
    rows = [
        [d["row_number"], d.get("device_key"), d["status"], d.get("last_error")] for d in devices
    ]
    shown = rows[:MAX_TABLE_ROWS]
    more = (
        f"... and {len(rows) - len(shown)} more: see the attachment.\n"
        if len(rows) > len(shown)
        else ""
    )
    title = f"Devices that did not succeed ({len(rows)}):"
    text = f"\n{title}\n{text_table(FAILURE_HEADERS, shown)}\n{more}" if rows else ""
    return {"title": title, "headers": FAILURE_HEADERS, "rows": shown, "more": more, "text": text}


def _message(
    event_id: str,
    subject: str,
    to: Sequence[str],
    sender: str,
    text: str,
    html_template: str,
    html_values: Mapping[str, Any],
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
    page = render(html_template, {**html_values, "title": subject, "event_id": event_id})
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
        "created_at": when(data.get("created_at")),
        "started_at": when(data.get("started_at")),
        "finished_at": when(data.get("finished_at")),
        "duration": duration_text(data.get("duration_seconds")),
        "devices": data.get("devices", 0),
    }


def _shown(values: Mapping[str, Any]) -> dict[str, str]:
    """The HTML part's facts: "-" for nothing (the template escapes them)."""
    return {k: cell(v) for k, v in values.items()}


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
    counts = sorted((data.get("counts") or {}).items())
    failed_devices: list[Mapping[str, Any]] = []

    def rows() -> Iterable[list[Any]]:
        for d in devices:
            if failed(d):
                failed_devices.append(d)
            yield result_row(d)

    results_csv = to_csv(RESULT_COLUMNS, rows())
    failures = _failures(failed_devices)
    csv_name = f"bulk-change-{data['bulk_change_id']}-results.csv"
    values = {**facts, "csv_name": csv_name, "event_id": event_id}
    text = render(
        "completion.txt",
        {
            **values,
            "counts_text": text_table(("status", "devices"), counts),
            "failures_text": failures["text"],
        },
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
        "completion.html",
        {**_shown(values), "counts": counts, "failures": failures},
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
    failed_devices = [d for d in devices if failed(d)]
    by_status = Counter(d["status"] for d in failed_devices)
    failed_counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    reasons = Counter(
        (d["status"], d.get("last_error") or "-") for d in failed_devices
    ).most_common()
    reason_rows = [[status, reason, count] for (status, reason), count in reasons]
    failures = _failures(failed_devices)
    values = {
        **facts,
        "failed": len(failed_devices),
        "failed_counts": failed_counts or "none",
        "event_id": event_id,
    }
    text = render(
        "errors.txt",
        {
            **values,
            "reasons_text": text_table(("status", "reason", "devices"), reason_rows),
            "failures_text": failures["text"],
        },
    )
    subject = (
        f"Bulk change {facts['bulk_change_id']}: {len(failed_devices)} device(s) failed "
        f"({failed_counts}), {facts['change_type']} on {facts['integration']} ({facts['tenant']})"
    )
    html_values = {**_shown(values), "reasons": reason_rows, "failures": failures}
    return _message(event_id, subject, to, sender, text, "errors.html", html_values, sent_at)


USERNAME_HEADERS = (
    "device",
    "MSISDN",
    "previous username",
    "new username",
    "previous cost centers (1 / 2 / 3)",
    "new cost centers (1 / 2 / 3)",
    "date",
    "changed by",
)


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

    def centers(values: Mapping[str, Any]) -> str:
        return " / ".join(cell(values.get(f"cost_center_{i}")) for i in (1, 2, 3))

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
                        when(line.date),
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
    table = text_table(USERNAME_HEADERS, shown) + (f"\n{more}" if more else "") + "\n"
    text = render("username_report.txt", {**values, "table_text": table})
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
        "username_report.html",
        {**_shown(values), "headers": USERNAME_HEADERS, "shown": shown, "more": more},
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
        "failed_at": when(data.get("failed_at")),
        "error": data.get("error") or "-",
        "run_url": run_url(ui_base_url, data["run_id"]),
        "event_id": event_id,
    }
    text = render("run_failure.txt", values)
    subject = f"Run failed: {values['job_name']} {str(data['run_id'])[:8]}" + (
        f" (bulk change {data['bulk_change_id']})" if data.get("bulk_change_id") else ""
    )
    return _message(
        event_id, subject, to, sender, text, "run_failure.html", _shown(values), sent_at
    )
