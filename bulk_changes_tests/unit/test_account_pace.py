"""How far apart one account's calls leave: learnt from round trips and throttled answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_changes.db.limiter import AccountPace


def pace() -> AccountPace:
    return AccountPace(
        initial_jitter=0.05, max_jitter=0.25, widen=0.05, narrow_calls=100, max_extra=0.5
    )


def test_before_enough_round_trips_the_initial_jitter_is_kept_free():
    p = pace()
    for _ in range(AccountPace.MIN_SAMPLES - 1):
        p.answered(0.1)
    assert p.jitter == 0.05


def test_the_arrival_jitter_is_the_spread_of_recent_round_trips():
    p = pace()
    for i in range(64):
        p.answered(0.150 + (i % 21) / 1000)  # 150 to 170 ms
    assert abs(p.jitter - 0.020) < 0.0015


def test_a_rare_slow_round_trip_does_not_widen_the_spacing():
    p = pace()
    for _ in range(63):
        p.answered(0.150)
    p.answered(2.0)
    assert p.jitter == 0.0


def test_the_arrival_jitter_kept_free_is_bounded():
    p = pace()
    for i in range(64):
        p.answered(0.1 if i % 2 else 3.0)
    assert p.jitter == 0.25


def test_a_throttled_answer_widens_the_spacing():
    p = pace()
    p.throttled()
    assert p.extra == 0.05


def test_the_spacing_narrows_back_slowly_while_no_throttle_comes():
    p = pace()
    p.throttled()
    for _ in range(50):
        p.answered(0.1)
    assert abs(p.extra - 0.025) < 1e-9
    for _ in range(60):
        p.answered(0.1)
    assert p.extra == 0.0


def test_before_enough_round_trips_no_fastest_round_trip_is_trusted():
    p = pace()
    for _ in range(AccountPace.MIN_FLOOR_SAMPLES - 1):
        p.answered(0.1)
    assert p.floor is None


def test_the_fastest_round_trip_is_the_least_of_the_recent_ones():
    p = pace()
    for i in range(AccountPace.MIN_FLOOR_SAMPLES):
        p.answered(0.150 + (i % 7) / 1000)
    assert p.floor == 0.150


def test_a_fast_round_trip_is_forgotten_once_it_is_no_longer_recent():
    """A vendor that got slower for good: the fastest round trip follows it."""
    p = pace()
    p.answered(0.1)
    for _ in range(AccountPace.FLOOR_SAMPLES - 1):
        p.answered(0.3)
    assert p.floor == 0.1
    p.answered(0.3)
    assert p.floor == 0.3


def test_a_faster_round_trip_lowers_the_fastest_at_once():
    p = pace()
    for _ in range(AccountPace.MIN_FLOOR_SAMPLES):
        p.answered(0.2)
    p.answered(0.12)
    assert p.floor == 0.12


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=700))
def test_the_spread_and_the_fastest_are_those_of_the_recent_round_trips(rtts):
    """Kept up to date answer by answer, they are what the recent samples give: the 5th
    to 95th percentile spread of the last SAMPLES, the fastest of the last FLOOR_SAMPLES
    (once enough are known)."""
    p = pace()
    for i, rtt in enumerate(rtts):
        p.answered(rtt)
        seen = rtts[: i + 1]
        recent = sorted(seen[-AccountPace.SAMPLES :])
        if len(recent) >= AccountPace.MIN_SAMPLES:
            low = recent[int(0.05 * (len(recent) - 1))]
            high = recent[int(round(0.95 * (len(recent) - 1)))]
            assert p.jitter == min(0.25, high - low)
        else:
            assert p.jitter == 0.05
        if len(seen) >= AccountPace.MIN_FLOOR_SAMPLES:
            assert p.floor == min(seen[-AccountPace.FLOOR_SAMPLES :])
        else:
            assert p.floor is None
