"""Rev.io services read in pages of up to 500, not one GET per device.

A bulk change of N devices then costs about N/500 reads instead of N. What is read can go
stale while the run goes on, which is safe: every positional patch carries a JSON Patch
``test`` of the field's label, and a failed test makes the caller read that one service
again before patching.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

PAGE_SIZE = 500


class ServiceDirectory:
    def __init__(self, max_pages_per_miss: int = 4) -> None:
        self.max_pages_per_miss = max_pages_per_miss
        self._services: dict[int, dict[str, Any]] = {}
        self._next_page = 1
        self._exhausted = False
        self._lock = threading.Lock()
        self.pages_read = 0
        self.single_reads = 0

    def get(self, service_id: int, client: Any) -> dict[str, Any]:
        """The service, from a page already read, the next pages, or one GET.

        ``client`` is the caller's Rev.io client, so the reads are audited and limited
        like any other call of that op."""
        with self._lock:
            found = self._services.get(service_id)
            pages = 0
            while found is None and not self._exhausted and pages < self.max_pages_per_miss:
                self._read_page(client)
                pages += 1
                found = self._services.get(service_id)
        if found is not None:
            return found
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

    def _read_page(self, client: Any) -> None:
        records, more = client.list_services(self._next_page, PAGE_SIZE)
        self.pages_read += 1
        self._next_page += 1
        for record in records:
            if record.get("service_id") is not None:
                self._services.setdefault(int(record["service_id"]), record)
        if not more or not records:
            self._exhausted = True


_directories: dict[tuple[str, str], ServiceDirectory] = {}
_directories_lock = threading.Lock()


def directory_for(account_name: str, run_id: str | None) -> ServiceDirectory:
    """One directory per account and run in this process: each run reads afresh."""
    key = (account_name, run_id or "")
    with _directories_lock:
        directory = _directories.get(key)
        if directory is None:
            if len(_directories) > 64:  # runs of a long-lived process come and go
                _directories.clear()
            directory = ServiceDirectory()
            _directories[key] = directory
        return directory
