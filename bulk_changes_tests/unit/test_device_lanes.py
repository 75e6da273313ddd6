"""Device lanes: as many device threads at work as keep the interpreter busy."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bulk_changes.processing.device_lanes import DeviceLanes


class FakeClocks:
    """A wall clock and a process CPU clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.used = 0.0

    def advance(self, seconds: float, cpu_share: float) -> None:
        self.now += seconds
        self.used += seconds * cpu_share


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(16) as executor:
        yield executor


def lanes(pool: ThreadPoolExecutor, clocks: FakeClocks, most: int, least: int = 2) -> DeviceLanes:
    return DeviceLanes(
        pool, most, least, cpu=lambda: clocks.used, clock=lambda: clocks.now, sample_seconds=0.2
    )


def run_one(work: DeviceLanes, clocks: FakeClocks, cpu_share: float) -> None:
    clocks.advance(0.25, cpu_share)
    work.submit(lambda: None).result(5)


def test_lanes_start_with_the_whole_pool_at_work() -> None:
    # a run's first devices may all wait on the network (the billing account's first
    # pages): every thread of the pool is let at work until the CPU says otherwise
    with ThreadPoolExecutor(1) as executor:
        assert lanes(executor, FakeClocks(), most=16).limit == 16


def test_a_process_using_most_of_a_core_halves_its_lanes(pool) -> None:
    clocks = FakeClocks()
    work = lanes(pool, clocks, most=16)
    seen = []
    for _ in range(4):
        run_one(work, clocks, cpu_share=0.95)
        seen.append(work.limit)
    assert seen == [8, 4, 2, 2]


def test_a_process_mostly_waiting_doubles_its_lanes_up_to_the_pool(pool) -> None:
    clocks = FakeClocks()
    work = lanes(pool, clocks, most=12)
    run_one(work, clocks, cpu_share=0.95)
    run_one(work, clocks, cpu_share=0.95)
    assert work.limit == 3
    seen = []
    for _ in range(4):
        run_one(work, clocks, cpu_share=0.05)
        seen.append(work.limit)
    assert seen == [6, 12, 12, 12]


def test_a_busy_process_keeps_its_fewest_lanes(pool) -> None:
    clocks = FakeClocks()
    work = lanes(pool, clocks, most=16)
    for _ in range(5):
        run_one(work, clocks, cpu_share=0.95)
    assert work.limit == 2


def test_a_share_between_the_bounds_keeps_the_lanes(pool) -> None:
    clocks = FakeClocks()
    work = lanes(pool, clocks, most=16, least=3)
    run_one(work, clocks, cpu_share=0.95)
    run_one(work, clocks, cpu_share=0.65)
    assert work.limit == 8


def test_no_more_devices_run_at_once_than_the_limit(pool) -> None:
    work = lanes(pool, FakeClocks(), most=3, least=2)  # the clock never moves: limit 3
    inside = 0
    most_inside = 0
    lock = threading.Lock()
    release = threading.Event()

    def device() -> None:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        release.wait(5)
        with lock:
            inside -= 1

    futures = [work.submit(device) for _ in range(6)]
    release.set()
    for future in futures:
        future.result(5)
    assert most_inside == 3


def test_devices_start_in_the_order_they_were_submitted(pool) -> None:
    work = lanes(pool, FakeClocks(), most=1, least=1)
    started: list[int] = []
    futures = [work.submit(started.append, n) for n in range(20)]
    for future in futures:
        future.result(5)
    assert started == list(range(20))


def test_a_device_that_raises_hands_its_error_to_its_future_and_the_lane_goes_on(pool) -> None:
    work = lanes(pool, FakeClocks(), most=1, least=1)

    def fails() -> None:
        raise RuntimeError("the AMOP database is away")

    failed = work.submit(fails)
    after = work.submit(lambda: "done")
    assert isinstance(failed.exception(5), RuntimeError)
    assert after.result(5) == "done"
