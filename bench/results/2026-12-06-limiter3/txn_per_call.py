"""Limiter transactions and CPU per call: one process, threads calling one account."""

import itertools
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import event

from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.db.schema import upgrade
from bulk_changes.domain.settings import RateLimit


def run(url, name, limit, threads, calls, held):
    engine = make_engine(url)
    upgrade(engine)
    limiter = DbLimiter(engine)
    count = itertools.count()
    event.listen(engine, "begin", lambda conn: next(count))
    rng = random.Random(1)
    holds = [rng.uniform(*held) for _ in range(calls)]
    starts = []

    def one(h):
        with limiter.slot(name, limit):
            starts.append(time.time())
            time.sleep(h)

    cpu0 = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, holds))
    cpu = time.process_time() - cpu0
    n = next(count)
    starts.sort()
    util = (
        (len(starts) - 1) / (limit.calls_per_second * (starts[-1] - starts[0]))
        if limit.calls_per_second < 1000
        else float("nan")
    )
    print(
        f"{name}: {calls} calls, {threads} threads, {limit.max_in_flight} in flight: {n / calls:.3f} limiter transactions a call, "
        f"process CPU {1000 * cpu / calls:.2f} ms a call, utilization first->last {util:.3f}, hand-ons {limiter.handoffs}"
    )
    engine.dispose()


if __name__ == "__main__":
    url = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else ""
    run(
        url,
        f"revio-like{tag}",
        RateLimit(calls_per_second=20, max_in_flight=8),
        16,
        300,
        (0.25, 0.35),
    )
    run(
        url,
        f"telegence-like{tag}",
        RateLimit(calls_per_second=10, max_in_flight=4),
        16,
        150,
        (0.2, 0.25),
    )
    run(
        url,
        f"unconstrained{tag}",
        RateLimit(calls_per_second=100000, max_in_flight=64),
        16,
        3000,
        (0.005, 0.01),
    )
