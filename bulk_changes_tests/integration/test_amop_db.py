"""The AMOP database on SQLite and PostgreSQL: schema upgrades, idempotency, exactly-once moves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from bulk_changes.db import schema as t
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import LATEST, UPGRADES, upgrade
from bulk_changes.domain.model import AuditEntry, NewDeviceChange, StepSuccess
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes.intake import inventory_rows
from bulk_changes_tests.helpers import iccid


def make_bulk(repo, key=None, devices=3):
    rows = inventory_rows(
        [
            {"integration": "jasper", "iccid": iccid(i), "status": "ACTIVATED"}
            for i in range(devices)
        ],
        "t",
    )
    repo.upsert_devices("acme", rows)
    found = repo.devices_by_key("acme", "jasper", [r["iccid"] for r in rows])
    return repo.create_bulk_change(
        tenant_id="acme",
        change_type="device_status",
        integration="jasper",
        notify=[],
        idempotency_key=key,
        requested_by="t",
        source="test",
        changes=[
            NewDeviceChange(
                row_number=i + 1, device_key=k, device_id=d["id"], request={"status": "DEACTIVATED"}
            )
            for i, (k, d) in enumerate(sorted(found.items()))
        ],
    )


def test_upgrade_twice_is_harmless_and_records_the_version(any_engine):
    assert upgrade(any_engine) == LATEST
    with any_engine.connect() as conn:
        versions = [r.version for r in conn.execute(select(t.schema_version))]
    assert versions == [number for number, _ in UPGRADES]
    assert versions[-1] == LATEST


def test_reimport_updates_and_never_duplicates(any_engine):
    repo = Repository(any_engine)
    rows = inventory_rows(
        [{"integration": "jasper", "iccid": iccid(1), "status": "ACTIVATED"}], "t"
    )
    assert repo.upsert_devices("acme", rows) == (1, 0)
    rows[0]["status"] = "DEACTIVATED"
    assert repo.upsert_devices("acme", rows) == (0, 1)
    assert repo.count_devices("acme") == 1
    assert repo.devices_by_key("acme", "jasper", [iccid(1)])[iccid(1)]["status"] == "DEACTIVATED"


def test_same_idempotency_key_returns_the_same_bulk_change(any_engine):
    repo = Repository(any_engine)
    first, created = make_bulk(repo, key="k-1")
    again, created_again = make_bulk(repo, key="k-1")
    assert (again, created, created_again) == (first, True, False)


def test_concurrent_finalize_makes_the_bulk_change_final_exactly_once(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo)
    repo.start_processing(bulk_id, "run", False)
    for change in repo.device_changes_of(bulk_id):
        repo.finish_device_change(
            bulk_change_id=bulk_id,
            device_change_id=change.id,
            status=DeviceStatus.PROCESSED,
            reason=None,
            step=None,
        )
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: repo.finalize(bulk_id), range(8)))
    assert sum(changed for _, _, changed in results) == 1
    assert repo.get_bulk_change(bulk_id).status == "PROCESSED"


def test_a_final_device_change_never_moves_again(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    args = dict(bulk_change_id=bulk_id, device_change_id=change.id, reason=None, step=None)
    assert repo.finish_device_change(status=DeviceStatus.ERROR, **args)
    assert not repo.finish_device_change(status=DeviceStatus.PROCESSED, **args)
    assert repo.device_changes_of(bulk_id)[0].status == "ERROR"


def _end_after_the_call(repo, bulk_id, change, device_id=None):
    """The device change ends PROCESSED with the Jasper call that led to it."""
    audit = [AuditEntry(system="jasper", outcome="ok", description="Set status at Jasper")]
    return repo.finish_device_change(
        bulk_change_id=bulk_id,
        device_change_id=change.id,
        status=DeviceStatus.PROCESSED,
        reason=None,
        step="amop.update_device",
        inventory_update={"status": "DEACTIVATED"},
        device_id=change.device_id if device_id is None else device_id,
        after=StepSuccess("jasper.set_status", {"status": "DEACTIVATED"}, audit, attempts=1),
    )


def test_the_last_call_and_the_end_of_a_device_change_are_recorded_together(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    assert _end_after_the_call(repo, bulk_id, change)
    assert repo.completed_steps([change.id])[change.id] == {
        "jasper.set_status",
        "amop.update_device",
    }
    assert [a["system"] for a in repo.audit_of(bulk_id, change.id)] == ["jasper"]
    (ended,) = repo.device_changes_of(bulk_id)
    assert (ended.status, ended.attempts) == ("PROCESSED", 1)


def test_a_call_that_ends_on_a_final_device_change_is_still_recorded(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    assert repo.finish_device_change(
        bulk_change_id=bulk_id,
        device_change_id=change.id,
        status=DeviceStatus.CANCELLED,
        reason=None,
        step=None,
    )
    assert not _end_after_the_call(repo, bulk_id, change)
    assert repo.completed_steps([change.id])[change.id] == {"jasper.set_status"}
    (ended,) = repo.device_changes_of(bulk_id)
    assert (ended.status, ended.attempts) == ("CANCELLED", 1)


def _begin_after_the_call(repo, bulk_id, change):
    """The next step of the device change begins with the Jasper call just made."""
    audit = [AuditEntry(system="jasper", outcome="ok", description="Set username at Jasper")]
    return repo.begin_step(
        change.id,
        "revio.set_cost_centers",
        "run-1",
        after=StepSuccess("jasper.set_username", {"ok": True}, audit, attempts=1),
        bulk_change_id=bulk_id,
    )


def test_a_call_and_the_start_of_the_next_step_are_recorded_together(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    assert _begin_after_the_call(repo, bulk_id, change)
    assert repo.completed_steps([change.id])[change.id] == {"jasper.set_username"}
    assert repo.started_steps([change.id])[change.id] == {"revio.set_cost_centers"}
    assert [a["system"] for a in repo.audit_of(bulk_id, change.id)] == ["jasper"]
    (begun,) = repo.device_changes_of(bulk_id)
    assert (begun.status, begun.attempts) == ("PROCESSING", 1)


def test_a_call_before_a_stop_is_recorded_and_the_next_step_does_not_begin(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    args = dict(bulk_change_id=bulk_id, device_change_id=change.id, reason=None, step=None)
    assert repo.finish_device_change(status=DeviceStatus.CANCELLED, **args)
    assert not _begin_after_the_call(repo, bulk_id, change)
    assert repo.completed_steps([change.id])[change.id] == {"jasper.set_username"}
    assert repo.started_steps([change.id])[change.id] == set()
    (stopped,) = repo.device_changes_of(bulk_id)
    assert (stopped.status, stopped.attempts) == ("CANCELLED", 1)


def test_a_device_gone_from_the_inventory_rolls_back_the_call_record_too(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=1)
    (change,) = repo.device_changes_of(bulk_id)
    with pytest.raises(LookupError):
        _end_after_the_call(repo, bulk_id, change, device_id=-1)
    assert repo.completed_steps([change.id])[change.id] == set()
    assert repo.audit_of(bulk_id, change.id) == []
    assert repo.device_changes_of(bulk_id)[0].status == "NEW"


def test_bulk_not_final_while_devices_are_pending(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo)
    repo.start_processing(bulk_id, "run", False)
    status, counts, changed = repo.finalize(bulk_id)
    assert (status, changed) == ("PROCESSING", False) and counts == {"NEW": 3}


def test_sqlite_connections_keep_a_small_page_cache_each(tmp_path):
    from bulk_changes.db.engine import SQLITE_CACHE_KIB, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_revio_services_of_a_bulk_change_are_those_its_devices_hold(any_engine):
    repo = Repository(any_engine)
    bulk_id, _ = make_bulk(repo, devices=3)
    other_id, _ = make_bulk(repo, key="other", devices=1)
    devices = repo.devices_by_key("acme", "jasper", [iccid(i) for i in range(3)])
    with any_engine.begin() as conn:
        for i, service_id in ((0, 700), (1, 701)):  # the third device has none
            conn.execute(
                t.devices.update()
                .where(t.devices.c.id == devices[iccid(i)]["id"])
                .values(revio_service_id=service_id)
            )
    assert repo.revio_service_ids(bulk_id) == {700, 701}
    assert repo.revio_service_ids(other_id) == {700}  # its one device is the first
