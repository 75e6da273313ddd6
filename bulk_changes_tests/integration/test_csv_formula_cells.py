"""Usernames a spreadsheet would execute, through a real run of the job against the
simulators: the mailed CSV attachments hold them as text (a leading '), the HTML part
escaped."""

from __future__ import annotations

import csv
import io
from email import policy
from email.parser import BytesParser

import pytest
from dagster import DagsterInstance

from bulk_changes.demo import make_inventory
from bulk_changes.environments import local_resources
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.jobs import process_bulk_change
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes.simulators import seed_from_inventory_rows, start_simulators

USERNAMES = [
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "<b>bold</b> & co",
]


@pytest.fixture
def mails(tmp_path, monkeypatch):
    sims = start_simulators()
    try:
        monkeypatch.setenv("BULK_CHANGES_DB_URL", f"sqlite:///{tmp_path / 'amop.sqlite'}")
        monkeypatch.setenv("BULK_CHANGES_MAIL_DIR", str(tmp_path / "mail"))
        monkeypatch.setenv("BULK_CHANGES_JASPER_URL", sims.jasper_url)
        monkeypatch.setenv("BULK_CHANGES_TELEGENCE_URL", sims.telegence_url)
        monkeypatch.setenv("BULK_CHANGES_REVIO_URL", sims.revio_url)
        monkeypatch.setenv("BULK_CHANGES_BASE_DELAY", "0.01")
        resources = local_resources(resolve_now=True)
        resources.pop("queue")
        rows = [r for r in make_inventory(0, 12) if r["integration"] == "jasper"][: len(USERNAMES)]
        repo = resources["amop_db"].repository()  # type: ignore[attr-defined]
        repo.upsert_devices("acme", inventory_rows(rows, "test"))
        seed_from_inventory_rows(sims, rows)
        bulk_id = submit_bulk_change(
            repo,
            load_settings(),
            SubmitRequest(
                "acme",
                "username_cost_center",
                "jasper",
                [
                    {"iccid": r["iccid"], "username": u}
                    for r, u in zip(rows, USERNAMES, strict=True)
                ],
                requested_by="ops",
            ),
        ).id
        outcome = process_bulk_change.execute_in_process(
            run_config={"ops": {"load_device_changes": {"config": {"bulk_change_id": bulk_id}}}},
            resources=resources,
            instance=DagsterInstance.ephemeral(),
        )
        assert outcome.success
        assert repo.counts(bulk_id) == {"PROCESSED": len(USERNAMES)}
        yield [
            BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            for path in sorted((tmp_path / "mail").glob("*.eml"))
        ]
    finally:
        sims.stop()


def attachments(messages):
    for message in messages:
        for part in message.iter_attachments():
            content = part.get_content()
            text = content.decode() if isinstance(content, bytes) else content
            yield part.get_filename(), list(csv.DictReader(io.StringIO(text)))


def test_mailed_csv_attachments_hold_formula_usernames_as_text(mails):
    found = dict(attachments(mails))
    report = next(rows for name, rows in found.items() if name.endswith("username-report.csv"))
    assert sorted(r["new_username"] for r in report) == sorted(
        "'" + u if u[0] in "=+-@" else u for u in USERNAMES
    )
    cells = [c for rows in found.values() for r in rows for c in r.values() if c]
    assert not [c for c in cells if c[0] in "=+-@\t\r"]


def test_the_html_part_keeps_usernames_escaped(mails):
    report = next(m for m in mails if m["Subject"].startswith("Username report"))
    markup = report.get_body(("html",)).get_content()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in markup and "<b>bold</b>" not in markup
