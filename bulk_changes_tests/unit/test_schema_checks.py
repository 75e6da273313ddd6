"""bulk_changes.schema_checks: Dagster's schedule storage asks once whether a table or an
index it needs exists, and asks again while it does not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from bulk_changes import dagster_private
from bulk_changes.schema_checks import CHECKS, NAMED_CHECK, remember_schema_checks, remember_yes


class _Storage:
    pass


def test_a_yes_is_remembered_by_the_storage() -> None:
    asked: list[str] = []

    def has_table(storage: Any) -> bool:
        asked.append("asked")
        return True

    check = remember_yes(has_table)
    storage = _Storage()
    assert check(storage) is True
    assert check(storage) is True
    assert asked == ["asked"]
    assert check(_Storage()) is True  # another storage asks for itself
    assert asked == ["asked", "asked"]


def test_a_no_is_asked_again() -> None:
    answers = [False, True, False]

    def has_table(storage: Any) -> bool:
        return answers.pop(0)

    check = remember_yes(has_table)
    storage = _Storage()
    assert check(storage) is False
    assert check(storage) is True  # a migration added it meanwhile
    assert check(storage) is True
    assert answers == [False]


def test_a_named_check_is_remembered_by_its_name() -> None:
    asked: list[str] = []

    def has_built_index(storage: Any, name: str) -> bool:
        asked.append(name)
        return name == "built"

    check = remember_yes(has_built_index)
    storage = _Storage()
    assert [check(storage, "built"), check(storage, "built")] == [True, True]
    assert [check(storage, "not_built"), check(storage, "not_built")] == [False, False]
    assert asked == ["built", "not_built", "not_built"]


@pytest.fixture
def patched_instance(monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    storage_class = dagster_private.SqlScheduleStorage
    for name in (*CHECKS, NAMED_CHECK):
        monkeypatch.setattr(storage_class, name, getattr(storage_class, name))
    remember_schema_checks()
    with instance_for_test() as instance:
        yield instance


def test_the_sensors_storage_opens_no_connection_for_a_check_it_has_answered(
    patched_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = patched_instance.schedule_storage
    assert storage is not None
    assert storage.has_instigators_table() is True
    connects: list[int] = []
    connect = storage.connect
    monkeypatch.setattr(storage, "connect", lambda: (connects.append(1), connect())[1])
    assert storage.has_instigators_table() is True
    assert connects == []
    # and the storage still works: the sensors' states are read through it
    assert list(patched_instance.all_instigator_state()) == []
