"""When an account's next call may start (domain.pacing)."""

from __future__ import annotations

from collections import deque

import pytest

from bulk_changes.domain.pacing import next_start, ring_size, ring_span
from bulk_changes.domain.settings import RateLimit

FIVE_A_SECOND = RateLimit(calls_per_second=5, max_in_flight=1)
FIVE_HUNDRED_A_MINUTE = RateLimit(500 / 60, 4, window_seconds=60)


def test_the_ring_holds_one_window_of_calls_when_the_window_is_a_second():
    assert ring_size(FIVE_A_SECOND) == 5
    assert ring_size(RateLimit(25, 1)) == 25


def test_the_ring_of_a_minute_budget_holds_one_second_of_calls_so_no_minute_is_spent_at_once():
    assert ring_size(FIVE_HUNDRED_A_MINUTE) == 8


def test_a_budget_under_one_call_a_window_keeps_a_ring_of_one():
    assert ring_size(RateLimit(0.5, 1)) == 1
    assert ring_span(RateLimit(0.5, 1), 0.0) == pytest.approx(2.0)


def test_the_jitter_margin_is_added_once_per_vendor_window():
    # five a second: the ring is the window, 20 ms more
    assert ring_span(FIVE_A_SECOND, 0.02) == pytest.approx(1.02)
    # 500 a minute: rings of 8 calls; 20 ms over the 500 calls of a minute
    assert ring_span(FIVE_HUNDRED_A_MINUTE, 0.02) == pytest.approx(8 * (0.12 + 0.02 / 500))


def test_a_call_never_starts_in_the_past_nor_inside_a_penalty():
    assert next_start(now=10.0, not_before=0.0, oldest_in_ring=0.0, span=1.0) == 10.0
    assert next_start(now=10.0, not_before=12.0, oldest_in_ring=0.0, span=1.0) == 12.0
    assert next_start(now=10.0, not_before=0.0, oldest_in_ring=9.5, span=1.0) == 10.5


def _one_in_flight(latencies: list[float], limit: RateLimit, *, fixed: bool = False) -> list[float]:
    """Start times of calls made one after another, each as soon as pacing allows; with
    ``fixed``, each a fixed interval after the one before instead."""
    size = 1 if fixed else ring_size(limit)
    span = limit.interval if fixed else ring_span(limit, 0.0)
    ring: deque[float] = deque([float("-inf")] * size, maxlen=size)
    now, starts = 0.0, []
    for latency in latencies:
        start = next_start(now=now, not_before=0.0, oldest_in_ring=ring[0], span=span)
        ring.append(start)
        starts.append(start)
        now = start + latency
    return starts


def _most_in_any_window(starts: list[float], window: float) -> int:
    return max(sum(1 for s in starts if first <= s < first + window) for first in starts)


def test_the_quick_answers_after_a_slow_one_make_up_most_of_its_time():
    quick = [0.15] * 100
    every_tenth_slow = [0.45 if n % 10 == 5 else 0.15 for n in range(100)]

    def lost(fixed: bool) -> float:
        return (
            _one_in_flight(every_tenth_slow, FIVE_A_SECOND, fixed=fixed)[-1]
            - _one_in_flight(quick, FIVE_A_SECOND, fixed=fixed)[-1]
        )

    # a fixed interval loses each slow answer's whole overrun: 10 x 0.25 s
    assert lost(fixed=True) == pytest.approx(2.5)
    assert lost(fixed=False) < 1.0


def test_no_window_ever_holds_more_than_the_budget():
    import random

    rng = random.Random(7)
    latencies = [rng.uniform(0.0, 0.4) for _ in range(300)]
    starts = _one_in_flight(latencies, FIVE_A_SECOND)
    assert _most_in_any_window(starts, 1.0) <= 5
