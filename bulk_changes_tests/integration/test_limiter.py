"""The shared account limiter across threads and processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.domain.settings import RateLimit

LIMIT = RateLimit(calls_per_second=20, max_in_flight=2)


def _worker(url: str, calls: int, queue) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limiter = DbLimiter(make_engine(url), safety=1.2)

    def one(_):
        with limiter.slot("acct", LIMIT):
            started = time.time()
            time.sleep(0.01)
            return started, time.time()

    with ThreadPoolExecutor(3) as pool:
        for span in pool.map(one, range(calls)):
            queue.put(span)


def run_processes(url: str, processes: int, calls: int) -> list[tuple[float, float]]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, calls, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    spans = [queue.get(timeout=120) for _ in range(processes * calls)]
    for p in procs:
        p.join(30)
    return spans


def most_in_any_second(starts: list[float]) -> int:
    starts = sorted(starts)
    best = 0
    j = 0
    for i, s in enumerate(starts):
        while starts[j] <= s - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = best = 0
    for _, delta in events:
        level += delta
        best = max(best, level)
    return best


def test_three_processes_share_one_budget(any_db_url, any_engine):
    spans = run_processes(any_db_url, processes=3, calls=20)
    assert len(spans) == 60
    assert most_in_any_second([s for s, _ in spans]) <= LIMIT.calls_per_second
    assert most_at_once(spans) <= LIMIT.max_in_flight


def _hold_forever(url: str, ready) -> None:
    limiter = DbLimiter(make_engine(url), lease_seconds=1.0)
    with limiter.slot("dead-acct", RateLimit(100, 1)):
        ready.set()
        time.sleep(3600)


def test_slot_of_a_killed_process_frees_when_its_lease_expires(any_db_url, any_engine):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(any_db_url, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    limiter = DbLimiter(any_engine, lease_seconds=1.0)
    waited = time.monotonic()
    with limiter.slot("dead-acct", RateLimit(100, 1)):
        waited = time.monotonic() - waited
    assert waited < 30  # taken over after the lease, not blocked for good


def test_penalty_delays_the_next_call(any_engine):
    limiter = DbLimiter(any_engine)
    with limiter.slot("p-acct", RateLimit(100, 1)):
        pass
    limiter.penalize("p-acct", 0.5)
    started = time.monotonic()
    with limiter.slot("p-acct", RateLimit(100, 1)):
        pass
    assert time.monotonic() - started >= 0.4
