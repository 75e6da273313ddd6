"""The simulators count each call in the window around its arrival, whatever order the
calls reach the count in (several connections at once)."""

from __future__ import annotations

from bulk_changes.simulators.limits import AccountLimiter, Limits

FIVE_A_SECOND = Limits(rate_limit=5, window=1.0, max_in_flight=None)


def rate_violations(arrivals: list[float], limits: Limits = FIVE_A_SECOND) -> list[float]:
    """The arrivals (in the order they reach the count) that were counted as violations."""
    limiter = AccountLimiter()
    flagged = []
    for at in arrivals:
        admitted, violations = limiter.enter("acct", limits, enforce=False, arrived_at=at)
        limiter.leave("acct")
        if "rate" in violations:
            flagged.append(at)
    return flagged


def test_calls_at_the_limit_are_not_violations_in_any_order():
    on_time = [100.0 + i * 0.2 for i in range(12)]
    assert rate_violations(on_time) == []
    assert rate_violations(on_time[1::2] + on_time[::2]) == []


def test_one_start_too_many_in_a_window_is_a_violation():
    assert rate_violations([100.0, 100.2, 100.4, 100.6, 100.8, 100.99]) == [100.99]


def test_a_call_counted_late_is_still_counted_at_its_arrival():
    # it arrived first but reached the count last: the window it opens holds six starts
    assert rate_violations([100.2, 100.4, 100.6, 100.8, 100.99, 100.0]) == [100.0]


def test_a_call_counted_late_outside_every_crowded_window_is_no_violation():
    assert rate_violations([101.0, 101.2, 101.4, 101.6, 101.8, 100.0]) == []


def test_starts_a_window_apart_leave_the_count():
    assert (
        rate_violations([100.0 + i * 0.1 for i in range(5)] + [200.0 + i * 0.1 for i in range(5)])
        == []
    )
