from __future__ import annotations

import os
import uuid

import pytest

from bulk_changes.db.engine import make_engine
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes_tests.fakes import FAKES, revio_service
from bulk_changes_tests.helpers import iccid, msisdn


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'amop.sqlite'}"


@pytest.fixture
def repo(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    yield Repository(engine)
    engine.dispose()


@pytest.fixture
def settings():
    return load_settings()


@pytest.fixture
def fake_key():
    key = uuid.uuid4().hex
    yield key
    FAKES.pop(key, None)


def inventory(n: int, integration: str, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = {
            "integration": integration,
            "iccid": iccid(i),
            "status": "ACTIVATED" if integration == "jasper" else "A",
            "rate_plan": "IOT_1GB" if integration == "jasper" else "SOC1GB",
            "revio_service_id": str(5000 + i),
        }
        if integration == "telegence":
            row["msisdn"] = msisdn(i)
        rows.append(row)
    return inventory_rows(rows, "test")


def seed_services(fake_systems_for_key, rows):
    for row in rows:
        number = row["iccid"] if row["integration"] == "jasper" else row["msisdn"]
        fake_systems_for_key["revio"].services[int(row["revio_service_id"])] = revio_service(
            int(row["revio_service_id"]), number
        )


def submit(repo, settings, change_type, integration, rows, tenant="acme", key=None):
    return submit_bulk_change(
        repo,
        settings,
        SubmitRequest(
            tenant=tenant,
            change_type=change_type,
            integration=integration,
            rows=rows,
            idempotency_key=key,
            requested_by="tester",
        ),
    )


def require_service(name: str, reachable: bool, how: str) -> None:
    """Skip when a service is missing, except in CI, where it must be there."""
    if reachable:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not reachable and CI is set: {how}")
    pytest.skip(f"{name} is not reachable: {how}")
