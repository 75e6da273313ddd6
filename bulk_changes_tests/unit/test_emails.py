"""The emails from their templates: both parts, the CSV attachments, the username report
from the audit rows, the run failure alert's link; HTML escaped."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from bulk_changes.notify import email_values, emails

SENT_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)

DATA = {
    "bulk_change_id": 12,
    "tenant": "acme",
    "change_type": "username_cost_center",
    "integration": "jasper",
    "requested_by": "jane",
    "status": "PROCESSED_WITH_ERRORS",
    "counts": {"PROCESSED": 2, "API_FAILED": 1, "ERROR": 1},
    "devices": 4,
    "created_at": "2024-05-01T12:00:00+00:00",
    "started_at": "2024-05-01T12:00:05+00:00",
    "finished_at": "2024-05-01T12:02:10+00:00",
    "duration_seconds": 125.0,
}


def device(i, status, reason=None, **extra):
    return {
        "id": 100 + i,
        "row_number": i,
        "device_key": f"8901000000000000{i:03d}",
        "device_id": 500 + i,
        "iccid": f"8901000000000000{i:03d}",
        "msisdn": f"1555000{i:04d}",
        "status": status,
        "attempts": 1,
        "last_error": reason,
        "finished_at": SENT_AT,
        "request": json.dumps({"username": f"user{i}", "cost_center_1": f"CC{i}"}),
        **extra,
    }


DEVICES = [
    device(1, "PROCESSED"),
    device(2, "API_FAILED", "jasper HTTP 503: <down> & out"),
    device(3, "ERROR", "unknown device"),
    device(4, "PROCESSED"),
]


def parts(message):
    text = message.get_body(("plain",)).get_content()
    markup = message.get_body(("html",)).get_content()
    attachments = {a.get_filename(): a.get_content() for a in message.iter_attachments()}
    return text, markup, attachments


def read_csv(content):
    if isinstance(content, bytes):
        content = content.decode("utf-8")
    return list(csv.DictReader(io.StringIO(content)))


def test_completion_email_has_facts_counts_failures_and_every_result_as_csv():
    message = emails.completion_email(
        "msg_abc", DATA, DEVICES, ["ops@acme.example"], "bc@x", SENT_AT
    )
    assert message["Subject"] == (
        "Bulk change 12 PROCESSED_WITH_ERRORS: username_cost_center on jasper (acme)"
    )
    assert message["To"] == "ops@acme.example"
    assert message["Message-ID"] == "<msg_abc@bulk-changes>"
    text, markup, attachments = parts(message)
    for fact in ("username_cost_center", "jasper", "jane", "2024-05-01 12:00:00 UTC", "2 min 05 s"):
        assert fact in text and fact in markup
    assert "API_FAILED  1" in text and "PROCESSED   2" in text
    assert "Devices that did not succeed (2)" in text
    assert "unknown device" in text and "jasper HTTP 503: <down> & out" in text
    # escaped in the HTML part
    assert "&lt;down&gt; &amp; out" in markup and "<down>" not in markup
    rows = read_csv(attachments["bulk-change-12-results.csv"])
    assert [r["status"] for r in rows] == ["PROCESSED", "API_FAILED", "ERROR", "PROCESSED"]
    assert rows[1]["reason"] == "jasper HTTP 503: <down> & out"
    assert rows[0]["msisdn"] == "15550000001"
    assert json.loads(rows[0]["request"]) == {"cost_center_1": "CC1", "username": "user1"}


def test_long_failure_tables_are_capped_with_everything_in_the_attachment():
    many = [device(i, "ERROR", f"reason {i}") for i in range(1, emails.MAX_TABLE_ROWS + 11)]
    text, _, attachments = parts(emails.completion_email("m", DATA, many, ["a@x"], "b@x", SENT_AT))
    assert "... and 10 more: see the attachment." in text
    assert len(read_csv(attachments["bulk-change-12-results.csv"])) == len(many)


def test_errors_email_is_one_mail_with_reasons_and_devices():
    message = emails.errors_email("msg_e", DATA, DEVICES, ["a@x"], "b@x", SENT_AT)
    assert message["Subject"].startswith(
        "Bulk change 12: 2 device(s) failed (1 API_FAILED, 1 ERROR)"
    )
    text, markup, attachments = parts(message)
    assert "unknown device" in text and "row" in text
    assert "1 API_FAILED, 1 ERROR" in markup
    assert attachments == {}


def test_username_report_from_the_audit_rows_of_the_amop_update():
    audit = [
        {
            "device_change_id": 101,
            "step": "amop.update_device",
            "outcome": "ok",
            "request": json.dumps({"username": "user1", "cost_center_1": "CC1"}),
            "response": json.dumps({"previous": {"username": "old1", "cost_center_1": None}}),
            "created_at": datetime(2024, 5, 1, 12, 1, tzinfo=UTC),
        },
        {
            "device_change_id": 104,
            "step": "amop.update_device",
            "outcome": "ok",
            "request": json.dumps({"cost_center_2": "NEW2"}),
            "response": json.dumps({"previous": {"cost_center_2": "OLD2"}}),
            "created_at": datetime(2024, 5, 1, 12, 2, tzinfo=UTC),
        },
    ]
    inventory = {
        501: {"username": "user1", "cost_center_1": "CC1", "cost_center_2": "K", "msisdn": "x"},
        504: {"username": "same", "cost_center_2": "NEW2"},
    }
    lines = email_values.username_lines(DEVICES, inventory, audit, "jane")
    assert [line.device for line in lines] == [DEVICES[0]["device_key"], DEVICES[3]["device_key"]]
    first, second = lines
    assert (first.previous["username"], first.new["username"]) == ("old1", "user1")
    assert (first.previous["cost_center_1"], first.new["cost_center_1"]) == (None, "CC1")
    assert first.previous["cost_center_2"] == first.new["cost_center_2"] == "K"  # untouched
    assert (second.previous["username"], second.new["username"]) == ("same", "same")
    assert (second.previous["cost_center_2"], second.new["cost_center_2"]) == ("OLD2", "NEW2")
    assert first.msisdn == "15550000001" and first.changed_by == "jane"

    message = emails.username_report_email("msg_u", DATA, lines, ["a@x"], "b@x", SENT_AT)
    text, markup, attachments = parts(message)
    assert message["Subject"] == "Username report: bulk change 12 (acme, jasper), 2 device(s)"
    for value in ("old1", "user1", "OLD2", "NEW2", "jane", "2024-05-01 12:01:00"):
        assert value in text and value in markup
    rows = read_csv(attachments["bulk-change-12-username-report.csv"])
    assert rows[0]["previous_username"] == "old1" and rows[0]["new_username"] == "user1"
    assert rows[1]["previous_cost_center_2"] == "OLD2" and rows[1]["new_cost_center_2"] == "NEW2"
    assert rows[0]["changed_by"] == "jane" and rows[0]["msisdn"] == "15550000001"


def test_run_failure_alert_links_to_the_run():
    data = {
        "run_id": "3f2a-run",
        "job_name": "process_bulk_change",
        "bulk_change_id": 12,
        "tenant": "acme",
        "failed_at": "2024-05-01T12:00:00+00:00",
        "error": "finalize_bulk_change: database is locked",
    }
    message = emails.run_failure_email(
        "msg_r", data, ["oncall@x"], "b@x", SENT_AT, "https://dagster.example/"
    )
    text, markup, _ = parts(message)
    assert "https://dagster.example/runs/3f2a-run" in text
    assert 'href="https://dagster.example/runs/3f2a-run"' in markup
    assert "database is locked" in text
    assert message["Subject"] == "Run failed: process_bulk_change 3f2a-run (bulk change 12)"


def test_durations_read_like_people_write_them():
    assert email_values.duration_text(None) == "-"
    assert email_values.duration_text(3.25) == "3.2 s"
    assert email_values.duration_text(125) == "2 min 05 s"
    assert email_values.duration_text(3 * 3600 + 62) == "3 h 01 min 02 s"


def test_subjects_survive_the_trip_through_bytes():
    import email
    import email.policy

    for data in (DATA, {**DATA, "change_type": "carrier_rate_plan", "status": "PROCESSED"}):
        message = emails.completion_email("m", data, DEVICES, ["a@x"], "b@x", SENT_AT)
        wire = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        back = email.message_from_bytes(wire, policy=email.policy.default)
        assert back["Subject"] == message["Subject"]


def test_mails_read_their_devices_once_so_they_can_be_streamed():
    text, _, attachments = parts(
        emails.completion_email("m", DATA, iter(DEVICES), ["a@x"], "b@x", SENT_AT)
    )
    assert "Devices that did not succeed (2)" in text
    assert len(read_csv(attachments["bulk-change-12-results.csv"])) == 4
    errors = emails.errors_email("m", DATA, iter(DEVICES), ["a@x"], "b@x", SENT_AT)
    assert errors["Subject"].startswith("Bulk change 12: 2 device(s) failed")


def test_a_username_with_markup_is_escaped_in_the_html_and_kept_in_the_text():
    line = email_values.UsernameLine(
        device="8901000000000000001",
        msisdn=None,
        previous={"username": "old"},
        new={"username": "<script>alert(1)</script>"},
        date=None,
        changed_by="<b>jane</b>",
    )
    message = emails.username_report_email("m", DATA, [line], ["a@x"], "b@x", SENT_AT)
    text, markup, _ = parts(message)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "<script>" not in markup and "<b>jane</b>" not in markup
    assert "<script>alert(1)</script>" in text
