"""Rev.io services read in pages of up to 500, not one GET per device.

A bulk change of N devices then costs about N/500 reads instead of N. What is read can go
stale while the run goes on, which is safe: every positional patch carries a JSON Patch
``test`` of the field's label, and a failed test makes the caller read that one service
again before patching.

A billing account's pages can hold many more services than the run changes (a host
serving many tenants on one Rev.io account: 20 runs of 500 devices each read 10,000
services, about 1.9 KB each once parsed, 19 MB per run worker). Told the services its
run wants (``wanted``), a directory keeps only those from the pages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

PAGE_SIZE = 500


class ServiceDirectory:
    """The services of one Rev.io account as its pages are read.

    Threads that miss read different pages at once, each at most ``max_pages_per_miss``
    of them, and a page is read by one thread only; nobody holds the lock over a call. When
    one thread read the pages under the lock, every other device thread of the run waited
    for it: with the change's services on the 20th page of a large account, a run's 16
    device threads all stood behind one thread reading 20 pages one after the other (7 s
    at 0.35 s a page), and the carrier's one-in-flight account sat idle meanwhile."""

    # pages read at once; past the account's last page at most this less one come back
    # empty
    MAX_READING = 4

    def __init__(self, max_pages_per_miss: int = 4, wanted: Iterable[int] | None = None) -> None:
        self.max_pages_per_miss = max_pages_per_miss
        self._services: dict[int, dict[str, Any]] = {}
        # the services kept from the pages (None: all); one asked for joins them
        self._wanted: set[int] | None = None if wanted is None else {int(i) for i in wanted}
        self._next_page = 1
        # pages whose read failed: read again before any later one
        self._unread: list[int] = []
        self._exhausted = False
        self._reading = 0
        # the first page says whether there are more: until it is back, nobody reads ahead
        self._first_read = False
        self._lock = threading.Condition()
        self.pages_read = 0
        self.single_reads = 0

    def get(self, service_id: int, client: Any) -> dict[str, Any]:
        """The service, from a page already read, the next pages, or one GET.

        ``client`` is the caller's Rev.io client, so the reads are audited and limited
        like any other call of that op."""
        pages = 0
        with self._lock:
            if self._wanted is not None:
                self._wanted.add(int(service_id))
            while True:
                found = self._services.get(service_id)
                if found is not None:
                    return found
                page = self._claim_page() if pages < self.max_pages_per_miss else None
                if page is not None:
                    pages += 1
                    self._read_page(page, client)
                    continue
                if self._reading == 0:
                    break
                # a page being read by another thread may hold it
                self._lock.wait()
        # Not in the pages read so far (a large account, or a service listed late):
        # read it alone rather than page through the whole account.
        service = client.get_service(service_id)
        with self._lock:
            self.single_reads += 1
            self._services[int(service_id)] = service
        return service

    def remember(self, service: dict[str, Any]) -> None:
        """The service as a patch answered it: later devices on it see the change."""
        if service.get("service_id") is not None:
            with self._lock:
                self._services[int(service["service_id"])] = service

    def forget(self, service_ids: Iterable[int]) -> None:
        with self._lock:
            for service_id in service_ids:
                self._services.pop(int(service_id), None)

    def _claim_page(self) -> int | None:
        """The next page for this thread to read (the lock held); None if none is to be
        read now."""
        if self._unread:
            return self._unread.pop(0)
        if self._exhausted or self._reading >= self.MAX_READING:
            return None
        if self._next_page > 1 and not self._first_read:
            return None
        page = self._next_page
        self._next_page += 1
        return page

    def _read_page(self, page: int, client: Any) -> None:
        """Read ``page`` without the lock (held on entry and on return)."""
        self._reading += 1
        self._lock.release()
        try:
            records, more = client.list_services(page, PAGE_SIZE)
        except BaseException:
            self._lock.acquire()
            self._reading -= 1
            self._unread.append(page)
            self._unread.sort()
            self._lock.notify_all()
            raise
        self._lock.acquire()
        self._reading -= 1
        self.pages_read += 1
        if page == 1:
            self._first_read = True
        wanted = self._wanted
        for record in records:
            if record.get("service_id") is not None:
                service_id = int(record["service_id"])
                if wanted is None or service_id in wanted:
                    self._services.setdefault(service_id, record)
        if not more or not records:
            self._exhausted = True
        self._lock.notify_all()


_directories: dict[tuple[str, str], ServiceDirectory] = {}
_directories_lock = threading.Lock()


def directory_for(
    account_name: str,
    run_id: str | None,
    wanted: Callable[[], Iterable[int]] | None = None,
) -> ServiceDirectory:
    """One directory per account and run in this process: each run reads afresh.
    ``wanted``: the services the run will ask for (called once, when the directory is
    made): only those are kept from the pages."""
    key = (account_name, run_id or "")
    with _directories_lock:
        directory = _directories.get(key)
        if directory is None:
            if len(_directories) > 64:  # runs of a long-lived process come and go
                _directories.clear()
            directory = ServiceDirectory(wanted=wanted() if wanted is not None else None)
            _directories[key] = directory
        return directory
