"""Per-account call limits: calls in flight and calls started in a sliding window."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any


@dataclass(frozen=True)
class Limits:
    rate_limit: int | None
    window: float
    max_in_flight: int | None


def limit_aliases(values: dict[str, Any]) -> dict[str, Any]:
    """``rate_per_second=N`` / ``rate_per_minute=N`` as rate_limit + window."""
    out = dict(values)
    if "rate_per_second" in out:
        out["rate_limit"] = out.pop("rate_per_second")
        out["rate_window_seconds"] = 1.0
    if "rate_per_minute" in out:
        out["rate_limit"] = out.pop("rate_per_minute")
        out["rate_window_seconds"] = 60.0
    return out


class AccountLimiter:
    """In-flight counts and sliding windows of call starts, per account.

    Every call that reaches the limiter counts as started in the window, throttled or not.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._starts: dict[str, list[float]] = {}  # arrival times, in order
        self.max_in_flight_seen: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._in_flight.clear()
            self._starts.clear()
            self.max_in_flight_seen.clear()

    def enter(
        self, account: str, limits: Limits, enforce: bool, arrived_at: float | None = None
    ) -> tuple[bool, list[str]]:
        """Start a call that arrived at ``arrived_at`` (wall-clock seconds; default now):
        (admitted, violations). An admitted call must ``leave``. Calls arrive at the
        same time on several connections and get here in any order, so a window is
        counted around the call wherever its arrival falls among the others."""
        with self._lock:
            at = time.time() if arrived_at is None else arrived_at
            violations: list[str] = []
            if (
                limits.max_in_flight is not None
                and self._in_flight[account] >= limits.max_in_flight
            ):
                violations.append("in_flight")
            starts = self._starts.setdefault(account, [])
            # no call gets here a whole window after a later one arrived
            del starts[
                : bisect_left(starts, max(at, starts[-1] if starts else at) - 2 * limits.window)
            ]
            position = bisect_right(starts, at)
            starts.insert(position, at)
            if limits.rate_limit is not None and _crowded(starts, position, limits):
                violations.append("rate")
            admitted = not (violations and enforce)
            if admitted:
                self._in_flight[account] += 1
                seen = self._in_flight[account]
                if seen > self.max_in_flight_seen[account]:
                    self.max_in_flight_seen[account] = seen
            return admitted, violations

    def leave(self, account: str) -> None:
        with self._lock:
            self._in_flight[account] -= 1


def _short_windows(
    starts: list[float], n: int, window: float, first: int, last: int
) -> Iterator[int]:
    """Each i in ``first..last`` where the start i and the start ``n`` after it (``starts``
    in order) are less than ``window`` apart: ``n`` + 1 starts in one window."""
    for i in range(first, last + 1):
        if starts[i + n] - starts[i] < window:
            yield i


def _crowded(starts: list[float], position: int, limits: Limits) -> bool:
    """Whether a window holding the start at ``position`` (``starts`` in order) holds
    more than the limit."""
    n = limits.rate_limit
    assert n is not None
    first, last = max(0, position - n), min(position, len(starts) - 1 - n)
    return next(_short_windows(starts, n, limits.window, first, last), None) is not None


def crowded_windows(starts: list[float], limits: Limits) -> list[dict[str, Any]]:
    """Where calls started more often than the limit allows (``starts``: one account's
    call start times, in seconds): each call that started less than a window after the
    call a limit's worth before it, with the gaps between them. A rate violation's shape:
    one late call among on-time ones, or turns handed out too close together."""
    n = limits.rate_limit
    if not n:
        return []
    ordered = sorted(starts)
    return [
        {
            "call": i + n,
            "seconds_in": round(ordered[i + n] - ordered[0], 3),
            "span_s": round(ordered[i + n] - ordered[i], 4),
            "gaps_ms": [round((b - a) * 1000, 1) for a, b in pairwise(ordered[i : i + n + 1])],
        }
        for i in _short_windows(ordered, n, limits.window, 0, len(ordered) - 1 - n)
    ]
