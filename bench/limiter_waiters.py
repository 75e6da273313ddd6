"""What waiting for another process's slot costs: two limiters (two processes' worth)
share a one-in-flight, 5-a-second account on SQLite, each making ``--calls`` calls of
150 ms; prints the transactions and the CPU per call and the elapsed time.

    python -m bench.limiter_waiters --calls 20

It never fails on time: it measures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time

from sqlalchemy import event

from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import DbLimiter
from bulk_changes.db.schema import limiter_metadata, metadata
from bulk_changes.domain.settings import RateLimit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20, help="calls of each limiter")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds a call lasts")
    args = parser.parse_args(argv)
    engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/limiter.sqlite")
    metadata.create_all(engine)
    limiter_metadata.create_all(engine)
    begins = [0]

    def count(_connection: object) -> None:
        begins[0] += 1

    event.listen(engine, "begin", count)
    limit = RateLimit(calls_per_second=5.0, max_in_flight=1)

    def calls(limiter: DbLimiter) -> None:
        for _ in range(args.calls):
            with limiter.slot("shared", limit):
                time.sleep(args.latency)

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    threads = [threading.Thread(target=calls, args=(DbLimiter(engine),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    total = 2 * args.calls
    print(
        f"{total} calls in {time.time() - started:.1f} s: {begins[0] / total:.1f} transactions"
        f" and {cpu / total * 1000:.1f} ms CPU per call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
