"""A run worker's stdout and stderr written to the compute log files the Dagster UI
reads, without Dagster's mirror processes.

Dagster's local compute log manager writes a run's output to its files and mirrors each
stream back to the process's own output with ``tail -F`` and a Python watcher that kills
the tail if the run worker dies: four processes a run worker, started with it (two
interpreter starts, about 72 ms of CPU, in the burst when many runs start at once) and
woken every second for the run's life. A run worker's own output goes to the code
server's log, where the steps' output is not read (the UI shows the files, and so does
``bulk-changes status``). Here the files alone are written, at the paths Dagster uses,
with its mark that the capture is complete. Another compute log manager (S3, Azure, a
subclass) captures as its class does."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from bulk_changes.dagster_private import (
    IO_TYPE_EXTENSION,
    CapturedLogContext,
    ComputeIOType,
    LocalComputeLogManager,
)


@contextmanager
def capture_logs(manager: Any, log_key: Sequence[str]) -> Iterator[Any]:
    """``manager.capture_logs(log_key)``; for Dagster's local manager itself, the files
    only."""
    if type(manager) is not LocalComputeLogManager:
        with manager.capture_logs(log_key) as context:
            yield context
        return
    paths = [
        (stream, manager.get_captured_local_path(log_key, IO_TYPE_EXTENSION[io_type]))
        for stream, io_type in (
            (sys.stdout, ComputeIOType.STDOUT),
            (sys.stderr, ComputeIOType.STDERR),
        )
    ]
    with ExitStack() as stack:
        for stream, path in paths:
            stack.enter_context(_written_to(stream, path))
        yield CapturedLogContext(log_key)
    complete = Path(manager.complete_artifact_path(log_key))
    complete.parent.mkdir(parents=True, exist_ok=True)
    complete.touch()


@contextmanager
def _written_to(stream: IO[str], path: str) -> Iterator[None]:
    """The stream's file descriptor points at ``path`` (appended to), so that what any
    thread or library writes to it, Python or not, lands there; put back after."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test runner: nothing to redirect
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream.flush()
    saved = os.dup(fd)
    try:
        with open(path, "a", encoding="utf-8") as target:
            os.dup2(target.fileno(), fd)
            try:
                yield
            finally:
                stream.flush()
                os.dup2(saved, fd)
    finally:
        os.close(saved)
