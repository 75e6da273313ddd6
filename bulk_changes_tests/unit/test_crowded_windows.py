"""The simulators' account of a rate violation's shape: which call came less than a window
after the call a limit's worth before it, with the gaps between them."""

from __future__ import annotations

from bulk_changes.simulators.limits import Limits, crowded_windows

FIVE_A_SECOND = Limits(rate_limit=5, window=1.0, max_in_flight=1)


def test_calls_spaced_at_the_limit_crowd_no_window():
    starts = [i * 0.2 for i in range(20)]
    assert crowded_windows(starts, FIVE_A_SECOND) == []


def test_a_late_call_before_on_time_ones_shows_as_one_short_gap():
    starts = [0.0, 0.23, 0.4, 0.6, 0.8, 0.99, 1.25]  # the second late, then the sixth early
    (found,) = crowded_windows(starts, FIVE_A_SECOND)
    assert found["call"] == 5 and found["span_s"] == 0.99
    assert found["gaps_ms"] == [230.0, 170.0, 200.0, 200.0, 190.0]


def test_no_rate_limit_no_windows():
    assert (
        crowded_windows([0.0] * 10, Limits(rate_limit=None, window=1.0, max_in_flight=None)) == []
    )
