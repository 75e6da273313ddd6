"""How cold this host leaves a thread's caches while it waits (``python -m
bench.host_caches``; ``bench.run_bench`` prints it beside the machine's load).

The same small pieces of Python (a JSON round trip, an e-mail header parse, a
case-insensitive dict, a SQLAlchemy statement compiled), timed back to back and after a
sleep: the thread's CPU, median of the repeats. On a host whose physical cores run other
work while a thread sleeps, the pieces after the sleep start from cold caches and cost
many times more (2026-12-07 05:55: 55 us back to back, 641 us after 200 ms). At the
carriers' limits every device's work comes after such a wait, unconstrained it does
not: this figure says how much dearer the host alone makes a run worker at the limits
(docs/benchmarks.md, "Why a run worker at the limits costs more than unconstrained").
"""

from __future__ import annotations

import email.parser
import json
import statistics
import time
from typing import Any

import requests
import sqlalchemy

SLEEP_SECONDS = 0.2


def _piece() -> None:
    json.loads(json.dumps({"iccid": "8901260000000000001", "status": "ACTIVATED", "n": [1, 2]}))
    email.parser.Parser().parsestr("Content-Type: application/json\nContent-Length: 42\n\n")
    requests.structures.CaseInsensitiveDict({"Retry-After": "1", "Date": "x"}).get("retry-after")
    sqlalchemy.text("SELECT status FROM device WHERE id = :id").compile()


def _cpu_of_piece_us(sleep_seconds: float) -> float:
    if sleep_seconds:
        time.sleep(sleep_seconds)
    started = time.thread_time()
    _piece()
    return (time.thread_time() - started) * 1e6


def after_wait(repeats: int = 15, sleep_seconds: float = SLEEP_SECONDS) -> dict[str, Any]:
    """-> the piece's thread CPU back to back and after ``sleep_seconds`` (medians, us),
    and their ratio. Takes about ``repeats * sleep_seconds`` seconds."""
    for _ in range(20):  # imports and first-call caches out of the way
        _piece()
    hot = statistics.median(_cpu_of_piece_us(0) for _ in range(repeats * 4))
    cold = statistics.median(_cpu_of_piece_us(sleep_seconds) for _ in range(repeats))
    return {
        "back_to_back_us": round(hot, 1),
        "after_wait_us": round(cold, 1),
        "wait_ms": round(sleep_seconds * 1000),
        "ratio": round(cold / hot, 1) if hot > 0 else None,
    }


def label(figures: dict[str, Any]) -> str:
    return (
        f"a piece of Python {figures['back_to_back_us']} us of CPU back to back,"
        f" {figures['after_wait_us']} us after a {figures['wait_ms']}-ms wait"
        f" (x{figures['ratio']})"
    )


if __name__ == "__main__":
    print(f"host caches: {label(after_wait())}")
