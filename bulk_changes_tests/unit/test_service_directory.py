"""The Rev.io services of a run, read in pages by the device threads that need them."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bulk_changes.processing.service_directory import ServiceDirectory

PER_PAGE = 2


class PagedAccount:
    """A Rev.io account of ``pages`` pages of two services (ids 1, 2 on page 1, ...)."""

    def __init__(self, pages: int, *, barrier_pages: set[int] | None = None) -> None:
        self.pages = pages
        self.reads: Counter[int] = Counter()
        self.single_reads: list[int] = []
        self.failing_pages: set[int] = set()
        self._barrier_pages = barrier_pages or set()
        self._barrier = threading.Barrier(max(1, len(self._barrier_pages)), timeout=10)
        self._lock = threading.Lock()

    def list_services(self, page: int, page_size: int) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            self.reads[page] += 1
            failing = page in self.failing_pages
            self.failing_pages.discard(page)
        if failing:
            raise ConnectionError("the page read failed")
        if page in self._barrier_pages:
            # these pages' reads must be in flight together, or the barrier breaks
            self._barrier.wait()
        if page > self.pages:
            return [], False
        first = (page - 1) * PER_PAGE + 1
        records = [{"service_id": n} for n in range(first, first + PER_PAGE)]
        return records, page < self.pages

    def get_service(self, service_id: int) -> dict[str, Any]:
        with self._lock:
            self.single_reads.append(service_id)
        return {"service_id": service_id, "alone": True}


def test_threads_that_miss_read_different_pages_at_once():
    account = PagedAccount(4, barrier_pages={2, 3})
    directory = ServiceDirectory()
    directory.get(1, account)  # page 1: the account has more
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda sid: directory.get(sid, account), [3, 5]))
    assert [s["service_id"] for s in found] == [3, 5]


def test_each_page_is_read_once_however_many_threads_miss():
    account = PagedAccount(6)
    directory = ServiceDirectory(max_pages_per_miss=6)
    wanted = list(range(1, 13))
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda sid: directory.get(sid, account), wanted))
    assert [s["service_id"] for s in found] == wanted
    assert all(account.reads[page] == 1 for page in range(1, 7))
    assert account.single_reads == []


def test_a_service_past_the_pages_a_miss_may_read_is_read_alone():
    account = PagedAccount(10)
    directory = ServiceDirectory(max_pages_per_miss=2)
    service = directory.get(19, account)  # page 10
    assert service == {"service_id": 19, "alone": True}
    assert sum(account.reads.values()) == 2


def test_a_page_whose_read_failed_is_read_again_by_the_next_miss():
    account = PagedAccount(3)
    account.failing_pages.add(1)
    directory = ServiceDirectory()
    with pytest.raises(ConnectionError):
        directory.get(1, account)
    assert directory.get(1, account) == {"service_id": 1}
    assert account.reads[1] == 2


def test_a_directory_told_its_runs_services_keeps_only_those_from_the_pages():
    account = PagedAccount(3)
    directory = ServiceDirectory(wanted=[2, 5])
    assert directory.get(5, account) == {"service_id": 5}  # pages 1-3
    assert directory.get(2, account) == {"service_id": 2}
    assert sum(account.reads.values()) == 3 and account.single_reads == []
    # on page 1 too, but not kept from it
    assert directory.get(1, account) == {"service_id": 1, "alone": True}


def test_a_service_asked_for_beyond_the_runs_is_kept_from_the_pages_read_after():
    account = PagedAccount(3)
    directory = ServiceDirectory(wanted=[])
    assert directory.get(3, account) == {"service_id": 3}  # page 2
    assert directory.get(3, account) == {"service_id": 3}
    assert sum(account.reads.values()) == 2 and account.single_reads == []
