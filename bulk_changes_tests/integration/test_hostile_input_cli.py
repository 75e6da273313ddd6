"""Hostile input through ``bulk-changes`` run as a subprocess, on SQLite and PostgreSQL where
the database matters: refused at intake with row, field and reason; never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.intake import inventory_rows
from bulk_changes_tests.helpers import iccid


class Cli:
    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.env = {**os.environ, "BULK_CHANGES_DB_URL": db_url, "BULK_CHANGES_ENV": "local"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "bulk_changes.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return str(path)

    def submit(self, path: str, *extra: str, kind: str = "username_cost_center"):
        return self(
            "submit", path, "--tenant", "acme", "--type", kind, "--integration", "jasper",
            "--no-send", "--json", *extra,
        )  # fmt: skip


def message(done: subprocess.CompletedProcess[str]) -> str:
    """The error without the line naming the home and database every error ends with."""
    return done.stderr.split("\n  (home ", 1)[0].strip()


def seed(db_url: str, tenant: str = "acme", count: int = 3) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    rows = [{"integration": "jasper", "iccid": iccid(i)} for i in range(count)]
    Repository(engine).upsert_devices(tenant, inventory_rows(rows, "seed"))
    engine.dispose()


@pytest.fixture
def cli(any_db_url, tmp_path) -> Cli:
    seed(any_db_url)
    return Cli(any_db_url, tmp_path)


@pytest.fixture
def sqlite_cli(tmp_path) -> Cli:
    url = f"sqlite:///{tmp_path / 'amop.sqlite'}"
    seed(url)
    return Cli(url, tmp_path)


def test_nul_in_a_username_is_refused_at_intake_naming_row_field_and_reason(cli):
    path = cli.file("changes.csv", f"iccid,username\n{iccid(0)},ann\x00x\n{iccid(1)},bob\n")
    done = cli.submit(path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["accepted"] == 1
    assert result["rejected"] == [
        {
            "row": 1,
            "line": 2,
            "field": "username",
            "reason": "control character U+0000 at position 4; remove it",
        }
    ]


def test_a_username_over_the_limit_is_refused_at_intake(cli):
    path = cli.file("changes.csv", f"iccid,username\n{iccid(0)},{'u' * 256}\n{iccid(1)},bob\n")
    [rejected] = json.loads(cli.submit(path).stdout)["rejected"]
    assert (rejected["field"], rejected["reason"]) == (
        "username",
        "at most 255 characters, got 256",
    )


def test_superscript_digits_in_an_iccid_are_a_row_error_not_a_crash(sqlite_cli):
    path = sqlite_cli.file(
        "changes.csv", f"iccid,username\n⁸⁹⁰¹⁴¹⁰³²¹¹¹¹⁸⁵¹⁰⁷²⁰,ann\n{iccid(1)},bob\n"
    )
    done = sqlite_cli.submit(path)
    assert done.returncode == 0, done.stderr
    [rejected] = json.loads(done.stdout)["rejected"]
    assert rejected["field"] == "iccid" and "ASCII digits 0-9 only" in rejected["reason"]


def test_a_json_object_as_a_username_is_refused_by_its_kind(sqlite_cli):
    devices = [{"iccid": iccid(0), "username": {"a": 1}}, {"iccid": iccid(1), "username": "b"}]
    path = sqlite_cli.file("changes.json", json.dumps(devices))
    [rejected] = json.loads(sqlite_cli.submit(path).stdout)["rejected"]
    assert rejected == {
        "row": 1,
        "field": "username",
        "reason": "must be text or a number, got an object",
    }


def test_a_json_file_nested_100000_deep_is_refused_naming_the_file(sqlite_cli):
    path = sqlite_cli.file("deep.json", "[" * 100_000 + "]" * 100_000)
    done = sqlite_cli.submit(path)
    assert done.returncode == 2
    assert message(done) == "bulk-changes: deep.json: not readable: JSON nested too deeply"


def test_bytes_that_are_not_text_are_refused_naming_the_file(sqlite_cli):
    path = sqlite_cli.file("changes.csv", b"iccid,username\n\x89PNG\r\n\x1a\n\x00\xff")
    done = sqlite_cli.submit(path)
    assert done.returncode == 2
    assert done.stderr.startswith("bulk-changes: changes.csv: not UTF-8 text")


def test_after_a_quoted_newline_the_error_names_the_file_line(sqlite_cli):
    text = f'iccid,username\n{iccid(0)},"two\nlines"\n{iccid(1)},bob,extra\n'
    done = sqlite_cli.submit(sqlite_cli.file("changes.csv", text))
    assert done.returncode == 2
    assert "changes.csv: line 4 has 3 fields, the header has 2" in done.stderr


def test_an_unknown_tenant_error_lists_no_tenants(sqlite_cli):
    path = sqlite_cli.file("changes.csv", f"iccid,username\n{iccid(0)},ann\n")
    done = sqlite_cli("submit", path, "--tenant", "initech", "--type", "username_cost_center",
                      "--integration", "jasper", "--no-send")  # fmt: skip
    assert done.returncode == 2
    assert message(done) == "bulk-changes: unknown tenant 'initech'"


def test_the_same_key_with_other_devices_exits_non_zero_naming_the_first(cli):
    first = cli.submit(
        cli.file("a.csv", f"iccid,username\n{iccid(0)},ann\n"), "--idempotency-key", "k1"
    )
    bulk_id = json.loads(first.stdout)["id"]
    again = cli.submit(
        cli.file("b.csv", f"iccid,username\n{iccid(0)},bob\n"), "--idempotency-key", "k1"
    )
    assert again.returncode == 2
    assert message(again) == (
        f"bulk-changes: idempotency key 'k1' was already used for bulk change {bulk_id} "
        "with a different request (other devices or values); send it with a new key"
    )


def test_the_same_key_with_another_change_type_is_refused(sqlite_cli):
    path = sqlite_cli.file("a.csv", f"iccid,username\n{iccid(0)},ann\n")
    sqlite_cli.submit(path, "--idempotency-key", "k2")
    other = sqlite_cli.file("b.csv", f"iccid,status\n{iccid(0)},ACTIVATED\n")
    again = sqlite_cli.submit(other, "--idempotency-key", "k2", kind="device_status")
    assert again.returncode == 2
    assert "change_type device_status, not username_cost_center" in again.stderr


def test_the_same_key_with_the_same_devices_answers_the_first_as_a_repeat(cli):
    path = cli.file("a.csv", f"iccid,username\n{iccid(0)},ann\n{iccid(1)},bob\n")
    first = json.loads(cli.submit(path, "--idempotency-key", "k3").stdout)
    json_copy = cli.file("a.json", json.dumps([{"iccid": iccid(0), "username": "ann"},
                                               {"iccid": iccid(1), "username": " bob "}]))  # fmt: skip
    again = cli.submit(json_copy, "--idempotency-key", "k3")
    assert again.returncode == 0, again.stderr
    assert first["repeat"] is False
    assert json.loads(again.stdout) == {**first, "repeat": True}


def test_importing_a_device_another_tenant_holds_is_refused_without_naming_it(cli):
    path = cli.file("inventory.csv", f"iccid,integration\n{iccid(5)},jasper\n{iccid(1)},jasper\n")
    done = cli("devices", "import", path, "--tenant", "globex")
    assert done.returncode == 2
    assert message(done) == (
        "bulk-changes: inventory.csv: 1 invalid row(s):\n"
        f"  line 3: iccid: {iccid(1)} is held by another tenant on the same jasper account "
        "(a device belongs to one tenant)"
    )
    engine = make_engine(cli.db_url)
    assert Repository(engine).count_devices("globex") == 0  # nothing of the file imported
    engine.dispose()


def test_status_of_an_id_past_any_integer_column_is_not_found(sqlite_cli):
    done = sqlite_cli("status", "9" * 30)
    assert done.returncode == 1
    assert message(done).startswith(f"bulk-changes: no bulk change {'9' * 30} ")


def test_redelivering_a_delivery_id_past_any_integer_column_is_not_found(sqlite_cli):
    done = sqlite_cli("webhooks", "redeliver", "9" * 30)
    assert done.returncode == 1
    assert message(done) == f"no webhook delivery {'9' * 30}"


def test_the_same_key_under_another_tenant_is_refused_without_naming_it(cli):
    path = cli.file("a.csv", f"iccid,username\n{iccid(0)},ann\n")
    bulk_id = json.loads(cli.submit(path, "--idempotency-key", "k4").stdout)["id"]
    again = cli("submit", path, "--tenant", "globex", "--type", "username_cost_center",
                "--integration", "jasper", "--no-send", "--idempotency-key", "k4")  # fmt: skip
    assert again.returncode == 2
    assert message(again) == (
        f"bulk-changes: idempotency key 'k4' was already used for bulk change {bulk_id} "
        "with a different request (another tenant); send it with a new key"
    )


def test_a_csv_export_holds_formula_usernames_as_text(sqlite_cli, tmp_path):
    import csv

    formulas = ['=HYPERLINK("http://evil.example")', "+cmd|' /C calc'!A0", "@SUM(A1)"]
    rows = "".join(
        f'{iccid(i)},"{u.replace(chr(34), chr(34) * 2)}"\n' for i, u in enumerate(formulas)
    )
    path = sqlite_cli.file("f.csv", "iccid,username\n" + rows)
    bulk_id = json.loads(sqlite_cli.submit(path).stdout)["id"]
    out = tmp_path / "export.csv"
    done = sqlite_cli("export", str(bulk_id), "--format", "csv", "--output", str(out))
    assert done.returncode == 0, done.stderr
    exported = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    cells = [c for row in exported for c in row.values() if c]
    assert {"'" + f for f in formulas} <= set(cells)
    assert not [c for c in cells if c[0] in "=+-@\t\r"]
