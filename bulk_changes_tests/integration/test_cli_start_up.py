"""What the commands import: the reading commands, ``submit`` and ``devices import`` leave
dagster out (a second of start-up), ``send`` leaves boto3 and SQLAlchemy out, a CSV export
pandas; run as a user runs them, in a new process against the real local queue and SQLite. (Their times are measured by
``bench.cli_speed``, never asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_changes.resources.local_sqs import LocalSqsServer
from bulk_changes_tests.cli_helpers import Cli, submit_args, unique_queue, write_inventory
from bulk_changes_tests.helpers import iccid

# Runs the command in this process's place and says which of these it imported.
PROBE = """
import json, sys
from bulk_changes.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": [m for m in ("dagster", "boto3", "pandas", "sqlalchemy")
                                             if m in sys.modules]}))
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = LocalSqsServer(port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def cli(tmp_path: Path, endpoint: str) -> Cli:
    cli = Cli.in_folder(tmp_path, BULK_CHANGES_SQS_ENDPOINT=endpoint, **unique_queue())
    assert cli.run("devices", "import", str(write_inventory(tmp_path / "inv.csv", 3)),
                   "--tenant", "acme").returncode == 0  # fmt: skip
    request = tmp_path / "request.csv"
    request.write_text(f"iccid,username\n{iccid(0)},ann\n{iccid(1)},bob\n")
    assert cli.run(*submit_args(request)).returncode == 0
    return cli


def imported(cli: Cli, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["code"] in (0, 3), done.stderr  # 3: `wait` timed out (the run is not ours)
    return found["imported"]


@pytest.mark.parametrize(
    "args",
    [["list"], ["list", "--json"], ["status", "1", "--json"], ["wait", "1", "--timeout", "0"]],
)
def test_the_reading_commands_import_neither_dagster_nor_pandas_nor_boto3(cli, args):
    assert imported(cli, *args) == ["sqlalchemy"]


def test_send_imports_botocore_but_not_boto3_nor_dagster_nor_sqlalchemy(cli):
    assert imported(cli, "send", "1") == []


def test_a_csv_export_imports_neither_pandas_nor_dagster(cli, tmp_path):
    found = imported(cli, "export", "1", "--output", str(tmp_path / "out.csv"))
    assert found == ["sqlalchemy"]


def test_submit_reads_the_tenants_without_importing_dagster(cli, tmp_path):
    request = tmp_path / "again.csv"
    request.write_text(f"iccid,username\n{iccid(2)},cid\n")
    assert imported(cli, *submit_args(request)) == ["pandas", "sqlalchemy"]


def test_devices_import_reads_the_tenants_without_importing_dagster(cli, tmp_path):
    path = write_inventory(tmp_path / "more.csv", 5)
    found = imported(cli, "devices", "import", str(path), "--tenant", "acme")
    assert found == ["pandas", "sqlalchemy"]
