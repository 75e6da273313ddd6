"""What the limiter costs a call: one process, a few threads calling one account as a run
worker's device threads do (a call holding its slot for the vendor's latency, then a
little work of the device's own outside it); prints the limiter's transactions and the
process's CPU per call, and the utilization from the first call to the last.

    python -m bench.limiter_cost                       # every case, SQLite
    python -m bench.limiter_cost --cases jasper --url postgresql+psycopg://...

The process's CPU is the limiter's (the threads sleep for the call and for the device's
own work). It never fails on time: it measures.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import event

from bulk_changes.db.driver_transactions import listen
from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.db.schema import upgrade
from bulk_changes.domain.settings import RateLimit


@dataclass(frozen=True)
class Case:
    limit: RateLimit
    threads: int
    calls: int
    held: tuple[float, float]  # seconds a call holds its slot (uniform)
    between: float  # seconds of the device's own work between two calls of a thread


CASES = {
    # Jasper at the documented limits: 5 a second, one in flight, 150-200 ms a call; a
    # run worker's pool for a one-in-flight account is 3 threads
    "jasper": Case(RateLimit(calls_per_second=5, max_in_flight=1), 3, 150, (0.15, 0.2), 0.003),
    "revio": Case(RateLimit(calls_per_second=20, max_in_flight=8), 16, 300, (0.25, 0.35), 0.003),
    "telegence": Case(RateLimit(calls_per_second=10, max_in_flight=4), 16, 150, (0.2, 0.25), 0.003),
    "unconstrained": Case(
        RateLimit(calls_per_second=100000, max_in_flight=64), 2, 3000, (0.005, 0.01), 0.001
    ),
}


def run(url: str, name: str, case: Case) -> None:
    engine = make_engine(url)
    upgrade(engine)
    limiter = DbLimiter(engine)
    begins = [0]

    def count(_connection: object) -> None:
        begins[0] += 1

    event.listen(engine, "begin", count)
    # the transactions on the driver (db/driver_transactions.py) too
    listen(engine, lambda told: count(None) if told == "begin" else None)
    rng = random.Random(1)
    holds = [rng.uniform(*case.held) for _ in range(case.calls)]
    starts: list[float] = []
    lock = threading.Lock()
    account = f"{name}-{time.time()}"

    def one(held: float) -> None:
        with limiter.slot(account, case.limit) as departure:
            at = time.time()
            departure.departed(at)
            with lock:
                starts.append(at)
            time.sleep(held)
            departure.answered(time.time())
        time.sleep(case.between)

    with ThreadPoolExecutor(case.threads) as pool:
        # warm up (statements compiled, threads started, the account's rows made): not
        # counted
        list(pool.map(one, holds[: case.threads * 2]))
        starts.clear()
        begins[0] = 0
        cpu0 = time.process_time()
        list(pool.map(one, holds))
        cpu = time.process_time() - cpu0
    starts.sort()
    rate = case.limit.calls_per_second
    util = (len(starts) - 1) / (rate * (starts[-1] - starts[0])) if rate < 1000 else float("nan")
    print(
        f"{name}: {case.calls} calls, {case.threads} threads, {case.limit.max_in_flight} in"
        f" flight: {begins[0] / case.calls:.3f} limiter transactions a call, process CPU"
        f" {1000 * cpu / case.calls:.2f} ms a call, utilization first -> last {util:.3f}"
    )
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="", help="database (default: a new SQLite file)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated names")
    args = parser.parse_args(argv)
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/limiter.sqlite"
    for name in args.cases.split(","):
        run(url, name, CASES[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
