"""The shared account limiter across threads and processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import threading
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update

from bulk_changes.db import limiter as limiter_module
from bulk_changes.db import schema as t
from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import AccountPace, DbLimiter, release_dead_holders
from bulk_changes.domain.settings import RateLimit
from bulk_changes_tests.transactions import tell_transactions

LIMIT = RateLimit(calls_per_second=20, max_in_flight=2)


def _worker(url: str, calls: int, queue) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limiter = DbLimiter(make_engine(url), margin_seconds=0.2)

    def one(_):
        with limiter.slot("acct", LIMIT):
            started = time.time()
            time.sleep(0.01)
            return started, time.time()

    with ThreadPoolExecutor(3) as pool:
        for span in pool.map(one, range(calls)):
            queue.put(span)


def run_processes(url: str, processes: int, calls: int) -> list[tuple[float, float]]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, calls, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    spans = [queue.get(timeout=120) for _ in range(processes * calls)]
    for p in procs:
        p.join(30)
    return spans


def most_in_any_second(starts: list[float]) -> int:
    starts = sorted(starts)
    best = 0
    j = 0
    for i, s in enumerate(starts):
        while starts[j] <= s - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = best = 0
    for _, delta in events:
        level += delta
        best = max(best, level)
    return best


def test_three_processes_share_one_budget(any_db_url, any_engine):
    spans = run_processes(any_db_url, processes=3, calls=20)
    assert len(spans) == 60
    assert most_in_any_second([s for s, _ in spans]) <= LIMIT.calls_per_second
    assert most_at_once(spans) <= LIMIT.max_in_flight


def _hold_forever(url: str, ready) -> None:
    limiter = DbLimiter(make_engine(url), lease_seconds=1.0)
    with limiter.slot("dead-acct", RateLimit(100, 1)):
        ready.set()
        time.sleep(3600)


def test_slot_of_a_killed_process_frees_when_its_lease_expires(any_db_url, any_engine):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(any_db_url, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    limiter = DbLimiter(any_engine, lease_seconds=1.0)
    waited = time.monotonic()
    with limiter.slot("dead-acct", RateLimit(100, 1)):
        waited = time.monotonic() - waited
    assert waited < 30  # taken over after the lease, not blocked for good


def _hold_with_a_long_lease(url: str, ready) -> None:
    limiter = DbLimiter(make_engine(url))
    with limiter.slot("dead-acct", RateLimit(100, 1), lease_seconds=3600):
        ready.set()
        time.sleep(3600)


def test_a_dead_holder_on_this_host_gives_its_slot_back_before_its_lease_ends(
    any_db_url, any_engine
):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_with_a_long_lease, args=(any_db_url, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    limiter = DbLimiter(any_engine)
    got = threading.Event()

    def take() -> None:
        with limiter.slot("dead-acct", RateLimit(100, 1)):
            got.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert got.wait(60), "the dead holder's slot was not given back (its lease is an hour)"
    taker.join(10)
    assert limiter.reclaimed == 1


def _hold_until_told(url: str, ready, done) -> None:
    limiter = DbLimiter(make_engine(url))
    with limiter.slot("live-acct", RateLimit(100, 1), lease_seconds=3600):
        ready.set()
        done.wait(120)


def test_a_live_holder_keeps_its_slot(any_db_url, any_engine):
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_until_told, args=(any_db_url, ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        assert release_dead_holders(any_engine) == 0
    finally:
        done.set()
        holder.join(30)


def test_a_holder_on_another_host_is_left_to_its_lease(any_engine):
    with any_engine.begin() as conn:
        conn.execute(
            insert(t.rate_limit_slots).values(
                account="far-acct",
                slot=0,
                holder="elsewhere:1:1:abcd1234:ffffffff:1",
                expires_at=9e9,
            )
        )
    assert release_dead_holders(any_engine) == 0


def test_penalty_delays_the_next_call(any_engine):
    # on a fake clock: the wall clock this machine's tests read can be stepped meanwhile
    now = {"t": 1000.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    limiter = DbLimiter(any_engine, clock=lambda: now["t"], sleep=sleep)
    with limiter.slot("p-acct", RateLimit(100, 1)):
        pass
    limiter.penalize("p-acct", 0.5)
    started = now["t"]
    with limiter.slot("p-acct", RateLimit(100, 1)):
        called_at = now["t"]
    assert called_at - started >= 0.5


def _small_run_during_a_busy_one(engine, account: str) -> tuple[list[float], list[float], float]:
    """Two limiters stand for two runs' processes; the busy one (40 calls a second, one
    in flight) has a thread waiting for every turn, so without the waiters' queue it
    would take each freed slot again. The small one asks for the account once the busy
    one's chain runs and makes 5 calls. -> (busy call starts, small call starts, when the
    small one asked)."""
    limit = RateLimit(calls_per_second=40, max_in_flight=1)
    busy, small = DbLimiter(engine), DbLimiter(engine)
    stop = threading.Event()
    busy_starts: list[float] = []

    def keep_calling() -> None:
        while not stop.is_set():
            with busy.slot(account, limit):
                busy_starts.append(time.monotonic())
                time.sleep(0.005)

    threads = [threading.Thread(target=keep_calling) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    asked = time.monotonic()
    small_starts = []
    for _ in range(5):
        with small.slot(account, limit):
            small_starts.append(time.monotonic())
            time.sleep(0.005)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert busy.handoffs > 0
    return busy_starts, small_starts, asked


def test_a_second_run_gets_every_other_turn_while_a_busy_one_holds_the_account(any_engine):
    busy_starts, small_starts, _ = _small_run_during_a_busy_one(any_engine, "shared")
    between = [s for s in busy_starts if small_starts[0] <= s <= small_starts[-1]]
    # strict alternation would be 4; a turn or two either side is the polling
    assert len(between) <= 6, (len(between), small_starts[-1] - small_starts[0])


def test_a_run_asking_for_a_busy_account_gets_it_within_a_second_of_its_turns(any_engine):
    """The busy run's chain hands the slot on in its process, looking at the database
    (another run waiting) once its next turn is a second (``chain_check_seconds``) after
    its last look: at most a second's worth of its turns go before the waiting run's."""
    busy_starts, small_starts, asked = _small_run_during_a_busy_one(any_engine, "shared-first")
    before = [s for s in busy_starts if asked <= s <= small_starts[0]]
    # 40 turns a second, the call the look was made in, and one for the polling
    assert len(before) <= 42, (len(before), small_starts[0] - asked)


def test_the_jitter_margin_is_spread_over_the_calls_of_one_window(any_engine):
    limiter = DbLimiter(any_engine, margin_seconds=0.02)
    per_second = limiter.spacing(RateLimit(calls_per_second=5, max_in_flight=1))
    per_minute = limiter.spacing(RateLimit(500 / 60, 4, window_seconds=60))
    # five calls a second: 20 ms more per window of five calls
    assert abs(per_second - (0.2 + 0.004)) < 1e-9
    # 500 a minute: the same 20 ms over 500 calls
    assert abs(per_minute - (0.12 + 0.00004)) < 1e-9


def test_a_slot_is_leased_for_as_long_as_its_call_can_last(any_engine):
    import threading

    held, done = threading.Event(), threading.Event()

    def hold() -> None:  # stands for a worker killed in the middle of its call
        with DbLimiter(any_engine).slot("lease-acct", RateLimit(100, 1), lease_seconds=0.5):
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    started = time.monotonic()
    with DbLimiter(any_engine).slot("lease-acct", RateLimit(100, 1)):
        waited = time.monotonic() - started
    done.set()
    holder.join(10)
    assert 0.3 <= waited < 10


def test_threads_of_one_process_hand_the_slot_on_and_the_budget_still_holds(any_engine):
    from concurrent.futures import ThreadPoolExecutor

    limit = RateLimit(calls_per_second=20, max_in_flight=1)
    limiter = DbLimiter(any_engine)
    spans: list[tuple[float, float]] = []

    def one(_: int) -> None:
        with limiter.slot("handed", limit):
            started = time.time()
            time.sleep(0.005)
            spans.append((started, time.time()))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(30)))
    assert len(spans) == 30
    assert limiter.handoffs > 0
    assert most_at_once(spans) == 1
    assert most_in_any_second([s for s, _ in spans]) <= 20


def _threads_calling(
    engine, account: str, limit: RateLimit, threads: int, held: list[float]
) -> tuple[list[tuple[float, float]], DbLimiter, int]:
    """``len(held)`` calls on ``threads`` threads of one process, each call holding its
    slot ``held[i]`` seconds. -> (each call's span, the limiter, its transactions)."""
    from concurrent.futures import ThreadPoolExecutor

    limiter = DbLimiter(engine)
    limiter._ensure_rows(account, limit)
    spans: list[tuple[float, float]] = []
    transactions = itertools.count()

    def counted(_conn) -> None:
        next(transactions)

    def one(seconds: float) -> None:
        with limiter.slot(account, limit):
            started = time.time()
            time.sleep(seconds)
            spans.append((started, time.time()))

    stop_telling = tell_transactions(engine, "begin", counted)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, held))
    finally:
        stop_telling()
    return spans, limiter, next(transactions)


def test_several_in_flight_a_slot_is_handed_on_to_a_queued_thread_with_its_next_turn(any_engine):
    """Threads queued for the account: a call that ends keeps its slot for one of them and
    takes its next turn in the same transaction, one transaction a call, not two."""
    limit = RateLimit(calls_per_second=50, max_in_flight=2)
    spans, limiter, transactions = _threads_calling(
        any_engine, "handed-multi", limit, threads=6, held=[0.02] * 40
    )
    assert len(spans) == 40
    assert limiter.handoffs > 0
    assert transactions < 1.5 * 40


def _slot_rows(engine, account: str) -> list[tuple[int, str | None]]:
    with engine.connect() as conn:
        return [
            (row.slot, row.holder)
            for row in conn.execute(
                select(t.rate_limit_slots.c.slot, t.rate_limit_slots.c.holder)
                .where(t.rate_limit_slots.c.account == account)
                .order_by(t.rate_limit_slots.c.slot)
            )
        ]


def test_several_in_flight_a_thread_handing_on_a_turn_well_ahead_goes_on_without_a_switch(
    any_engine, monkeypatch
):
    """10 calls a second, 2 in flight, each call 10 ms: the turn handed on is the other
    slot's turns further on (some 190 ms), so the handing thread goes on with its device
    instead of giving up the interpreter lock (a switch out and back a call)."""
    let_run: list[int] = []
    monkeypatch.setattr(limiter_module, "_let_run", lambda: let_run.append(1))
    limit = RateLimit(calls_per_second=10, max_in_flight=2)
    spans, limiter, _ = _threads_calling(
        any_engine, "far-turns-multi", limit, threads=6, held=[0.01] * 12
    )
    assert len(spans) == 12
    assert limiter.handoffs >= 5
    assert let_run == []


def test_several_in_flight_a_thread_handing_on_a_turn_due_now_lets_the_next_call_run(
    any_engine, monkeypatch
):
    """The same with calls of 250 ms: the turn handed on is due at once, and the handing
    thread gives up the interpreter lock to the next call."""
    let_run: list[int] = []
    monkeypatch.setattr(limiter_module, "_let_run", lambda: let_run.append(1))
    limit = RateLimit(calls_per_second=10, max_in_flight=2)
    spans, limiter, _ = _threads_calling(
        any_engine, "due-turns-multi", limit, threads=6, held=[0.25] * 12
    )
    assert len(spans) == 12
    assert limiter.handoffs >= 5
    assert len(let_run) >= limiter.handoffs - 2


def test_several_in_flight_a_process_next_calls_take_its_parked_slot_and_turns_taken_ahead(
    any_engine,
):
    """One thread, one call after the other: the slot stays the process's between them
    and one transaction takes the turns of the next calls, each a spacing after the last."""
    now = {"t": 1000.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    limit = RateLimit(calls_per_second=50, max_in_flight=4)
    limiter = DbLimiter(any_engine, clock=lambda: now["t"], sleep=sleep)
    limiter._ensure_rows("parked", limit)
    transactions = itertools.count()

    def counted(_conn) -> None:
        next(transactions)

    starts = []
    stop_telling = tell_transactions(any_engine, "begin", counted)
    try:
        for _ in range(10):
            with limiter.slot("parked", limit):
                starts.append(now["t"])
    finally:
        stop_telling()
    assert next(transactions) == 2  # the first slot and turn, then the turns ahead
    assert limiter.turns_ahead == 8
    spacing = limiter.spacing(limit, "parked")
    assert all(abs(b - a - spacing) < 1e-6 for a, b in zip(starts, starts[1:], strict=False))


def test_several_in_flight_a_call_that_finds_no_slot_of_its_process_free_takes_a_turn_ahead(
    any_engine,
):
    """A second call while the first is in flight (nothing handed on, nothing parked):
    it takes a free slot for the next turn the process took ahead, a spacing after the
    first call, instead of a fresh turn from the clock past the turns taken ahead."""
    now = {"t": 1000.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    limit = RateLimit(calls_per_second=50, max_in_flight=4)
    limiter = DbLimiter(any_engine, clock=lambda: now["t"], sleep=sleep)
    with limiter.slot("ahead-new-slot", limit):
        pass  # parked: the next call's hand-on takes turns ahead
    with limiter.slot("ahead-new-slot", limit):
        first = now["t"]
        assert limiter.turns_ahead_and_slots("ahead-new-slot")[0] > 0
        with limiter.slot("ahead-new-slot", limit):
            second = now["t"]
            held = [h for _, h in _slot_rows(any_engine, "ahead-new-slot") if h is not None]
    assert abs(second - first - limiter.spacing(limit, "ahead-new-slot")) < 1e-6
    assert len(held) == 2


def test_several_in_flight_a_parked_slot_is_given_back_when_no_call_takes_it(any_engine):
    limit = RateLimit(calls_per_second=50, max_in_flight=2)
    limiter = DbLimiter(any_engine, park_seconds=0.2)
    with limiter.slot("idle-parked", limit):
        pass
    assert [holder is not None for _, holder in _slot_rows(any_engine, "idle-parked")] == [
        True,
        False,
    ]
    deadline = time.time() + 5.0
    while any(holder for _, holder in _slot_rows(any_engine, "idle-parked")):
        assert time.time() < deadline, "the parked slot was never given back"
        time.sleep(0.05)
    assert limiter.turns_ahead_and_slots("idle-parked") == (0, 0)


def test_several_in_flight_slots_parked_are_given_back_at_exit(any_engine):
    limit = RateLimit(calls_per_second=50, max_in_flight=2)
    limiter = DbLimiter(any_engine, park_seconds=60.0)
    with limiter.slot("exit-parked", limit):
        pass
    assert limiter.give_back_parked() == 1
    assert all(holder is None for _, holder in _slot_rows(any_engine, "exit-parked"))


def test_several_in_flight_a_parked_slot_lost_meanwhile_gives_way_to_a_slot_taken_in_line(
    any_engine,
):
    """The parked slot's lease ran out and another process holds its row now: the
    process's next call takes a free slot in line instead of failing."""
    limit = RateLimit(calls_per_second=20, max_in_flight=2)
    limiter = DbLimiter(any_engine, park_seconds=60.0)
    with limiter.slot("lost-parked", limit):
        pass
    with any_engine.begin() as conn:
        conn.execute(
            update(t.rate_limit_slots)
            .where(
                t.rate_limit_slots.c.account == "lost-parked",
                t.rate_limit_slots.c.holder.is_not(None),
            )
            .values(holder="another-process", expires_at=time.time() + 60)
        )
    limiter._turns.clear()  # no turn taken ahead left: the parked slot's hand-on is asked
    with limiter.slot("lost-parked", limit):
        holders = [holder for _, holder in _slot_rows(any_engine, "lost-parked")]
    assert "another-process" in holders
    assert all(holder is not None for holder in holders)


def test_several_in_flight_another_run_gets_a_slot_parked_by_a_busy_process(any_engine):
    """Process A parked both slots of the account; process B's call gets one once A's
    park ends (A gives a parked slot back as soon as it sees B waiting, too)."""
    limit = RateLimit(calls_per_second=50, max_in_flight=2)
    a = DbLimiter(any_engine, park_seconds=0.3)
    b = DbLimiter(any_engine)
    with a.slot("parked-shared", limit), a.slot("parked-shared", limit):
        pass
    assert all(holder for _, holder in _slot_rows(any_engine, "parked-shared"))
    asked = time.time()
    with b.slot("parked-shared", limit):
        got = time.time()
    assert got - asked < 0.3 + 1.5


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.integers(2, 6),
    st.sampled_from([10.0, 20.0, 50.0, 1000.0]),
    st.lists(
        st.tuples(
            st.integers(0, 1),  # which process calls
            st.floats(0.0, 0.3),  # how long the call is in flight
            st.floats(0.0, 0.15),  # how late its thread wakes for its turn, once
        ),
        min_size=10,
        max_size=40,
    ),
    st.booleans(),  # a process may have several calls in flight at once
)
@example(2, 10.0, [(0, 0.01, 0.0), (1, 0.01, 0.0)] * 8, False)
@example(4, 10.0, [(0, 0.3, 0.0)] * 3 + [(1, 0.01, 0.0), (0, 0.01, 0.0)] * 6, True)
def test_several_in_flight_turns_taken_ahead_by_all_processes_stay_under_a_windows_worth(
    any_engine,
    in_flight: int,
    per_second: float,
    calls: list[tuple[int, float, float]],
    several: bool,
):
    """Two processes calling one account on a fake clock, parking slots and taking turns
    ahead: the turns taken and not yet used (ahead, or held by a call about to leave)
    never number more than the calls of a window, the bound a late call's push relies
    on (docs/reliability.md)."""
    from contextlib import ExitStack

    now = {"t": 1000.0}
    wake = {"late": 0.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds + wake["late"]
        wake["late"] = 0.0

    limiters = [
        DbLimiter(
            any_engine,
            margin_seconds=0.02,
            park_seconds=0.05,
            clock=lambda: now["t"],
            sleep=sleep,
        )
        for _ in range(2)
    ]
    limit = RateLimit(calls_per_second=per_second, max_in_flight=in_flight)
    account = f"ahead-bound-{next(_property_runs)}"
    window = int(limit.calls_per_window + 1e-9)
    with ExitStack() as stack:
        open_calls: list[tuple[float, int, ExitStack]] = []
        for which, in_flight_for, late in calls:
            if len(open_calls) == in_flight or (
                not several and any(w == which for _, w, _ in open_calls)
            ):
                open_calls.sort(key=lambda c: c[0])
                answered, _, call = open_calls.pop(0)
                now["t"] = max(now["t"], answered)
                call.close()
            call = stack.enter_context(ExitStack())
            wake["late"] = late
            call.enter_context(limiters[which].slot(account, limit))
            wake["late"] = 0.0
            open_calls.append((now["t"] + in_flight_for, which, call))
            ahead = sum(lim.turns_ahead_and_slots(account)[0] for lim in limiters)
            # each open call holds one turn not yet used at most
            assert ahead + len(open_calls) <= max(window, in_flight)


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.integers(1, 4),
    st.integers(1, 8),
    st.lists(st.floats(0.0, 0.06), min_size=22, max_size=40),
)
def test_several_in_flight_slots_handed_on_keep_the_in_flight_bound_and_every_window(
    any_engine, in_flight: int, threads: int, held: list[float]
):
    """Any number of threads, any call lengths (real time, 20 a second): no more calls in
    flight than the slots, and no second with more than 20 starts."""
    limit = RateLimit(calls_per_second=20, max_in_flight=in_flight)
    spans, _, _ = _threads_calling(
        any_engine, f"handed-any-{next(_property_runs)}", limit, threads, held
    )
    assert len(spans) == len(held)
    assert most_at_once(spans) <= in_flight
    assert most_in_any_second([s for s, _ in spans]) <= 20


def test_several_in_flight_a_call_that_wakes_late_leaves_at_once_and_moves_the_later_turns_on(
    any_engine,
):
    """Fewer turns than a window's worth are handed out ahead of it: moving the rest on by
    its lateness keeps every window, and no turn is thrown away."""
    # the first sleep wakes 50 ms late, as on a busy machine
    starts, spacing, limiter = _calls_with_a_late_wake(
        any_engine, "late-multi", late_by=0.05, calls=3, max_in_flight=2
    )
    assert (limiter.late_pushes, limiter.retakes) == (1, 0)
    assert abs(starts[1] - (1000.0 + spacing + 0.05)) < 1e-6
    assert abs(starts[2] - (starts[1] + spacing)) < 1e-6


def test_several_in_flight_a_call_that_wakes_later_than_a_spacing_takes_a_fresh_turn(any_engine):
    """A stalled thread does not hold the account's later turns up by its whole stall."""
    starts, spacing, limiter = _calls_with_a_late_wake(
        any_engine, "stalled-multi", late_by=0.2, calls=2, max_in_flight=2
    )
    assert limiter.retakes == 1
    # it leaves on another turn, within a spacing of waking: a fresh one, or one taken
    # ahead (if that one is late too, the later turns move on by its lateness)
    woke = 1000.0 + spacing + 0.2
    assert woke - 1e-6 <= starts[1] <= woke + spacing + 1e-6


def _calls_with_a_late_wake(
    engine, account: str, late_by: float, *, calls: int = 3, max_in_flight: int = 1
) -> tuple[list[float], float, DbLimiter]:
    """Calls one after the other on a fake clock (10 a second); the first thread that
    sleeps to its turn (the second call's) wakes ``late_by`` seconds after it.
    -> (when each call left, the spacing, the limiter)."""
    now = {"t": 1000.0}
    late = [late_by]

    def sleep(seconds: float) -> None:
        now["t"] += seconds + (late.pop() if late else 0.0)

    limiter = DbLimiter(engine, margin_seconds=0.02, clock=lambda: now["t"], sleep=sleep)
    limit = RateLimit(calls_per_second=10, max_in_flight=max_in_flight)
    starts = []
    for _ in range(calls):
        with limiter.slot(account, limit):
            starts.append(now["t"])
    return starts, limiter.spacing(limit, account), limiter


def test_a_call_that_wakes_a_little_after_its_turn_does_not_push_the_next_turns_back(any_engine):
    starts, spacing, _ = _calls_with_a_late_wake(any_engine, "wake-jitter", late_by=0.002)
    assert abs(starts[1] - (1000.0 + spacing + 0.002)) < 1e-6
    assert abs(starts[2] - (1000.0 + 2 * spacing)) < 1e-6


def test_a_call_that_leaves_well_after_its_turn_keeps_a_full_spacing_from_its_real_start(
    any_engine,
):
    starts, spacing, _ = _calls_with_a_late_wake(any_engine, "wake-late", late_by=0.03)
    assert abs(starts[2] - (starts[1] + spacing)) < 1e-6


def test_one_in_flight_the_next_turn_is_taken_while_the_call_is_in_flight(any_engine):
    """No database round trip between a call's answer and the next call of a chain."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    limit = RateLimit(calls_per_second=20, max_in_flight=1)
    limiter = DbLimiter(any_engine)
    # (thread, when): transactions begun (the limiter's statements run on the driver's
    # cursor, without SQLAlchemy's execution events; each runs in a transaction begun)
    statements: list[tuple[int, float]] = []
    windows: list[tuple[int, float, float]] = []  # (thread, answered, slot left)

    def on_execute(*_args: object) -> None:
        statements.append((threading.get_ident(), time.monotonic()))

    def one(_: int) -> None:
        with limiter.slot("ahead", limit):
            time.sleep(0.02)  # the call in flight
            answered = time.monotonic()
        windows.append((threading.get_ident(), answered, time.monotonic()))

    stop_telling = tell_transactions(any_engine, "begin", on_execute)
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(20)))
    finally:
        stop_telling()
    after_answer = [
        w for w in windows if any(t == w[0] and w[1] <= at <= w[2] for t, at in statements)
    ]
    assert limiter.handoffs >= 10
    # only the calls that ended a chain (freed the slot) touched the database after
    # their answer
    assert len(after_answer) == len(windows) - limiter.handoffs


def _calls_departing(
    engine, account: str, departs_after: list[float], *, max_in_flight: int = 1
) -> tuple[list[float], float]:
    """Calls one after the other on a fake clock (10 a second), each on time at its turn
    but reporting its request left ``departs_after[i]`` later (the thread stalled before
    the write). -> (when each call's turn came, the spacing)."""
    now = {"t": 1000.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    limiter = DbLimiter(engine, margin_seconds=0.02, clock=lambda: now["t"], sleep=sleep)
    limit = RateLimit(calls_per_second=10, max_in_flight=max_in_flight)
    starts = []
    for delay in departs_after:
        with limiter.slot(account, limit) as departure:
            starts.append(now["t"])
            departure.departed(now["t"] + delay)
    return starts, limiter.spacing(limit, account)


def test_one_in_flight_the_next_turn_counts_from_a_late_departure(any_engine):
    starts, spacing = _calls_departing(any_engine, "departs-late", [0.03, 0.0, 0.0])
    assert abs(starts[1] - (1000.0 + 0.03 + spacing)) < 1e-6
    assert abs(starts[2] - (starts[1] + spacing)) < 1e-6


def test_one_in_flight_a_departure_just_after_the_turn_counts_from_the_turn(any_engine):
    starts, spacing = _calls_departing(any_engine, "departs-on-time", [0.004, 0.0])
    assert abs(starts[1] - (1000.0 + spacing)) < 1e-6


def test_several_in_flight_a_late_departure_pushes_every_later_turn(any_engine):
    """The turns up to a window on may be handed out already: all later ones move on by
    the lateness beyond half the margin, so the call a window's worth later still
    arrives a full window after the late one."""
    starts, spacing = _calls_departing(
        any_engine, "departs-late-multi", [0.05, 0.0, 0.0], max_in_flight=2
    )
    assert abs(starts[1] - (1000.0 + spacing + 0.04)) < 1e-6
    assert abs(starts[2] - (starts[1] + spacing)) < 1e-6


def test_several_in_flight_a_departure_within_half_the_margin_pushes_nothing(any_engine):
    starts, spacing = _calls_departing(
        any_engine, "departs-on-time-multi", [0.009, 0.0], max_in_flight=2
    )
    assert abs(starts[1] - (1000.0 + spacing)) < 1e-6


def test_a_throttled_answer_pushes_back_a_turn_already_taken(any_engine):
    """Two in flight: the second call's turn is handed out while the first is in flight;
    the first is answered throttled (1 s): the second leaves after the penalty, not at the
    turn it had."""
    limiter = DbLimiter(any_engine)
    limit = RateLimit(calls_per_second=5, max_in_flight=2)
    first_in = threading.Event()
    answered_at: list[float] = []
    second_left: list[float] = []

    def second() -> None:
        assert first_in.wait(30)
        with limiter.slot("throttled-acct", limit):
            second_left.append(time.time())

    other = threading.Thread(target=second)
    other.start()
    with limiter.slot("throttled-acct", limit) as departure:
        first_in.set()
        time.sleep(0.1)  # the second thread has taken its turn (0.2 s on) and waits for it
        departure.departed(time.time() - 0.05)
        departure.throttled(1.0)
        answered_at.append(time.time())
    other.join(30)
    assert second_left[0] >= answered_at[0] + 1.0 - 0.01
    assert limiter.throttled == 1


def test_a_throttled_answer_widens_the_accounts_spacing(any_engine):
    limiter = DbLimiter(any_engine)
    limit = RateLimit(calls_per_second=50, max_in_flight=1)
    before = limiter.spacing(limit, "widened-acct")
    with limiter.slot("widened-acct", limit) as departure:
        departure.departed(time.time())
        departure.throttled(0.01)
    assert limiter.spacing(limit, "widened-acct") > before


def _chain_of_calls(engine, account: str, slow_call: int, calls: int = 16):
    """One in flight, 10 a second, calls queued on three threads of one process (a chain
    of hand-offs); call ``slow_call`` is answered 0.25 s late. -> (departures, spacing)."""
    from concurrent.futures import ThreadPoolExecutor

    limiter = DbLimiter(engine)
    limit = RateLimit(calls_per_second=10, max_in_flight=1)
    departures: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        with limiter.slot(account, limit) as departure:
            with lock:
                departures.append(time.time())
                index = len(departures) - 1
            departure.departed(departures[index])
            time.sleep(0.25 if index == slow_call else 0.002)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, range(calls)))
    return departures, limiter.spacing(limit, account)


def test_one_in_flight_calls_after_a_late_answer_make_up_for_it(any_engine):
    departures, spacing = _chain_of_calls(any_engine, "made-up", slow_call=10)
    gaps = [b - a for a, b in itertools.pairwise(departures[11:])]
    assert min(gaps) < spacing / 2, gaps


def test_one_in_flight_the_calls_made_up_keep_every_window(any_engine):
    departures, spacing = _chain_of_calls(any_engine, "made-up-windows", slow_call=10)
    spans = [departures[i + 10] - departures[i] for i in range(len(departures) - 10)]
    assert min(spans) >= 10 * spacing - 0.005, spans


def test_after_a_dead_holders_slot_is_given_back_the_next_turn_waits_a_window(
    any_db_url, any_engine
):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_with_a_long_lease, args=(any_db_url, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    freed_at = time.time()
    assert release_dead_holders(any_engine) == 1
    with any_engine.connect() as conn:
        next_free = conn.execute(
            select(t.rate_limit_clock.c.next_free_at).where(
                t.rate_limit_clock.c.account == "dead-acct"
            )
        ).scalar_one()
    assert next_free >= freed_at + 1.0


# ---- one in flight: each call a window's worth later placed by the earlier call's answer

FIVE_A_SECOND = RateLimit(calls_per_second=5, max_in_flight=1)


def _calls_answered(
    engine,
    account: str,
    round_trips: list[float | None],
    *,
    fastest: float,
    outbound: list[float] | None = None,
    late_wakes: list[float] | None = None,
) -> tuple[list[float], list[float], list[float], DbLimiter]:
    """One in flight, 5 a second, one call after the other on a fake clock; call i leaves
    at its turn and its answer comes ``round_trips[i]`` later (None: no successful
    answer). The account answered round trips of ``fastest`` before. ``outbound[i]``: how
    long call i took to reach the vendor (arrivals); ``late_wakes[i]``: how late the
    thread woke for its turn. -> (departures, answers, arrivals, limiter)."""
    now = {"t": 1000.0}
    wakes = list(reversed(late_wakes or []))

    def sleep(seconds: float) -> None:
        now["t"] += seconds + (wakes.pop() if wakes else 0.0)

    limiter = DbLimiter(engine, margin_seconds=0.02, clock=lambda: now["t"], sleep=sleep)
    for _ in range(AccountPace.MIN_FLOOR_SAMPLES):
        limiter.pace(account).answered(fastest)
    departures, answers, arrivals = [], [], []
    for i, rtt in enumerate(round_trips):
        with limiter.slot(account, FIVE_A_SECOND) as departure:
            departures.append(now["t"])
            arrivals.append(now["t"] + (outbound[i] if outbound else 0.0))
            departure.departed(now["t"])
            now["t"] += rtt if rtt is not None else fastest
            if rtt is not None:
                departure.answered(now["t"])
            answers.append(now["t"])
    return departures, answers, arrivals, limiter


def test_one_in_flight_the_call_a_window_later_leaves_a_window_after_the_answer_less_the_fastest_round_trip(  # noqa: E501
    any_engine,
):
    round_trips: list[float | None] = [0.15] * 20
    round_trips[7] = 0.19
    departures, answers, _, _ = _calls_answered(
        any_engine, "after-answer", round_trips, fastest=0.15
    )
    # a window (1 s) after the answer less the fastest round trip, and half the fixed
    # margin (10 ms)
    for i in range(len(departures) - 5):
        assert abs(departures[i + 5] - (answers[i] - 0.15 + 1.0 + 0.01)) < 1e-6, i


def test_one_in_flight_a_slow_round_trip_delays_only_the_call_a_window_later(any_engine):
    round_trips: list[float | None] = [0.15] * 20
    round_trips[7] = 0.19
    slow, _, _, _ = _calls_answered(any_engine, "one-slow", round_trips, fastest=0.15)
    steady, _, _, _ = _calls_answered(any_engine, "none-slow", [0.15] * 20, fastest=0.15)
    # call 12 leaves later by call 7's 40 ms over the fastest round trip ...
    assert abs((slow[12] - slow[7]) - (steady[12] - steady[7]) - 0.04) < 1e-6
    # ... and the call after it is not held back by more than its own answer's lateness
    assert abs((slow[13] - slow[12]) - (steady[13] - steady[12]) + 0.04) < 1e-6


def test_a_spread_of_the_vendors_own_time_reserves_less_than_the_spread(any_engine):
    """Round trips 150-200 ms, the spread all the vendor's time (the way out steady):
    each window keeps its call's own excess free (25 ms on average), not the spread."""
    rnd = random.Random(3)
    round_trips: list[float | None] = [0.15 + rnd.random() * 0.05 for _ in range(150)]
    departures, _, _, limiter = _calls_answered(
        any_engine, "service-spread", round_trips, fastest=0.15
    )
    spans = [b - a for a, b in zip(departures, departures[5:], strict=False)]
    uniform_reserve = 5 * limiter.spacing(FIVE_A_SECOND, "service-spread")
    assert limiter.pace("service-spread").jitter > 0.04
    assert sum(spans) / len(spans) < uniform_reserve - 0.01


def test_one_in_flight_a_call_without_an_answer_keeps_the_uniform_reserve(any_engine):
    round_trips: list[float | None] = [0.15] * 12
    round_trips[6] = None  # an error, a timeout: when it arrived is not known
    departures, _, _, limiter = _calls_answered(any_engine, "unanswered", round_trips, fastest=0.15)
    uniform = 5 * limiter.spacing(FIVE_A_SECOND, "unanswered")
    assert departures[11] - departures[6] >= uniform - 1e-9


_property_runs = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 0.3),  # the way out, over its shortest
            st.floats(0.0, 0.3),  # the vendor's time and the way back, over their shortest
            st.floats(0.0, 0.05),  # how late the thread woke for its turn
        ),
        min_size=6,
        max_size=30,
    )
)
def test_one_in_flight_no_window_holds_more_calls_than_the_limit_whatever_the_delays(
    any_engine, delays: list[tuple[float, float, float]]
):
    """Any way out and back within what the fastest round trip (150 ms: 20 out, 130
    back) allows: the call 5 after any call arrives at least a window (1 s) after it."""
    outbound = [0.02 + out for out, _, _ in delays]
    round_trips: list[float | None] = [0.15 + out + back for out, back, _ in delays]
    _, _, arrivals, _ = _calls_answered(
        any_engine,
        f"any-delays-{next(_property_runs)}",
        round_trips,
        fastest=0.15,
        outbound=outbound,
        late_wakes=[wake for _, _, wake in delays],
    )
    arrivals.sort()
    assert all(b - a >= 1.0 for a, b in zip(arrivals, arrivals[5:], strict=False))


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.integers(2, 4),
    st.lists(
        st.tuples(
            st.floats(0.0, 0.15),  # how long the call is in flight
            st.floats(0.0, 0.3),  # how late its thread wakes for its turn, once
            st.floats(0.0, 0.01),  # then from the check to the write (half the margin)
        ),
        min_size=12,
        max_size=40,
    ),
)
@example(2, [(0.05, 0.0, 0.0)] * 3 + [(0.05, 0.08, 0.01)] + [(0.05, 0.0, 0.0)] * 12)
def test_several_in_flight_no_window_holds_more_calls_than_the_limit_whatever_the_wake_ups(
    any_engine, in_flight: int, calls: list[tuple[float, float, float]]
):
    """Several calls in flight on a fake clock (10 a second), each thread waking late for
    its turn by up to three spacings (moving the later turns on, or a fresh turn): the
    call 10 after any call leaves at least a window (1 s) after it."""
    from contextlib import ExitStack

    now = {"t": 1000.0}
    wake = {"late": 0.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds + wake["late"]
        wake["late"] = 0.0  # a thread stalls once

    # no jitter reserve on top of the fixed margin: the tightest spacing
    limiter = DbLimiter(
        any_engine,
        margin_seconds=0.02,
        initial_jitter_seconds=0.0,
        clock=lambda: now["t"],
        sleep=sleep,
    )
    limit = RateLimit(calls_per_second=10, max_in_flight=in_flight)
    account = f"late-wakes-{in_flight}-{next(_property_runs)}"
    departures: list[float] = []
    with ExitStack() as stack:
        open_calls: list[tuple[float, ExitStack]] = []
        for in_flight_for, late, to_write in calls:
            if len(open_calls) == in_flight:
                open_calls.sort(key=lambda c: c[0])
                answered, call = open_calls.pop(0)
                now["t"] = max(now["t"], answered)
                call.close()
            call = stack.enter_context(ExitStack())
            wake["late"] = late
            departure = call.enter_context(limiter.slot(account, limit))
            wake["late"] = 0.0
            left = now["t"] + to_write
            departure.departed(left)
            departures.append(left)
            open_calls.append((left + in_flight_for, call))
    departures.sort()
    assert all(b - a >= 1.0 for a, b in zip(departures, departures[10:], strict=False))


def test_one_in_flight_a_chain_of_hand_offs_places_each_call_by_its_own_answer(any_engine):
    """Calls queued on three threads (hand-offs, real time), 20 a second; call 8 is
    answered 60 ms late: only the call a window (20 calls) later waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    limiter = DbLimiter(any_engine)
    limit = RateLimit(calls_per_second=20, max_in_flight=1)
    for _ in range(AccountPace.MIN_FLOOR_SAMPLES):
        limiter.pace("chained").answered(0.002)
    departures: dict[int, float] = {}
    answers: dict[int, float] = {}
    lock = threading.Lock()

    def one(_: int) -> None:
        with limiter.slot("chained", limit) as departure:
            with lock:
                index = len(departures)
                departures[index] = time.time()
            departure.departed(departures[index])
            time.sleep(0.062 if index == 8 else 0.002)
            answers[index] = time.time()
            departure.answered(answers[index])

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, range(40)))
    assert limiter.handoffs > 20
    floor = limiter.pace("chained").floor
    assert floor is not None
    # every call leaves at least a window after the answer of the call 20 before it,
    # less the fastest round trip
    for i in range(len(departures) - 20):
        assert departures[i + 20] >= answers[i] - floor + 1.0, i
    # the late answer's 60 ms are kept free in its window only
    assert departures[28] - departures[8] >= 1.0 + 0.055


# ---- one in flight: a chain of hand-ons looks at the database about once a second


def _chain_on_a_fake_clock(
    engine,
    account: str,
    calls: int,
    limit: RateLimit,
    *,
    throttle_call: int | None = None,
    answer_after: float = 0.05,
):
    """One process, one in flight: a first call holds the slot until four threads are
    queued for the account, then the queued threads make ``calls`` calls, handed the
    slot from one to the next (a chain), each answered ``answer_after`` (50 ms) after it
    left, on a fake clock (only the slot's holder sleeps). Call ``throttle_call`` is answered throttled
    (1 s). -> (transactions begun once the first call had its turn, the limiter, per
    call: (when it left, the account's clock in the database while it was in flight))."""
    now = {"t": 1000.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    limiter = DbLimiter(engine, clock=lambda: now["t"], sleep=sleep)
    begun: list[object] = []
    seen: list[tuple[float, float]] = []
    lock = threading.Lock()
    remaining = itertools.count()

    # the test's own reads go through another engine: not counted
    reader = make_engine(engine.url.render_as_string(hide_password=False))

    def clock_in_db() -> float:
        with reader.connect() as conn:
            return float(
                conn.execute(
                    select(t.rate_limit_clock.c.next_free_at).where(
                        t.rate_limit_clock.c.account == account
                    )
                ).scalar_one()
            )

    def calling() -> None:
        while next(remaining) < calls:
            with limiter.slot(account, limit) as departure:
                left = now["t"]
                departure.departed(left)
                with lock:
                    index = len(seen)
                seen.append((left, clock_in_db()))
                now["t"] += answer_after
                if index == throttle_call:
                    departure.throttled(1.0)
                else:
                    departure.answered(now["t"])

    def count(*_args: object) -> None:
        begun.append(_args)

    threads = [threading.Thread(target=calling) for _ in range(4)]
    with limiter.slot(account, limit):
        stop_telling = tell_transactions(engine, "begin", count)
        for thread in threads:
            thread.start()
        while limiter._queued[account] < 4:
            time.sleep(0.001)
    try:
        for thread in threads:
            thread.join(60)
    finally:
        stop_telling()
        reader.dispose()
    return begun, limiter, seen


def test_one_in_flight_a_chain_of_hand_ons_within_a_second_touches_the_database_once(
    any_engine,
):
    """20 calls a second, 15 calls handed on (0.75 s of turns): the only transaction is
    the release that ends the chain (no lease renewal, no look for waiters)."""
    limit = RateLimit(calls_per_second=20, max_in_flight=1)
    begun, limiter, _ = _chain_on_a_fake_clock(any_engine, "cheap-chain", 15, limit)
    # the threads' scheduling can end the chain early (no thread queued yet when a call
    # ends): the chain after it costs a take and a release
    breaks = 15 - limiter.handoffs
    assert breaks <= 3
    assert limiter.local_handoffs == limiter.handoffs
    assert len(begun) <= 1 + 2 * breaks, (len(begun), breaks)


def test_one_in_flight_a_thread_handing_on_a_turn_well_ahead_goes_on_without_a_switch(
    any_engine, monkeypatch
):
    """5 calls a second, each answered 50 ms after it left: the turn handed on is some
    150 ms after the answer, so the handing thread goes on with its device instead of
    giving up the interpreter lock (a switch out and back, a wake-up a call)."""
    let_run: list[int] = []
    monkeypatch.setattr(limiter_module, "_let_run", lambda: let_run.append(1))
    limit = RateLimit(calls_per_second=5, max_in_flight=1)
    _, limiter, _ = _chain_on_a_fake_clock(any_engine, "far-turns", 8, limit)
    assert limiter.handoffs >= 5
    assert let_run == []


def test_one_in_flight_a_thread_handing_on_a_turn_due_now_lets_the_next_call_run_at_once(
    any_engine, monkeypatch
):
    """5 calls a second, each answered 300 ms after it left: the turn handed on is due at
    once, and the handing thread gives up the interpreter lock to the next call."""
    let_run: list[int] = []
    monkeypatch.setattr(limiter_module, "_let_run", lambda: let_run.append(1))
    limit = RateLimit(calls_per_second=5, max_in_flight=1)
    _, limiter, _ = _chain_on_a_fake_clock(any_engine, "due-turns", 8, limit, answer_after=0.3)
    assert limiter.handoffs >= 5
    # every hand-on but the set-up call's (it takes no time: its next turn is ahead)
    assert len(let_run) == limiter.handoffs - 1


def test_one_in_flight_a_long_chain_looks_at_the_database_about_once_a_second(any_engine):
    """5 calls a second, 45 calls (9 s of turns): a look (a transaction) a second of
    turns, each second counted from the call the last look was made in (so one more),
    and the release that ends the chain; not one a call."""
    limit = RateLimit(calls_per_second=5, max_in_flight=1)
    begun, limiter, seen = _chain_on_a_fake_clock(any_engine, "long-chain", 45, limit)
    # a chain that ends early (see above) and starts again costs a release and a take
    breaks = 45 - limiter.handoffs
    assert breaks <= 3
    turns_seconds = seen[-1][0] - seen[0][0]
    assert len(begun) <= turns_seconds + 3 + 2 * breaks, (len(begun), turns_seconds, breaks)


def test_one_in_flight_a_throttled_answer_in_a_chain_pushes_the_databases_clock_at_once(
    any_engine,
):
    limit = RateLimit(calls_per_second=5, max_in_flight=1)
    _, limiter, seen = _chain_on_a_fake_clock(
        any_engine, "throttled-chain", 6, limit, throttle_call=2
    )
    assert limiter.throttled == 1
    throttled_answer = seen[2][0] + 0.05
    # the call handed the slot after the throttled one: the clock in the database
    # already holds every other process's turn back by the penalty (1 s)
    assert seen[3][1] >= throttled_answer + 1.0 - 1e-6
    assert seen[3][0] >= throttled_answer + 1.0 - 1e-6
