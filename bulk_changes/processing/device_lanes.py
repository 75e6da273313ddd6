"""How many device threads of a run worker work at once: as many as keep its interpreter
busy, up to the pool's size (what the accounts' calls in flight could use).

Device threads wait on the network (a call's answer, a limiter turn, a page of Rev.io
services) or run Python, one at a time under the interpreter lock. A run worker starts
with the whole pool at work, as a fixed pool of that size would: at the carriers' limits
it uses a few per cent of a core, and its threads wait on the vendors (at the start of a
run several of them wait for the first pages of the billing account's services while
another keeps the carrier busy; starting with two lanes, both could stand there and the
carrier's one-in-flight account sat idle 1-4 s, measured with 20 accounts at once). Once
the process uses most of a core, the interpreter is the bottleneck: one more thread adds
no call a second, only lock hand-offs and kernel thread switches (16 threads against 4 on
a local unconstrained server: a sixth more CPU per device), so half as many are let at
work, down to ``LEAST``; under half a core twice as many again.

Devices wait in one queue, oldest first (two batch steps at once: the next batch's
devices after the other's). A lane is a pool thread's loop over that queue: it takes the
next device as soon as it is done with one (no hand-off to another thread), and ends
when the queue is empty or more lanes run than the limit. A lane that finds the limit
raised starts the lanes it lacks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Sampled at most this often (process CPU against the wall clock over the interval).
SAMPLE_SECONDS = 0.2
# A core's share under which twice the lanes run, and over which half as many.
GROW_BELOW = 0.5
SHRINK_ABOVE = 0.8
# The fewest at work: one in a call while another prepares the next (a limiter turn handed
# on at one call in flight needs a second thread waiting for it).
LEAST = 2


class DeviceLanes:
    """Runs submitted device work on at most ``limit`` threads of ``pool`` at once;
    ``limit`` starts at ``most`` (the pool's size) and moves between ``least`` and ``most``
    with the process's CPU use, sampled as lanes finish devices: halved over
    ``SHRINK_ABOVE`` of a core, doubled under ``GROW_BELOW``."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        most: int,
        least: int = LEAST,
        *,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        sample_seconds: float = SAMPLE_SECONDS,
    ) -> None:
        self.pool = pool
        self.most = max(1, most)
        self.least = max(1, min(least, self.most))
        self.limit = self.most
        self.lanes = 0
        self._cpu, self._clock = cpu, clock
        self._sample_seconds = sample_seconds
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._since = (clock(), cpu())

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._queue.append((future, fn, args))
            start = self._lanes_lacking()
        self._start(start)
        return future

    def _lanes_lacking(self) -> int:
        """Lanes to start now (lock held), counted as running."""
        lacking = max(0, min(self.limit - self.lanes, len(self._queue)))
        self.lanes += lacking
        return lacking

    def _start(self, lanes: int) -> None:
        for _ in range(lanes):
            self.pool.submit(self._lane)

    def _lane(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self.lanes > self.limit:
                    self.lanes -= 1
                    return
                future, fn, args = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - the submitter's future holds it
                    future.set_exception(exc)
            with self._lock:
                self._adjust()
                start = self._lanes_lacking()
            self._start(start)

    def _adjust(self) -> None:
        """The limit from the CPU used since the last sample (lock held)."""
        now = self._clock()
        at, used = self._since
        if now - at < self._sample_seconds:
            return
        cpu = self._cpu()
        share = (cpu - used) / (now - at)
        self._since = (now, cpu)
        if share < GROW_BELOW:
            self.limit = min(self.most, 2 * self.limit)
        elif share > SHRINK_ABOVE:
            self.limit = max(self.least, self.limit // 2)
