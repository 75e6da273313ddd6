"""The daemon's interval loops, waking once between two iterations instead of twice a second.

Dagster's ``IntervalDaemon`` (run monitoring, run retries' event log consumer, the run
queue) runs an iteration every ``interval_seconds`` and, in between, wakes every half
second to see whether it is time: for run monitoring (every 30 s) and run retries (every
15 s), most of their idle CPU (py-spy, docs/benchmarks.md). ``calm_loop`` is the same loop
waiting in one piece, at most ``MAX_WAIT_SECONDS`` at a time: after each piece it hands
back to Dagster's daemon loop, which writes the daemon's heartbeat (every 30 s) and stops
it when the daemon shuts down. A shutdown ends the wait at once.

``calm_interval_daemons()`` (run by ``python -m bulk_changes.daemon``) gives every
interval daemon this loop; ``bulk_changes.run_queue`` uses it with a wait that a run's
submission ends.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bulk_changes.dagster_private import (
    IntervalDaemon,
    SpanMarker,
    serializable_error_info_from_exc_info,
)

# Longest single wait: the daemon's loop writes its heartbeat only between two waits.
MAX_WAIT_SECONDS = 5.0


def calm_loop(
    daemon: Any, workspace_process_context: Any, wait: Callable[[float], bool]
) -> Iterator[Any]:
    """``daemon.run_iteration`` every ``daemon.interval_seconds`` (Dagster's jitter kept);
    in between, ``wait(seconds)`` in pieces of at most ``MAX_WAIT_SECONDS``. A wait that
    returns True ends the pause: the next iteration follows (after one hand-back)."""
    if daemon.startup_jitter_seconds:
        time.sleep(random.uniform(0, daemon.startup_jitter_seconds))
    while True:
        interval = daemon.interval_seconds + random.uniform(0, daemon.interval_jitter_seconds)
        start = time.monotonic()
        yield SpanMarker.START_SPAN
        try:
            yield from daemon.run_iteration(workspace_process_context)
        except Exception:
            error_info = serializable_error_info_from_exc_info(sys.exc_info())
            daemon._logger.error("Caught error:\n%s", error_info)
            yield error_info
        yield SpanMarker.END_SPAN
        while (left := interval - (time.monotonic() - start)) > 0:
            if wait(min(left, MAX_WAIT_SECONDS)):
                break
            yield None
        yield None


def calm_core_loop(self: Any, workspace_process_context: Any, shutdown_event: Any) -> Iterator[Any]:
    """``IntervalDaemon.core_loop``, waiting on the daemon's shutdown between iterations."""
    yield from calm_loop(self, workspace_process_context, shutdown_event.wait)


def calm_interval_daemons() -> None:
    """Give Dagster's interval daemons ``calm_core_loop``."""
    IntervalDaemon.core_loop = calm_core_loop
