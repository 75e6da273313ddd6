"""bulk_changes.interval_loops: the daemon's interval loops wait in one piece (at most five
seconds at a time) between two iterations, and a shutdown or a wake-up ends the wait."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bulk_changes import dagster_private, interval_loops
from bulk_changes.interval_loops import MAX_WAIT_SECONDS, calm_interval_daemons, calm_loop

START = dagster_private.SpanMarker.START_SPAN
END = dagster_private.SpanMarker.END_SPAN


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Daemon:
    interval_seconds = 12.0
    interval_jitter_seconds = 0.0
    startup_jitter_seconds = 0.0
    _logger = logging.getLogger("test")

    def __init__(self) -> None:
        self.iterations = 0

    def run_iteration(self, context: Any) -> Iterator[None]:
        self.iterations += 1
        yield None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(interval_loops.time, "monotonic", fake.monotonic)
    return fake


def test_between_two_iterations_the_loop_waits_in_pieces_of_at_most_five_seconds(
    clock: _Clock,
) -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.now += seconds
        return False

    daemon = _Daemon()
    loop = calm_loop(daemon, None, wait)
    assert [next(loop) for _ in range(3)] == [START, None, END]
    assert [next(loop) for _ in range(5)] == [None, None, None, None, START]
    assert waits == [MAX_WAIT_SECONDS, MAX_WAIT_SECONDS, 2.0]
    assert daemon.iterations == 1
    loop.close()


def test_a_wait_that_ends_early_ends_the_pause(clock: _Clock) -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return True  # the shutdown, or a run submitted

    loop = calm_loop(_Daemon(), None, wait)
    assert [next(loop) for _ in range(5)] == [START, None, END, None, START]
    assert waits == [MAX_WAIT_SECONDS]
    loop.close()


def test_an_iteration_that_fails_is_reported_and_the_loop_goes_on(clock: _Clock) -> None:
    class Failing(_Daemon):
        def run_iteration(self, context: Any) -> Iterator[None]:
            raise RuntimeError("storage unreachable")
            yield None

    loop = calm_loop(Failing(), None, lambda seconds: True)
    assert next(loop) is START
    error = next(loop)
    assert "storage unreachable" in error.message
    assert [next(loop), next(loop), next(loop)] == [END, None, START]
    loop.close()


def test_the_daemon_gives_every_interval_daemon_the_calm_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval_daemon = dagster_private.IntervalDaemon
    monkeypatch.setattr(interval_daemon, "core_loop", interval_daemon.core_loop)
    calm_interval_daemons()
    assert interval_daemon.core_loop is interval_loops.calm_core_loop
