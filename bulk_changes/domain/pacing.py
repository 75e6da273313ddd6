"""When an account's next call may start.

The vendors count call starts in a sliding window ("5 a second", "500 a minute"). Spacing
every call a fixed interval after the one before keeps within it, but loses for good the
time of every call that started late (a slow answer, a busy machine): the budget of that
moment is never used. Instead the limiter remembers the last ``ring_size`` starts and lets
a call start once the ``ring_size``-th call before it is ``ring_span`` old. Any
``ring_size`` consecutive calls then span at least ``ring_span``, so any window holds no
more than the budget, and a late call is made up by the calls after it.

The ring covers at most one second of calls: a bigger one would let a run spend a whole
minute's budget in a burst, and a run that arrives next would wait out the minute.
"""

from __future__ import annotations

import math

from bulk_changes.domain.settings import RateLimit

RING_SECONDS = 1.0


def ring_size(limit: RateLimit) -> int:
    """How many recent starts the limiter keeps for the account."""
    horizon = min(limit.window_seconds, RING_SECONDS)
    return max(1, math.floor(limit.calls_per_second * horizon + 1e-9))


def ring_span(limit: RateLimit, margin_seconds: float) -> float:
    """The least time ``ring_size`` consecutive starts may span.

    ``margin_seconds`` is added once per vendor window (the network can bring calls closer
    together than they left), spread over the rings of that window: 20 ms costs 2% of a
    5-a-second budget and 0.03% of 500 a minute."""
    size = ring_size(limit)
    per_call = limit.interval + margin_seconds / max(1.0, limit.calls_per_window)
    return size * per_call


def next_start(*, now: float, not_before: float, oldest_in_ring: float, span: float) -> float:
    """The start of the next call: not in the past, not before a penalty ends, and at
    least ``span`` after the oldest start the ring remembers."""
    return max(now, not_before, oldest_in_ring + span)
