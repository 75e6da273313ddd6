"""The processing settings an operator sets through the environment (docs/configuration.md)."""

from __future__ import annotations

import pytest

from bulk_changes.environments import instance, processing_leaves


def test_device_threads_per_call_in_flight_and_at_most_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BULK_CHANGES_WORKERS_PER_SLOT", "2")
    monkeypatch.setenv("BULK_CHANGES_MAX_WORKERS", "8")

    processing = processing_leaves(instance)["processing"]

    assert (processing.workers_per_slot, processing.max_workers) == (2, 8)


def test_unset_variables_keep_the_resource_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULK_CHANGES_WORKERS_PER_SLOT", raising=False)
    monkeypatch.delenv("BULK_CHANGES_MAX_WORKERS", raising=False)

    processing = processing_leaves(instance)["processing"]

    assert (processing.workers_per_slot, processing.max_workers) == (3, 16)
