"""No secret in what the Dagster UI shows of the job: the Launchpad's defaults come from
the job's snapshot (its config schema with the resources' values)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNAPSHOT = """
from dagster._core.snap import JobSnap
from dagster._serdes import serialize_value
from bulk_changes.definitions import defs
job = defs.resolve_job_def("process_bulk_change")
print(serialize_value(JobSnap.from_job_def(job)))
"""


def job_snapshot(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SNAPSHOT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("environment", ["local", "production"])
def test_the_database_password_is_not_in_the_jobs_snapshot(environment, tmp_path):
    password = "Pa55-not-for-the-ui"
    snapshot = job_snapshot(
        {
            "BULK_CHANGES_ENV": environment,
            "BULK_CHANGES_DB_URL": f"postgresql+psycopg2://amop:{password}@db.example/amop",
            "BULK_CHANGES_TENANTS": str(tmp_path / "tenants.yaml"),
            "AWS_REGION": "us-east-1",
        }
    )
    assert "process_bulk_change" in snapshot  # it is the job's snapshot
    assert password not in snapshot
