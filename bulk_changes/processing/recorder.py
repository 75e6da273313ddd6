"""Collects the exchanges of the step running on this thread, for its audit rows."""

from __future__ import annotations

import threading

from bulk_changes.domain.audit import Exchange


class ExchangeRecorder:
    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, exchange: Exchange) -> None:
        self._pending().append(exchange)

    def take(self) -> list[Exchange]:
        pending = self._pending()
        self._local.items = []
        return pending

    def _pending(self) -> list[Exchange]:
        if not hasattr(self._local, "items"):
            self._local.items = []
        items: list[Exchange] = self._local.items
        return items
