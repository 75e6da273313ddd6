"""The outbox on SQLite and PostgreSQL: events commit or roll back with their state
change, each device reported once, one sender per delivery when two race for it."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from bulk_changes.db import outbox_events as outbox_module
from bulk_changes.db import schema as t
from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository
from bulk_changes.domain import notifications as n
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes_tests.conftest import inventory, submit


@pytest.fixture
def repo(any_engine):
    return Repository(any_engine)


def started_bulk_change(repo, settings, count):
    rows = inventory(count, "jasper")
    repo.upsert_devices("acme", rows)
    result = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
    )
    repo.start_processing(result.id, "run-1", False)
    return result.id, repo.device_changes_of(result.id)


def finish_all(repo, bulk_id, changes):
    for c in changes:
        repo.finish_device_change(
            bulk_change_id=bulk_id,
            device_change_id=c.id,
            status=DeviceStatus.PROCESSED,
            reason=None,
            step=None,
        )


def test_a_finalize_that_fails_leaves_neither_the_state_change_nor_its_events(
    repo, settings, monkeypatch
):
    bulk_id, changes = started_bulk_change(repo, settings, 2)
    finish_all(repo, bulk_id, changes)
    real = outbox_module.write_final

    def write_then_fail(conn, *args, **kwargs):
        real(conn, *args, **kwargs)
        raise RuntimeError("the database went away mid-transaction")

    monkeypatch.setattr(outbox_module, "write_final", write_then_fail)
    with pytest.raises(RuntimeError):
        repo.finalize(bulk_id)
    assert repo.get_bulk_change(bulk_id).status == "PROCESSING"
    assert [e.type for e in Outbox(repo.engine).events(bulk_id)] == [n.BULK_CHANGE_PROCESSING]
    monkeypatch.setattr(outbox_module, "write_final", real)
    assert repo.finalize(bulk_id)[2]
    kinds = Counter(e.type for e in Outbox(repo.engine).events(bulk_id))
    assert kinds == {
        n.BULK_CHANGE_PROCESSING: 1,
        n.DEVICE_CHANGES_COMPLETED: 1,
        n.BULK_CHANGE_COMPLETED: 1,
        n.EMAIL_COMPLETION: 1,
    }


def test_every_device_once_in_groups_of_at_most_100(repo, settings):
    bulk_id, changes = started_bulk_change(repo, settings, 230)
    finish_all(repo, bulk_id, changes[:150])
    assert repo.report_final_devices(bulk_id, [c.id for c in changes[:120]]) == 120
    assert repo.report_final_devices(bulk_id, [c.id for c in changes[:120]]) == 0
    finish_all(repo, bulk_id, changes[150:])
    repo.finalize(bulk_id)
    groups = [
        e.data["devices"]
        for e in Outbox(repo.engine).events(bulk_id)
        if e.type == n.DEVICE_CHANGES_COMPLETED
    ]
    assert [len(g) for g in groups] == [100, 20, 100, 10]
    assert Counter(d["device_change_id"] for g in groups for d in g) == Counter(
        c.id for c in changes
    )


def test_finalize_reads_only_unreported_devices_a_chunk_at_a_time(repo, settings, monkeypatch):
    monkeypatch.setattr(outbox_module, "REPORT_CHUNK", 100)
    bulk_id, changes = started_bulk_change(repo, settings, 230)
    finish_all(repo, bulk_id, changes)
    assert repo.report_final_devices(bulk_id, [c.id for c in changes[:30]]) == 30
    read: list[int] = []
    real = outbox_module.device_results

    def counting(conn, bulk_change_id, ids=None):
        rows = real(conn, bulk_change_id, ids)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(outbox_module, "device_results", counting)
    assert repo.finalize(bulk_id)[2]
    assert read == [100, 100]  # the 200 a batch did not report, never all 230 at once
    groups = [
        e.data["devices"]
        for e in Outbox(repo.engine).events(bulk_id)
        if e.type == n.DEVICE_CHANGES_COMPLETED
    ]
    assert [len(g) for g in groups] == [30, 100, 100]
    assert Counter(d["device_change_id"] for g in groups for d in g) == Counter(
        c.id for c in changes
    )


def test_device_results_come_in_row_order_a_page_at_a_time(repo, settings):
    bulk_id, changes = started_bulk_change(repo, settings, 7)
    # rows whose order differs from their ids' (and two equal row numbers)
    new_rows = dict(zip([c.id for c in changes], [5, 3, 9, 1, 3, 8, 2], strict=True))
    with repo.engine.begin() as conn:
        for change_id, row in new_rows.items():
            conn.execute(
                t.device_changes.update()
                .where(t.device_changes.c.id == change_id)
                .values(row_number=row)
            )
    pages = list(Outbox(repo.engine).device_result_pages(bulk_id, size=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    read = [(d["row_number"], d["id"]) for p in pages for d in p]
    assert read == sorted((row, change_id) for change_id, row in new_rows.items())


def test_two_senders_racing_for_a_delivery_one_gets_it(repo, settings):
    bulk_id, changes = started_bulk_change(repo, settings, 1)
    outbox = Outbox(repo.engine)
    event = outbox.unplanned()[0]
    assert outbox.plan(event, [(n.WEBHOOK, "https://a.example")])
    assert not outbox.plan(event, [(n.WEBHOOK, "https://a.example")])  # planned once
    (delivery,) = outbox.pending(bulk_id)
    wins: list[int | None] = []
    barrier = threading.Barrier(4)

    def take(holder):
        barrier.wait()
        wins.append(outbox.claim(delivery, holder, 60))

    threads = [threading.Thread(target=take, args=(f"sender-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([w for w in wins if w is not None]) == 1
    assert [a["outcome"] for a in outbox.attempts(delivery.id)] == ["sending"]
