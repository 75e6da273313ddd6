"""The run worker's stop signal: set when an operator terminates the run (the Dagster UI's
"Terminate", ``bulk-changes cancel``), read by every device thread before each external
call, so no call leaves once the run is stopping, and none is left half-recorded.

One per process: a run worker runs one run. Dagster's interrupt reaches the run worker's
main thread only; the device threads learn of it here."""

from __future__ import annotations

import threading

RUN_STOPPING = threading.Event()

OPERATOR_STOP_REASON = "stopped by an operator"


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised in a device thread instead of making a call once the run is stopping."""


def requested() -> bool:
    return RUN_STOPPING.is_set()


def check() -> None:
    if RUN_STOPPING.is_set():
        raise Stopped("the run is being stopped: call not sent")


def pause(seconds: float) -> None:
    """Sleep, but wake at once when the run is being stopped."""
    RUN_STOPPING.wait(seconds)
