"""Each account's call budget, shared through the AMOP database.

Every op, run, process and host that calls an account goes through the same two rows:
- the clock (one row per account): the earliest moment the next call may start. Taking a
  turn moves it on by one interval in a single atomic UPDATE ... RETURNING, so calls start
  at most ``calls_per_second`` a second wherever they come from;
- the slots (``max_in_flight`` rows per account): a call holds one, with a lease, while it
  is in flight. A process that dies holding one loses it when the lease expires;
- the waiters: callers that found no free slot, served oldest first (fair sharing of an
  account between runs).
"""

from __future__ import annotations

import atexit
import math
import socket
import threading
import time
import uuid
import weakref
from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, bindparam, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound

from bulk_changes.db import schema as t
from bulk_changes.db.driver_statements import DriverStatement, InTransaction
from bulk_changes.db.driver_transactions import lean_transaction
from bulk_changes.domain.settings import RateLimit
from bulk_changes.processes import ProcessIdentity

# The statements of every call, built once (building and keying them per call was a
# tenth of a run worker's CPU under py-spy), and executed on the driver's cursor inside
# SQLAlchemy's transaction (db/driver_statements.py): through SQLAlchemy's execution each
# cost about 45 us of CPU, and a turn's transaction runs four or five of them. The
# transactions of a call's turn are on the driver too (db/driver_transactions.py): the
# Connection of ``engine.begin()`` cost more than their statements and commit together.
_FOREVER = float("inf")
_clock, _slots, _waiters = t.rate_limit_clock.c, t.rate_limit_slots.c, t.rate_limit_waiters.c
_CLOCK_LOCKED = DriverStatement(
    select(_clock.next_free_at).where(_clock.account == bindparam("b_account")).with_for_update()
)
_WAITERS_AHEAD = DriverStatement(
    select(func.count()).where(
        _waiters.account == bindparam("b_account"),
        _waiters.holder != bindparam("b_holder"),
        _waiters.expires_at >= bindparam("b_now"),
        _waiters.since < bindparam("b_since"),
    )
)
_FREE_SLOTS = DriverStatement(
    select(_slots.slot)
    .where(
        _slots.account == bindparam("b_account"),
        (_slots.holder.is_(None)) | (_slots.expires_at < bindparam("b_now")),
    )
    .order_by(_slots.slot)
    .limit(bindparam("b_n"))
)
_TAKE_SLOT = DriverStatement(
    update(t.rate_limit_slots)
    .where(_slots.account == bindparam("b_account"), _slots.slot == bindparam("b_slot"))
    .values(holder=bindparam("b_holder"), expires_at=bindparam("b_expires"))
)
_SET_CLOCK = DriverStatement(
    update(t.rate_limit_clock)
    .where(_clock.account == bindparam("b_account"))
    .values(next_free_at=bindparam("b_next_free"))
)
_HELD_SLOT = update(t.rate_limit_slots).where(
    _slots.account == bindparam("b_account"),
    _slots.slot == bindparam("b_slot"),
    _slots.holder == bindparam("b_holder"),
)
_KEEP_SLOT = DriverStatement(_HELD_SLOT.values(expires_at=bindparam("b_expires")))
_FREE_SLOT = DriverStatement(_HELD_SLOT.values(holder=None, expires_at=0.0))
# a caller waiting for a slot (see _take_slot_and_turn)
_waiter = (_waiters.account == bindparam("b_account"), _waiters.holder == bindparam("b_holder"))
_DROP_WAITER = DriverStatement(delete(t.rate_limit_waiters).where(*_waiter))
_ADD_WAITER = DriverStatement(insert(t.rate_limit_waiters))
_RENEW_WAITER = DriverStatement(update(t.rate_limit_waiters).where(*_waiter))
_CLOCK_NOT_BEFORE = DriverStatement(
    update(t.rate_limit_clock)
    .where(
        _clock.account == bindparam("b_account"), _clock.next_free_at < bindparam("b_not_before")
    )
    .values(next_free_at=bindparam("b_not_before"))
)

# Every turn not yet handed out moves on by ``b_push`` (an idle clock too: turns are never
# before the moment they are taken anyway)
_CLOCK_ADD = DriverStatement(
    update(t.rate_limit_clock)
    .where(_clock.account == bindparam("b_account"))
    .values(next_free_at=_clock.next_free_at + bindparam("b_push"))
)

# Every turn not yet handed out moves on by ``b_push`` (from now, if the clock is idle)
_CLOCK_PUSH = DriverStatement(
    update(t.rate_limit_clock)
    .where(_clock.account == bindparam("b_account"))
    .values(
        next_free_at=case(
            (_clock.next_free_at > bindparam("b_now"), _clock.next_free_at),
            else_=bindparam("b_now"),
        )
        + bindparam("b_push")
    )
)


def _one(conn: InTransaction, statement: DriverStatement, params: dict[str, Any]) -> Any:
    """The one value a SELECT of one row and column finds (SQLAlchemy's ``scalar_one``)."""
    found = statement.column(conn, params)
    if not found:
        raise NoResultFound("No row was found when one was required")
    if len(found) > 1:
        raise MultipleResultsFound("Multiple rows were found when exactly one was required")
    return found[0]


def _first(conn: InTransaction, statement: DriverStatement, params: dict[str, Any]) -> Any:
    """The first value a SELECT finds, None if none (SQLAlchemy's ``scalar``)."""
    found = statement.column(conn, params)
    return found[0] if found else None


MAX_RETAKES = 3
# A turn handed on at least this far ahead does not need the handing thread to give up
# the interpreter lock at once (twice Python's switch interval).
_YIELD_UNLESS_AHEAD = 0.01


def _let_run() -> None:
    """Give up the interpreter lock so that another thread runs now."""
    time.sleep(0)


# One call in flight, a chain of this process's calls: how far the account's clock moves
# on from each turn it hands on. The chain places its next turn itself (_next_turn), call
# by call; the clock only has to stay behind it, and a successor from another process is
# placed by the chain's horizon when the slot is freed (_release, _horizon).
CHAIN_STEP = 0.0
# the calls of a chain of one process's calls kept to place the next turns by
CHAIN_MEMORY = 64

# One call of a chain: when it counted from (its turn or its departure), and when its
# successful answer came back (None: no such answer, or none timed)
_Call = tuple[float, float | None]
# seconds the account waits after a dead holder's slot was given back (see
# release_dead_holders)
DEAD_HOLDER_PAUSE = 1.0


class _TurnRun:
    """Several in flight: consecutive turns of the account's clock taken in one
    transaction for this process's calls (see ``DbLimiter._take_turns``): the turn ``i``
    is ``first + i * spacing``, ``next`` the first not yet handed out."""

    __slots__ = ("first", "spacing", "next", "count", "taken_at", "leased_until")

    def __init__(
        self, first: float, spacing: float, count: int, taken_at: float, leased_until: float
    ) -> None:
        self.first, self.spacing, self.next, self.count = first, spacing, 0, count
        # every slot of the account this process held, leased until then at least
        self.taken_at, self.leased_until = taken_at, leased_until

    def left(self) -> int:
        return self.count - self.next


class Departure:
    """What ``slot`` yields: the caller tells it when its request really left, when a
    successful answer came back, and whether the answer was a throttled one."""

    __slots__ = ("at", "answered_at", "throttled_for")

    def __init__(self) -> None:
        self.at: float | None = None
        self.answered_at: float | None = None
        self.throttled_for: float | None = None

    def departed(self, at: float) -> None:
        self.at = at

    def answered(self, at: float) -> None:
        self.answered_at = at

    def throttled(self, seconds: float) -> None:
        self.throttled_for = seconds


class AccountPace:
    """How far apart one account's calls must leave, learnt in this process.

    The vendor counts a call when it arrives, and the network delays each call by a
    varying amount: two calls that left a spacing apart can arrive closer. Two ways to
    keep every vendor window whole:

    - call by call, where this process knows the call a window's worth before (one call
      in flight, see ``DbLimiter._after_window``): a call arrives no later than its answer
      came back less the fastest round trip of the account (``floor``), so the call a
      window's worth later leaves a window after that;
    - a reserve the same for every call, where it does not (the account's clock, shared
      with other processes): the variation of the round trips of recent successful calls
      bounds the variation of their way out (the way back and the vendor's own time only
      add to it), so the spread of the round trips (5th to 95th percentile) is kept free
      in every window, as long as the account has answered enough calls to tell; before
      that, ``initial_jitter`` is.

    On top of both, a throttled answer widens the account's spacing by ``widen`` seconds
    a window, and each call answered without throttling narrows it back by
    ``widen / narrow_calls``."""

    SAMPLES = 64
    MIN_SAMPLES = 16
    # The fastest round trip is looked for among the last FLOOR_SAMPLES answers (50 s at
    # five a second), and trusted once there are MIN_FLOOR_SAMPLES of them.
    FLOOR_SAMPLES = 256
    MIN_FLOOR_SAMPLES = 32

    def __init__(
        self,
        initial_jitter: float,
        max_jitter: float,
        widen: float,
        narrow_calls: int,
        max_extra: float,
    ) -> None:
        self.initial_jitter = initial_jitter
        self.max_jitter = max_jitter
        self.widen_by = widen
        self.narrow_by = widen / max(1, narrow_calls)
        self.max_extra = max_extra
        # The spread and the fastest are kept up to date call by call, not recomputed
        # from all the samples: sorting 64 and scanning 256 at every answer was the
        # largest Python cost of a call at the limits after the limiter's transactions.
        # the last SAMPLES round trips, in arrival order and sorted
        self._rtts: deque[float] = deque()
        self._sorted_rtts: list[float] = []
        # round trips answered so far, and the candidates for the fastest of the last
        # FLOOR_SAMPLES: (its number, the round trip), increasing in both (a round trip
        # with a faster one after it can never be the fastest again)
        self._answers = 0
        self._fastest: deque[tuple[int, float]] = deque()
        self.jitter = initial_jitter
        self.extra = 0.0
        # the fastest recent round trip; None until enough are known
        self.floor: float | None = None

    def answered(self, rtt: float) -> None:
        ordered = self._sorted_rtts
        self._rtts.append(rtt)
        if len(self._rtts) > self.SAMPLES:
            del ordered[bisect_left(ordered, self._rtts.popleft())]
        insort(ordered, rtt)
        if len(ordered) >= self.MIN_SAMPLES:
            low = ordered[int(0.05 * (len(ordered) - 1))]
            high = ordered[int(round(0.95 * (len(ordered) - 1)))]
            self.jitter = min(self.max_jitter, high - low)
        self._answers += 1
        fastest = self._fastest
        while fastest and fastest[-1][1] >= rtt:
            fastest.pop()
        fastest.append((self._answers, rtt))
        if fastest[0][0] <= self._answers - self.FLOOR_SAMPLES:
            fastest.popleft()  # older than the last FLOOR_SAMPLES
        if self._answers >= self.MIN_FLOOR_SAMPLES:
            self.floor = fastest[0][1]
        self.extra = max(0.0, self.extra - self.narrow_by)

    def throttled(self) -> None:
        self.extra = min(self.max_extra, self.extra + self.widen_by)


def _give_back_at_exit(ref: weakref.ReferenceType[DbLimiter]) -> None:
    """At the interpreter's exit, the slots a limiter parked go back to the account at
    once (a process killed leaves them to a waiter on this host or to their lease)."""
    limiter = ref()
    if limiter is None:
        return
    with suppress(Exception):
        limiter.give_back_parked()


def _result_or_none(future: Future[float | None] | None) -> float | None:
    """A turn taken ahead, or None if none was taken or taking it failed (the release
    then frees the slot as usual)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:
        return None


class DbLimiter:
    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = 120.0,
        margin_seconds: float = 0.02,
        poll_seconds: float = 0.02,
        waiter_lease_seconds: float = 2.0,
        max_handoffs: int = 50,
        chain_check_seconds: float = 1.0,
        contended_seconds: float = 5.0,
        reclaim_every: float = 1.0,
        initial_jitter_seconds: float = 0.05,
        max_jitter_seconds: float = 0.25,
        widen_seconds: float = 0.05,
        narrow_calls: int = 200,
        max_extra_seconds: float = 0.5,
        park_seconds: float = 0.5,
        batch_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        # Calls leave a little further apart than the budget allows: the vendor counts
        # arrivals in its window, and the network can bring calls closer together than
        # they left. Spread over the calls of one window, ``margin_seconds`` of arrival
        # jitter is absorbed: 20 ms costs 2% of a 5-a-second budget, 0.03% of 500 a minute.
        self.margin_seconds = margin_seconds
        self.poll_seconds = poll_seconds
        self.waiter_lease_seconds = waiter_lease_seconds
        self.clock = clock
        self.sleep = sleep
        self._holder_prefix = f"{holder_prefix(ProcessIdentity.current())}{uuid.uuid4().hex[:8]}"
        # Several in flight, turns taken ahead: every slot of the account this limiter
        # holds (not run out) leased until ``b_until`` at least (see _hand_on). Built once:
        # built and keyed per batch, it cost more than the transaction's other statements.
        self._extend_leases = DriverStatement(
            update(t.rate_limit_slots)
            .where(
                _slots.account == bindparam("b_account"),
                _slots.holder.startswith(self._holder_prefix, autoescape=True),
                _slots.expires_at >= bindparam("b_now"),
                _slots.expires_at < bindparam("b_until"),
            )
            .values(expires_at=bindparam("b_until"))
        )
        # when the holders of a full account were last checked for dead processes
        self._reclaim_checked: dict[str, float] = {}
        self.reclaim_every = reclaim_every
        self.reclaimed = 0
        self._pace_settings = (
            initial_jitter_seconds,
            max_jitter_seconds,
            widen_seconds,
            narrow_calls,
            max_extra_seconds,
        )
        self._paces: dict[str, AccountPace] = {}
        # account -> (when a throttled answer came, until when the account is penalized):
        # a turn taken before it moves on by the penalty, wherever it is in the queue
        self._penalties: dict[str, tuple[float, float]] = {}
        # one-in-flight accounts: the calls of the current chain of this process's calls
        # (see _next_turn)
        self._chains: dict[str, deque[_Call]] = {}
        # the clock as this process left it when it last freed the account's slot, and
        # where its own chain would have placed its next call (None: the clock decides)
        self._left_clock: dict[str, float] = {}
        self._own_next: dict[str, float | None] = {}
        self.throttled = 0
        self._local_gates: dict[str, threading.BoundedSemaphore] = {}
        self._gates_lock = threading.Lock()
        self._known_accounts: set[tuple[str, int]] = set()
        # one-in-flight accounts: the slot handed from one thread of this process to the
        # next without taking it again (see slot); bounded so other runs get their turn
        self.max_handoffs = max_handoffs
        # One-in-flight chains: the database (waiters, the slot's lease) is looked at by a
        # hand-on only when its next turn is ``chain_check_seconds`` or more after the
        # chain's last look, or the slot's lease would not cover the next call; other
        # hand-ons stay in this process. While the account is contended (this process
        # waited for it, or a look found another run waiting, within
        # ``contended_seconds``), every hand-on looks, so runs take turns call by call.
        self.chain_check_seconds = chain_check_seconds
        self.contended_seconds = contended_seconds
        self._contended_until: dict[str, float] = {}
        self._local = threading.Lock()
        self._queued: Counter[str] = Counter()
        # account -> the slots handed on (one in flight: at most one): (holder, slot, its
        # start, hand-ons so far in the chain, when the chain last looked at the database,
        # until when the slot is leased, when it was handed on)
        self._handed: dict[str, deque[tuple[str, int, float, int, float, float, float]]] = {}
        # account -> slots handed on or being handed on, not yet taken by a thread: never
        # more than the threads queued for the account, so none is left behind
        self._promised: Counter[str] = Counter()
        self._reserving_thread: ThreadPoolExecutor | None = None
        self.handoffs = 0
        # hand-ons that did not touch the database
        self.local_handoffs = 0
        self.retakes = 0
        # several in flight: late calls that moved the later turns on instead of retaking
        self.late_pushes = 0
        self.waited_seconds = 0.0
        self.calls = 0
        # Several in flight (see docs/reliability.md, "Several in flight: a slot parked
        # and turns taken ahead"): a slot whose call ended with no thread of this process
        # queued for it stays this process's for ``park_seconds`` (parked, given back
        # after that by the keeper thread), and a transaction that takes a turn takes the
        # next turns for this process's next calls too, as many as fit in
        # ``batch_seconds`` and keep the account's late-call bound (_batch_room).
        self.park_seconds = park_seconds
        self.batch_seconds = batch_seconds
        # account -> slots parked: (holder, slot, hand-ons so far, leased until, since)
        self._parked: dict[str, deque[tuple[str, int, int, float, float]]] = {}
        # account -> runs of turns taken ahead, oldest first
        self._turns: dict[str, deque[_TurnRun]] = {}
        # account -> the slots of the account this process holds in the database
        # (several in flight: in use, handed on or parked)
        self._held: Counter[str] = Counter()
        # account -> the turns a held slot may carry (see _batch_room)
        self._per_slot: dict[str, int] = {}
        # account -> until when every slot of the account this process holds is leased
        # at least (see _hand_on)
        self._all_leased: dict[str, float] = {}
        self._keeper: threading.Thread | None = None
        self._keeper_wake = threading.Event()
        self.parks = 0
        self.turns_ahead = 0
        self.given_back = 0
        # several in flight: slots taken for a turn taken ahead (see _slot_for_turn_ahead)
        self.slots_for_turns_ahead = 0
        atexit.register(_give_back_at_exit, weakref.ref(self))

    # ---- public --------------------------------------------------------------------

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[Departure]:
        """Hold one of the account's in-flight slots for a call that starts at its turn.
        ``lease_seconds``: how long after its start the call can still be in flight; a
        process that dies holding the slot loses it then (default: the limiter's).

        The caller says when its request left (``Departure.departed``), if it knows: a
        request that left late, the thread stalled between its turn and the write, moves
        the next turns on (one in flight: counted from the departure; several: the clock
        pushed by the lateness), so the vendor never sees the calls after it crowd its
        window."""
        gate = self._gate(account_name, limit)
        lease = lease_seconds or self.lease_seconds
        started = self.clock()
        with self._local:
            self._queued[account_name] += 1
        handed_on = False
        handed_start = 0.0
        # a slot promised to a queued thread by this call (see _promise_hand_on)
        promised = False
        gate.acquire()  # threads of this process queue here, not in the database
        try:
            with self._local:
                self._queued[account_name] -= 1
                waiting_slots = self._handed.get(account_name)
                handed = waiting_slots.popleft() if waiting_slots else None
                if handed is not None:
                    self._promised[account_name] -= 1
            one = limit.max_in_flight == 1
            # one in flight, the slot is leased for the calls a chain hands on without
            # renewing the lease too (see _must_look); several, for the turns taken ahead
            # and a slot parked (see _take_turns)
            granted = lease + self._lease_pad()
            if handed is None and not one:
                handed = self._unpark(account_name, limit, lease, granted)
                if handed is None:
                    handed = self._slot_for_turn_ahead(account_name, limit, granted)
            if handed is None:
                self._ensure_rows(account_name, limit)
                holder, slot, start_at, found = self._take_slot_and_turn(
                    account_name, limit, granted
                )
                if not one:
                    with self._local:
                        self._held[account_name] += 1
                chain = 0
                looked_at, leased_until = self.clock(), start_at + granted
                history: deque[_Call] | None = self._chains.get(account_name)
                if history is None or self._left_clock.get(account_name) != found:
                    # another process took a turn since this one's last call: the calls
                    # before are not all known
                    history = self._chains[account_name] = deque(maxlen=CHAIN_MEMORY)
            else:
                holder, slot, start_at, chain, looked_at, leased_until, handed_at = handed
                history = self._chains.setdefault(account_name, deque(maxlen=CHAIN_MEMORY))
            # a handed-on turn was taken when it was handed on: a penalty since moves it
            taken_at = self.clock() if handed is None else handed_at
            sent_at = start_at
            not_before = start_at + self.spacing(limit, account_name)
            departure = Departure()
            reserving: Future[float | None] | None = None
            try:
                for retake in range(MAX_RETAKES + 1):
                    while True:  # a throttled answer while waiting moves the turn on
                        start_at, taken_at = self._past_penalty(account_name, start_at, taken_at)
                        wait = start_at - self.clock()
                        if wait <= 0:
                            break
                        self.sleep(wait)
                    sent_at = self.clock()
                    # Several in flight: a call that leaves late would crowd the vendor
                    # window of the call a window's worth of turns later. Fewer turns than
                    # that are handed out ahead of it (one a slot), so moving every turn
                    # not yet handed out on by the lateness keeps that window whole, and
                    # the call leaves at once (see _push_late). A lateness of more than a
                    # spacing takes a fresh turn instead, so a stalled thread does not
                    # hold the whole account up. One in flight: the next turn is taken
                    # after this call, from its real start.
                    late = sent_at - start_at
                    if (
                        limit.max_in_flight == 1
                        or late <= self.margin_seconds / 2
                        or retake == MAX_RETAKES
                    ):
                        break
                    if self._may_push_late(limit, late, account_name):
                        start_at = self._push_late(account_name, start_at)
                        self.late_pushes += 1
                    else:
                        # a turn taken ahead that is still to come, else a fresh one
                        ahead = self._turn_ahead(account_name, leased_until, lease)
                        if ahead is not None:
                            start_at, taken_at = ahead
                        else:
                            start_at = self._retake_turn(account_name, limit, slot, holder, lease)
                        self.retakes += 1
                self.waited_seconds += sent_at - started
                self.calls += 1
                not_before = self._next_turn(
                    history if one else None, self._anchor(start_at, sent_at), limit, account_name
                )
                # One call in flight and a thread of this process waiting for the next: the
                # next call is handed the slot in this process, its turn placed by the
                # chain. If the chain must look at the database for it (see _must_look),
                # it does so while this call is in flight (unless another run is waiting:
                # it goes first), so no database round trip stands between this call's
                # answer and the next call.
                looking_at = looked_at
                if (
                    one
                    and self._may_hand_on(account_name, limit, chain)
                    and self._must_look(account_name, looked_at, leased_until, not_before, lease)
                ):
                    looking_at = self.clock()
                    reserving = self._reserver().submit(
                        self._reserve_next_turn,
                        account_name,
                        slot,
                        holder,
                        not_before,
                        CHAIN_STEP,
                        granted,
                    )
                yield departure
            finally:
                push = 0.0
                pace = self.pace(account_name)
                penalty_push = 0.0
                if departure.throttled_for is not None:
                    # Every turn of the account already taken moves on by the penalty (in
                    # this process: _past_penalty; the turns not yet taken: the clock's
                    # push), and the account's spacing widens.
                    now = self.clock()
                    until = now + departure.throttled_for
                    with self._local:
                        issued, before = self._penalties.get(account_name, (0.0, 0.0))
                        self._penalties[account_name] = (now, max(until, before))
                        self.throttled += 1
                    pace.throttled()
                    not_before = max(not_before, until)
                    penalty_push = departure.throttled_for
                answered: float | None = None
                if departure.throttled_for is None and departure.at is not None:
                    answered = departure.answered_at
                    if answered is not None:
                        pace.answered(answered - departure.at)
                counted = self._anchor(start_at, sent_at)
                if departure.at is not None:
                    late = departure.at - start_at
                    if one:
                        counted = self._anchor(start_at, departure.at)
                        not_before = max(
                            not_before, self._next_turn(history, counted, limit, account_name)
                        )
                    elif late > self.margin_seconds / 2:
                        # the turns up to a window's worth on are handed out already: all
                        # later turns move on by the lateness, half the margin kept
                        push = late - self.margin_seconds / 2
                push = max(push, penalty_push)
                if one:
                    history.append((counted, answered))
                reserved = _result_or_none(reserving)
                hand_on = promised = self._promise_hand_on(account_name, limit, chain)
                # a throttled answer's push reaches the account's clock at once
                throttled = departure.throttled_for is not None
                if throttled and not one:
                    self._drop_turns(account_name)
                next_start: float | None = None
                # several in flight, nothing out of the way (no throttled answer, no late
                # departure, nobody else waiting lately): the slot stays this process's
                calm = (
                    not one
                    and not throttled
                    and push <= 0
                    and chain < self.max_handoffs
                    and not self._is_contended(account_name)
                )
                ahead = (
                    self._turn_ahead(account_name, leased_until, lease)
                    if calm and hand_on
                    else None
                )
                ahead_taken: float | None = None
                if hand_on and not throttled and reserved is not None:
                    next_start = max(reserved, not_before, self.clock())
                    looked_at, leased_until = looking_at, reserved + granted
                elif (
                    one
                    and hand_on
                    and not throttled
                    and reserving is None
                    and not self._must_look(
                        account_name,
                        looked_at,
                        leased_until,
                        max(not_before, self.clock()),
                        lease,
                    )
                ):
                    # handed on in this process: the database was looked at less than
                    # chain_check_seconds before this turn, and the lease covers it
                    next_start = max(not_before, self.clock())
                    self.local_handoffs += 1
                elif ahead is not None:
                    # several in flight: handed on with a turn taken ahead, in this process
                    next_start, ahead_taken = ahead
                    self.local_handoffs += 1
                elif calm and not hand_on:
                    # several in flight, no thread of this process queued: parked for the
                    # next call of this process (given back if none comes, see _park)
                    self._park(account_name, holder, slot, chain, leased_until)
                else:
                    # the turn taken ahead (if any) goes unused: it only delays a later call
                    looking_at = self.clock()
                    try:
                        next_start = self._release(
                            account_name,
                            slot,
                            holder,
                            # the next holder may be another process, pacing call by call:
                            # the clock starts it where that pacing keeps every window
                            max(not_before, self._horizon(history, limit, account_name))
                            if one
                            else not_before,
                            hand_on_lease=(
                                granted if hand_on and (reserving is None or throttled) else None
                            ),
                            # several in flight: the next turn from the clock, as a fresh one
                            spacing=CHAIN_STEP if one else self.spacing(limit, account_name),
                            push=push,
                            own_next=not_before if one else None,
                            limit=limit,
                        )
                    finally:
                        if not one and next_start is None:
                            self._let_go(account_name)  # given back (or lost)
                    if next_start is not None:
                        looked_at, leased_until = looking_at, next_start + granted
                if next_start is not None:
                    with self._local:
                        # this thread's permit of the gate is still held: a thread queued
                        # for the account passes the gate with it and finds this
                        self._handed.setdefault(account_name, deque()).append(
                            (
                                holder,
                                slot,
                                next_start,
                                chain + 1,
                                looked_at,
                                leased_until,
                                ahead_taken if ahead_taken is not None else self.clock(),
                            )
                        )
                        self.handoffs += 1
                        handed_on, promised = True, False
                        handed_start = next_start
        finally:
            if promised:  # given back after all, or the database failed
                with self._local:
                    self._promised[account_name] -= 1
            gate.release()
        if handed_on and handed_start - self.clock() <= _YIELD_UNLESS_AHEAD:
            # Let the thread just handed the turn run now: otherwise it waits for the
            # interpreter lock while this one goes on with its device (up to the switch
            # interval, measured 1.1 ms on average, on the account's critical path). A
            # turn further ahead than that is not on the critical path: the thread handed
            # it gets the lock long before, and this one is spared a switch out and back
            # (a wake-up a call at the documented limits: one in flight, the next turn is
            # a spacing after this call's; several, a slot's turns are the account's
            # turns of the slots' calls in flight apart, or taken ahead).
            _let_run()

    @staticmethod
    def _per_window(limit: RateLimit) -> int:
        return int(limit.calls_per_window + 1e-9)

    def _next_turn(
        self, history: deque[_Call] | None, counted: float, limit: RateLimit, account_name: str
    ) -> float:
        """The earliest turn of the call after one that counted from ``counted``.

        The vendor counts calls in a sliding window: what must hold is that the call n
        after any call arrives at least a window after it (n: the calls of a window).
        One in flight, a call answered late leaves late, and pacing each call a spacing
        after the one before would lose that lateness for good; placed by the call n
        before it (``_after_window``), the next call makes up for it (``history``: this
        process's chain of calls, before this one). Until the chain holds n calls, the
        calls before it are not known: a spacing after this one."""
        n = self._per_window(limit)
        if history is None or n < 2 or len(history) < n - 1:
            return counted + self.spacing(limit, account_name)
        return max(counted, self._after_window(history[-(n - 1)], limit, account_name))

    def _after_window(self, call: _Call, limit: RateLimit, account_name: str) -> float:
        """The earliest departure of the call n after ``call`` (n: the calls of a window)
        that keeps the window holding both from holding n + 1 arrivals.

        A call arrives at the vendor after its way out, and its answer comes back after
        the vendor's own time and the way back, each at least its own shortest. So the
        call arrived no later than its answer less the account's fastest round trip
        (``AccountPace.floor``), and a call that leaves a window after that arrives a
        window after it, whatever the network did to either: the reserve is the call's
        own excess over the fastest round trip, not a spread kept free for every call.
        The vendor's time counts in that excess though it delays no arrival, and our own
        lateness reading the answer too: both only make the bound safer. On top: half the
        fixed margin (the fastest round trip seen can be a little above the true fastest)
        and what throttled answers added.

        Not answered (a throttled answer, an error, no departure time), or too few round
        trips known to tell the fastest: the spread reserve, the same for every call."""
        counted, answered = call
        n = self._per_window(limit)
        pace = self.pace(account_name)
        floor = pace.floor
        if answered is None or floor is None:
            return counted + n * self.spacing(limit, account_name)
        reserve = self.margin_seconds / 2 + pace.extra
        return (
            max(counted, answered - floor)
            + n * limit.interval
            + reserve * n / max(1.0, limit.calls_per_window)
        )

    def _horizon(self, history: deque[_Call], limit: RateLimit, account_name: str) -> float:
        """Where a successor pacing call by call from the clock may start, so that each
        of its first calls still leaves a window after the call n before it (the last
        calls of this chain may have made up for a late one, closer than a spacing).

        The successor (another process, or this one after a new turn from the clock)
        spaces its calls at least the spacing with the fixed margin alone."""
        n = self._per_window(limit)
        recent = list(history)[-n:]
        if len(recent) < n or n < 2:
            spacing = self.spacing(limit, account_name)
            return max(
                (at + (len(recent) - i) * spacing for i, (at, _) in enumerate(recent)),
                default=0.0,
            )
        least = self.spacing(limit)
        return max(
            self._after_window(call, limit, account_name) - i * least
            for i, call in enumerate(recent)
        )

    def _past_penalty(
        self, account_name: str, start_at: float, taken_at: float
    ) -> tuple[float, float]:
        """A turn taken at ``taken_at`` for ``start_at``, moved on by the penalty of a
        throttled answer that came after it was taken: -> (its start, since when it is
        known). The turns taken before keep their order and spacing, all after the
        penalty."""
        penalty = self._penalties.get(account_name)
        if penalty is None or penalty[0] <= taken_at:
            return start_at, taken_at
        issued, until = penalty
        return max(until, start_at + (until - issued)), issued

    def _may_hand_on(self, account_name: str, limit: RateLimit, chain: int) -> bool:
        """A thread of this process queued for the account that no slot handed on is
        promised to yet, and the chain of hand-offs not yet so long that other runs
        should get a chance."""
        with self._local:
            return (
                self._queued[account_name] > self._promised[account_name]
                and chain < self.max_handoffs
            )

    def _promise_hand_on(self, account_name: str, limit: RateLimit, chain: int) -> bool:
        """``_may_hand_on``, and if so this slot is promised to a queued thread (until it
        is handed on, or given back after all)."""
        with self._local:
            if (
                self._queued[account_name] > self._promised[account_name]
                and chain < self.max_handoffs
            ):
                self._promised[account_name] += 1
                return True
            return False

    def _lease_pad(self) -> float:
        """How much longer than its call a chain's slot is leased: the calls handed on
        in this process until the chain looks at the database again start up to
        ``chain_check_seconds`` after the turn the lease was renewed for."""
        return 2 * self.chain_check_seconds

    def _must_look(
        self,
        account_name: str,
        looked_at: float,
        leased_until: float,
        next_start: float,
        lease: float,
    ) -> bool:
        """Whether the hand-on of a chain to a call starting at ``next_start`` must look at
        the database (another run waiting, the slot still this process's, its lease
        renewed): the chain last looked ``chain_check_seconds`` or more before that turn,
        the lease would not cover that call (``lease`` from its start), or the account
        is contended (see ``contended_seconds``)."""
        return (
            next_start - looked_at >= self.chain_check_seconds
            or next_start + lease > leased_until
            or self.clock() < self._contended_until.get(account_name, -_FOREVER)
        )

    def _contended(self, account_name: str) -> None:
        """Another run wants the account: every hand-on looks at the database for a while."""
        self._contended_until[account_name] = self.clock() + self.contended_seconds
        self._drop_turns(account_name)

    def _reserver(self) -> ThreadPoolExecutor:
        with self._local:
            if self._reserving_thread is None:
                self._reserving_thread = ThreadPoolExecutor(1, thread_name_prefix="next-turn")
            return self._reserving_thread

    def _reserve_next_turn(
        self,
        account_name: str,
        slot: int,
        holder: str,
        not_before: float,
        spacing: float,
        lease: float,
    ) -> float | None:
        """The holder's next turn, its slot kept: -> its start; None when another run
        is waiting for the account (or the slot was lost)."""
        with lean_transaction(self.engine) as conn:
            return self._hand_on(conn, account_name, slot, holder, not_before, spacing, lease)

    def _hand_on(
        self,
        conn: InTransaction,
        account_name: str,
        slot: int,
        holder: str,
        not_before: float,
        spacing: float,
        lease: float,
        *,
        limit: RateLimit | None = None,
        runs: list[_TurnRun] | None = None,
    ) -> float | None:
        """The holder's next turn, its slot kept and its lease extended (the account's
        clock locked first): -> its start; None when another run waits for the account
        or the slot is no longer the holder's. With ``runs`` (several in flight), the
        turns after it that ``_batch_room`` allows are taken for this process too and
        appended to ``runs`` as one run, to be queued once the transaction commits."""
        next_free = _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
        waiting = _one(
            conn,
            _WAITERS_AHEAD,
            {"b_account": account_name, "b_holder": "", "b_now": self.clock(), "b_since": _FOREVER},
        )
        if waiting:
            self._contended(account_name)
            return None
        extra = (
            self._batch_room(account_name, limit, spacing)
            if runs is not None and limit is not None
            else 0
        )
        start_at, kept = self._turn_keeping_slot(
            conn,
            account_name,
            slot,
            holder,
            max(float(next_free), not_before),
            spacing,
            lease,
            extra,
        )
        if kept and extra and runs is not None:
            # the process's other slots may take these turns: their leases cover them too
            # (only rows still this limiter's and not run out are extended)
            now = self.clock()
            self._extend_leases.execute(
                conn, {"b_account": account_name, "b_now": now, "b_until": start_at + lease}
            )
            runs.append(_TurnRun(start_at + spacing, spacing, extra, now, start_at + lease))
        return start_at if kept else None

    # ---- several in flight: slots parked, turns taken ahead ------------------------

    def _is_contended(self, account_name: str) -> bool:
        return self.clock() < self._contended_until.get(account_name, -_FOREVER)

    def _batch_room(self, account_name: str, limit: RateLimit, spacing: float) -> int:
        """How many turns after the one being taken this process may take ahead now.

        With n the calls of a window and m the account's slots, each slot this process
        holds in the database carries at most ``n // m`` turns taken and not yet used
        (the one of its call included), so all processes together never have more than
        n (the bound a late call's push relies on, see _push_late): the turns queued here
        stay within ``(n // m - 1)`` times the slots held. And no more than fit in
        ``batch_seconds``: another run that waits for the account is kept out no longer
        than that by turns taken ahead. None while the account is contended."""
        per_slot = max(1, self._per_window(limit) // max(1, limit.max_in_flight))
        self._per_slot[account_name] = per_slot
        if per_slot < 2 or spacing <= 0 or self._is_contended(account_name):
            return 0
        with self._local:
            held = max(1, self._held[account_name])
            queued = sum(run.left() for run in self._turns.get(account_name, ()))
        room = (per_slot - 1) * held - queued
        return max(0, min(room, int(self.batch_seconds / spacing) - 1))

    def _queue_turns(self, account_name: str, runs: list[_TurnRun]) -> None:
        with self._local:
            self._turns.setdefault(account_name, deque()).extend(runs)
            for run in runs:
                leased = self._all_leased.get(account_name, 0.0)
                self._all_leased[account_name] = max(leased, run.leased_until)

    def _shift_turns(self, account_name: str, seconds: float) -> None:
        """The account's clock was pushed by ``seconds``: this process's turns taken
        ahead move on with it (safe as the push itself: see _push_late)."""
        if seconds <= 0:
            return
        with self._local:
            for run in self._turns.get(account_name, ()):
                run.first += seconds

    def _drop_turns(self, account_name: str) -> None:
        """The turns taken ahead go unused (a throttled answer, another run waiting):
        unused turns only leave the account idle for a moment."""
        with self._local:
            self._turns.pop(account_name, None)

    def _turn_ahead(
        self, account_name: str, leased_until: float, lease: float
    ) -> tuple[float, float] | None:
        """The next turn taken ahead for this process that a call can still leave on,
        and that the slot's lease covers for the call's whole ``lease``: -> (the turn,
        when it was taken); None if there is none. A turn up to 0.4 of the margin in the
        past is on time (the caller's check of its departure keeps half the margin); the
        one up to a spacing in the past (all slots were busy when it came) is late, and
        the caller moves the later turns on by its lateness as for a late wake-up
        (_push_late) instead of losing it; turns gone by before are dropped unused."""
        now = self.clock()
        with self._local:
            runs = self._turns.get(account_name)
            while runs:
                run = runs[0]
                oldest = now - max(0.4 * self.margin_seconds, run.spacing)
                i = max(run.next, math.ceil((oldest - run.first) / run.spacing))
                if i >= run.count:
                    runs.popleft()
                    continue
                turn = run.first + i * run.spacing
                if turn + lease > max(leased_until, self._all_leased.get(account_name, 0.0)):
                    return None
                run.next = i + 1
                if run.next >= run.count:
                    runs.popleft()
                self.turns_ahead += 1
                return turn, run.taken_at
        return None

    def _unpark(
        self, account_name: str, limit: RateLimit, lease: float, granted: float
    ) -> tuple[str, int, float, int, float, float, float] | None:
        """A slot parked by this process, with its turn (taken ahead, or from the
        account's clock in one transaction that takes turns ahead too): -> as a slot
        handed on; None if none is parked, or another run waits for the account (the
        slot is then given back: the caller takes one in line, as everyone does)."""
        with self._local:
            parked = self._parked.get(account_name)
            if not parked:
                return None
            holder, slot, chain, leased_until, _ = parked.pop()
        ahead = self._turn_ahead(account_name, leased_until, lease)
        if ahead is not None:
            return (holder, slot, ahead[0], chain + 1, 0.0, leased_until, ahead[1])
        runs: list[_TurnRun] = []
        start_at: float | None = None
        try:
            with lean_transaction(self.engine) as conn:
                start_at = self._hand_on(
                    conn,
                    account_name,
                    slot,
                    holder,
                    0.0,
                    self.spacing(limit, account_name),
                    granted,
                    limit=limit,
                    runs=runs,
                )
        finally:
            if start_at is None:
                self._give_back(account_name, holder, slot)
        if start_at is None:
            # another run waits for the account, or the slot is no longer ours (its lease
            # ran out): given back above; the caller takes a slot in line
            return None
        self._queue_turns(account_name, runs)
        now = self.clock()
        return (holder, slot, start_at, chain + 1, now, start_at + granted, now)

    def _slot_for_turn_ahead(
        self, account_name: str, limit: RateLimit, granted: float
    ) -> tuple[str, int, float, int, float, float, float] | None:
        """Several in flight, no slot handed on nor parked, and a turn this process took
        ahead still to come: a free slot for it (one transaction that leaves the clock
        where it is) -> as a slot handed on; None if there is no such turn, another run
        waits for the account, or no slot is free (the caller takes a slot and a turn
        in line, as everyone does).

        Without this, a thread that found no slot of its process free took a fresh turn
        from the clock, already moved past the turns taken ahead: those waited for a
        slot to come back to this process and went by unused while the account stood
        idle (Rev.io at the start of a run: 5 gaps, 0.5 s of 62 s). The turn was taken
        from the clock already, and the slot only adds room to the turns a process may
        hold (see _batch_room): both bounds of docs/reliability.md hold."""
        if self._is_contended(account_name):
            return None
        with self._local:
            runs = self._turns.get(account_name)
            if not runs or not any(run.left() for run in runs):
                return None
        # the slot's lease runs from the turn it is taken for (granted after it)
        ahead = self._turn_ahead(account_name, _FOREVER, 0.0)
        if ahead is None:
            return None
        turn, taken_at = ahead
        holder = f"{self._holder_prefix}:{threading.get_ident()}"
        with lean_transaction(self.engine) as conn:
            _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
            now = self.clock()
            waiting = int(
                _one(
                    conn,
                    _WAITERS_AHEAD,
                    {
                        "b_account": account_name,
                        "b_holder": holder,
                        "b_now": now,
                        "b_since": _FOREVER,
                    },
                )
            )
            free = (
                None
                if waiting
                else _first(conn, _FREE_SLOTS, {"b_account": account_name, "b_now": now, "b_n": 1})
            )
            if free is None:
                slot = None
            else:
                slot = int(free)
                _TAKE_SLOT.execute(
                    conn,
                    {
                        "b_account": account_name,
                        "b_slot": slot,
                        "b_holder": holder,
                        "b_expires": turn + granted,
                    },
                )
        if slot is None:
            # the turn goes unused (it only leaves the account idle for a moment)
            if waiting:
                self._contended(account_name)
            return None
        with self._local:
            self._held[account_name] += 1
            self.slots_for_turns_ahead += 1
        return (holder, slot, turn, 0, now, turn + granted, taken_at)

    def _park(
        self, account_name: str, holder: str, slot: int, chain: int, leased_until: float
    ) -> None:
        """Keep the slot for this process's next call on the account; the keeper thread
        gives it back if none takes it within ``park_seconds``."""
        with self._local:
            self._parked.setdefault(account_name, deque()).append(
                (holder, slot, chain, leased_until, self.clock())
            )
            self.parks += 1
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = threading.Thread(
                    target=self._keep_parked, name="parked-slots", daemon=True
                )
                self._keeper.start()

    def _keep_parked(self) -> None:
        """Give back the slots parked longer than ``park_seconds``; ends when none is."""
        while True:
            now = self.clock()
            expired: list[tuple[str, str, int]] = []
            with self._local:
                for account_name, parked in self._parked.items():
                    while parked and now - parked[0][4] >= self.park_seconds:
                        holder, slot, *_ = parked.popleft()
                        expired.append((account_name, holder, slot))
                if not expired and not any(self._parked.values()):
                    self._keeper = None
                    return
            for account_name, holder, slot in expired:
                with suppress(Exception):  # its lease ends it
                    self._give_back(account_name, holder, slot)
            self._keeper_wake.wait(self.park_seconds / 2)

    def turns_ahead_and_slots(self, account_name: str) -> tuple[int, int]:
        """Several in flight: (turns this process took ahead and has not handed out yet,
        the account's slots it holds in the database)."""
        with self._local:
            ahead = sum(run.left() for run in self._turns.get(account_name, ()))
            return ahead, self._held[account_name]

    def give_back_parked(self) -> int:
        """Give back every slot parked now (at exit); -> how many."""
        with self._local:
            parked = [
                (account_name, holder, slot)
                for account_name, slots in self._parked.items()
                for holder, slot, *_ in slots
            ]
            self._parked.clear()
        for account_name, holder, slot in parked:
            self._give_back(account_name, holder, slot)
        return len(parked)

    def _give_back(self, account_name: str, holder: str, slot: int) -> None:
        try:
            with lean_transaction(self.engine) as conn:
                _FREE_SLOT.execute(
                    conn, {"b_account": account_name, "b_slot": slot, "b_holder": holder}
                )
            self.given_back += 1
        finally:
            self._let_go(account_name)

    def _let_go(self, account_name: str) -> None:
        """One slot of the account less held by this process: the turns queued ahead
        shrink to what the slots still held may carry (see _batch_room)."""
        with self._local:
            held = self._held[account_name] = max(0, self._held[account_name] - 1)
            runs = self._turns.get(account_name)
            if not runs:
                return
            if held == 0:
                self._turns.pop(account_name, None)
                return
            per_slot = self._per_slot.get(account_name, 1)
            keep = (per_slot - 1) * held
            while runs and sum(run.left() for run in runs) > keep:
                last = runs[-1]
                excess = sum(run.left() for run in runs) - keep
                if last.left() <= excess:
                    runs.pop()
                else:
                    last.count -= excess

    def _anchor(self, turn: float, sent_at: float) -> float:
        """Where the next turn is counted from. A call that left within a quarter of the
        margin after its turn counts from its turn, so the thread's wake-up delay is not
        lost again on every call (any window is short of its spacing by that quarter at
        most, once); a later one counts from when it really left."""
        return turn if sent_at - turn <= self.margin_seconds / 4 else sent_at

    def pace(self, account_name: str) -> AccountPace:
        pace = self._paces.get(account_name)
        if pace is None:
            with self._local:
                pace = self._paces.setdefault(account_name, AccountPace(*self._pace_settings))
        return pace

    def margin(self, account_name: str | None) -> float:
        """Seconds kept free in each of the account's windows: the arrival jitter seen on
        the account and half the fixed margin (for what its estimate, a spread of
        quantiles, leaves out), at least the fixed margin; and what throttled answers
        added."""
        if account_name is None:
            return self.margin_seconds
        pace = self.pace(account_name)
        return max(self.margin_seconds, self.margin_seconds / 2 + pace.jitter) + pace.extra

    def spacing(self, limit: RateLimit, account_name: str | None = None) -> float:
        """Seconds between two call starts on the account."""
        return limit.interval + self.margin(account_name) / max(1.0, limit.calls_per_window)

    def _may_push_late(self, limit: RateLimit, late: float, account_name: str) -> bool:
        """Whether a call that woke ``late`` after its turn may move the account's later
        turns on instead of taking a fresh one: at most ``max_in_flight - 1`` turns are
        handed out ahead of it (each to a holder of a slot), fewer than a window's worth
        of calls, and it is late by no more than a spacing."""
        return limit.max_in_flight <= self._per_window(limit) and late <= self.spacing(
            limit, account_name
        )

    def _push_late(self, account_name: str, turn: float) -> float:
        """A call whose turn was ``turn`` leaves now, late: every turn not yet handed out
        (the account's clock) moves on by the lateness, read with the clock locked.
        -> the call's turn from now on: when the clock was locked, so what passes between
        this transaction and the call's departure is checked again (and the departure's
        own lateness is pushed when the slot is given back, see ``_release``).

        Why the sliding window holds: with n the calls of a window and m < n the turns
        handed out after ``turn`` (at most one for each other slot), the call n turns
        after this one takes its turn from the clock after this push, so no earlier than
        ``turn + n * spacing + lateness``: a window and the fixed margin after the moment
        this call counts from; the margin's half absorbs the delay to the real departure
        (re-checked by the caller), as for a call on time."""
        with lean_transaction(self.engine) as conn:
            _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
            now = self.clock()
            _CLOCK_ADD.execute(conn, {"b_account": account_name, "b_push": max(0.0, now - turn)})
        # this process's turns taken ahead move on with the clock
        self._shift_turns(account_name, max(0.0, now - turn))
        return max(now, turn)

    def _retake_turn(
        self, account_name: str, limit: RateLimit, slot: int, holder: str, lease: float
    ) -> float:
        """A fresh turn for the holder of ``slot``, whose own came and went; -> its start."""
        with lean_transaction(self.engine) as conn:
            next_free = _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
            start_at, _ = self._turn_keeping_slot(
                conn,
                account_name,
                slot,
                holder,
                float(next_free),
                self.spacing(limit, account_name),
                lease,
            )
        return start_at

    def _turn_keeping_slot(
        self,
        conn: InTransaction,
        account_name: str,
        slot: int,
        holder: str,
        earliest: float,
        spacing: float,
        lease: float,
        extra: int = 0,
    ) -> tuple[float, bool]:
        """The next turn (not before ``earliest``, the account's clock locked by the
        caller) for the holder of ``slot``, whose lease it extends to the turn, and
        ``extra`` turns after it, a spacing apart (the clock moves past them all).
        -> (its start, whether the slot was still the holder's)."""
        start_at = max(earliest, self.clock())
        _SET_CLOCK.execute(
            conn, {"b_account": account_name, "b_next_free": start_at + (1 + extra) * spacing}
        )
        kept = _KEEP_SLOT.execute(
            conn,
            {
                "b_account": account_name,
                "b_slot": slot,
                "b_holder": holder,
                "b_expires": start_at + lease,
            },
        )
        return start_at, bool(kept)

    def penalize(self, account_name: str, seconds: float) -> None:
        """The account was throttled: nobody calls it again for ``seconds``."""
        now = self.clock()
        until = now + seconds
        with self._local:
            # the turns this process has taken or handed on already move on too (a chain
            # places its calls without the database's clock, see _past_penalty)
            before = self._penalties.get(account_name, (0.0, 0.0))[1]
            self._penalties[account_name] = (now, max(until, before))
        with self.engine.begin() as conn:
            conn.execute(
                update(t.rate_limit_clock)
                .where(t.rate_limit_clock.c.account == account_name)
                .values(
                    next_free_at=case(
                        (
                            t.rate_limit_clock.c.next_free_at > until,
                            t.rate_limit_clock.c.next_free_at,
                        ),
                        else_=until,
                    )
                )
            )

    # ---- internals -----------------------------------------------------------------

    def _gate(self, account_name: str, limit: RateLimit) -> threading.BoundedSemaphore:
        with self._gates_lock:
            gate = self._local_gates.get(account_name)
            if gate is None:
                gate = threading.BoundedSemaphore(limit.max_in_flight)
                self._local_gates[account_name] = gate
            return gate

    def _ensure_rows(self, account_name: str, limit: RateLimit) -> None:
        key = (account_name, limit.max_in_flight)
        if key in self._known_accounts:
            return
        with self.engine.begin() as conn:
            have_clock = conn.execute(
                select(t.rate_limit_clock.c.account).where(
                    t.rate_limit_clock.c.account == account_name
                )
            ).first()
            slots = {
                r.slot
                for r in conn.execute(
                    select(t.rate_limit_slots.c.slot).where(
                        t.rate_limit_slots.c.account == account_name
                    )
                )
            }
        for attempt_insert in (
            []
            if have_clock
            else [(t.rate_limit_clock, {"account": account_name, "next_free_at": 0.0})]
        ) + [
            (
                t.rate_limit_slots,
                {"account": account_name, "slot": n, "holder": None, "expires_at": 0.0},
            )
            for n in range(limit.max_in_flight)
            if n not in slots
        ]:
            table, values = attempt_insert
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(table).values(**values))
            except IntegrityError:
                pass  # another process created it first
        self._known_accounts.add(key)

    def _take_slot_and_turn(
        self, account_name: str, limit: RateLimit, lease_seconds: float
    ) -> tuple[str, int, float, float]:
        """One transaction: a free in-flight slot (leased), then the next turn on the
        account's clock. -> (holder, slot, when the call may start, the clock it found).

        Free slots go first to callers that have waited longer (``rate_limit_waiters``),
        so every run sharing the account gets its turns; a caller that finds none for it
        waits in that table, its row kept alive while it waits, and looks again at the
        account's next turn."""
        holder = f"{self._holder_prefix}:{threading.get_ident()}"
        interval = self.spacing(limit, account_name)
        # One in flight: where this process's own chain places its next call, if the
        # clock is still as this process left it (nobody else took a turn since)
        left, own_next = self._left_clock.get(account_name), self._own_next.get(account_name)
        resume = (left, own_next) if limit.max_in_flight == 1 and own_next is not None else None
        poll = min(self.poll_seconds, limit.interval / 4)
        waiting_since: float | None = None
        alive_until = 0.0
        while True:
            with lean_transaction(self.engine) as conn:
                # Locked first (SQLite: BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE), the time
                # read after: a turn is never handed out in the past, where it would bunch
                # up with the turns handed out while this one waited for the lock.
                next_free = _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
                now = self.clock()
                ahead = int(
                    _one(
                        conn,
                        _WAITERS_AHEAD,
                        {
                            "b_account": account_name,
                            "b_holder": holder,
                            "b_now": now,
                            "b_since": waiting_since if waiting_since is not None else _FOREVER,
                        },
                    )
                )
                free = [
                    int(n)
                    for n in _FREE_SLOTS.column(
                        conn, {"b_account": account_name, "b_now": now, "b_n": ahead + 1}
                    )
                ]
                if len(free) > ahead:
                    slot = free[ahead]
                    step = interval
                    start_at = max(float(next_free), now)
                    if resume is not None and float(next_free) == resume[0]:
                        # The last calls on the account were this process's: its chain
                        # places this one (the clock was left where a successor from
                        # another process could start, see _horizon), and moves the clock
                        # as a hand-on does; the slot's release sets it for others again.
                        start_at, step = max(resume[1], now), CHAIN_STEP
                    _TAKE_SLOT.execute(
                        conn,
                        {
                            "b_account": account_name,
                            "b_slot": slot,
                            "b_holder": holder,
                            "b_expires": start_at + lease_seconds,
                        },
                    )
                    _SET_CLOCK.execute(
                        conn, {"b_account": account_name, "b_next_free": start_at + step}
                    )
                    if waiting_since is not None:
                        _DROP_WAITER.execute(conn, {"b_account": account_name, "b_holder": holder})
                        self._contended(account_name)
                    return holder, slot, start_at, float(next_free)
                if waiting_since is None:
                    waiting_since, alive_until = now, now + self.waiter_lease_seconds
                    _DROP_WAITER.execute(conn, {"b_account": account_name, "b_holder": holder})
                    _ADD_WAITER.execute(
                        conn,
                        {
                            "account": account_name,
                            "holder": holder,
                            "since": waiting_since,
                            "expires_at": alive_until,
                        },
                    )
                elif alive_until - now < self.waiter_lease_seconds / 2:
                    alive_until = now + self.waiter_lease_seconds
                    _RENEW_WAITER.execute(
                        conn,
                        {"b_account": account_name, "b_holder": holder, "expires_at": alive_until},
                    )
            self._reclaim_dead_holders(account_name)
            # No slot for this caller now, and none could start before the clock's next
            # turn anyway: look again then, one transaction a turn, not one every
            # ``poll`` (a holder whose answer comes after that turn is looked for every
            # ``poll`` from then on). At most half the waiter's lease, which each look
            # renews.
            self.sleep(
                min(
                    max(poll, float(next_free) - self.clock()),
                    self.waiter_lease_seconds / 2,
                )
            )

    def _reclaim_dead_holders(self, account_name: str) -> None:
        """Waiting for a slot: at most every ``reclaim_every`` seconds, give back the
        slots of the account held by a process of this host that is dead (killed with its
        slot, whatever became of its run), instead of waiting for their lease to end."""
        now = self.clock()
        if now - self._reclaim_checked.get(account_name, 0.0) < self.reclaim_every:
            return
        self._reclaim_checked[account_name] = now
        freed = release_dead_holders(self.engine, account_name)
        self.reclaimed += freed

    def _release(
        self,
        account_name: str,
        slot: int,
        holder: str,
        not_before: float,
        *,
        hand_on_lease: float | None = None,
        spacing: float = 0.0,
        push: float = 0.0,
        own_next: float | None = None,
        limit: RateLimit | None = None,
    ) -> float | None:
        """Free the slot; and if this call left late (a busy machine woke its thread after
        its turn), move the clock so the next turn keeps a full interval from the real
        start: a late call must not squeeze its successor into the same window.

        With ``hand_on_lease``, and nobody waiting in ``rate_limit_waiters``, keep the slot
        instead and take the next turn for a thread of this process: -> its start (one in
        flight, ``spacing`` is CHAIN_STEP: the chain places its calls; several, the
        account's spacing: a turn as any other, see docs/reliability.md).

        ``own_next``: where this process's chain places its own next call (``not_before``
        is where a successor from the clock may start): used if this process is the next
        to take a turn (see _take_slot_and_turn).

        Several in flight (``limit`` given and ``spacing`` not CHAIN_STEP), the hand-on
        takes turns ahead for this process's next calls too (see _take_turns)."""
        runs: list[_TurnRun] | None = [] if limit is not None and limit.max_in_flight > 1 else None
        handed_at: float | None = None
        with lean_transaction(self.engine) as conn:
            pushed = False
            if hand_on_lease is not None:
                if push > 0:
                    # a throttled answer in a chain: every turn not yet handed out moves on
                    _CLOCK_PUSH.execute(
                        conn, {"b_account": account_name, "b_now": self.clock(), "b_push": push}
                    )
                    pushed = True
                handed_at = self._hand_on(
                    conn,
                    account_name,
                    slot,
                    holder,
                    not_before,
                    spacing,
                    hand_on_lease,
                    limit=limit,
                    runs=runs,
                )
            if handed_at is None:
                # nobody to hand on to, someone waits, or the lease had run out and someone
                # took the slot: release as usual (the clock moved on by one turn at most,
                # which is safe)
                _CLOCK_NOT_BEFORE.execute(
                    conn, {"b_account": account_name, "b_not_before": not_before}
                )
                if push > 0 and not pushed:
                    _CLOCK_PUSH.execute(
                        conn, {"b_account": account_name, "b_now": self.clock(), "b_push": push}
                    )
                _FREE_SLOT.execute(
                    conn, {"b_account": account_name, "b_slot": slot, "b_holder": holder}
                )
                self._left_clock[account_name] = float(
                    _one(conn, _CLOCK_LOCKED, {"b_account": account_name})
                )
                self._own_next[account_name] = own_next if push <= 0 else None
        if push > 0:
            self._shift_turns(account_name, push)
        if handed_at is not None and runs:
            self._queue_turns(account_name, runs)  # committed: the clock has moved past them
        return handed_at


# A slot's holder names its process: ``host:pid:start:boot:`` (``ProcessIdentity``),
# then a random part per limiter and the thread. The host is cut short so that the whole
# fits the column.
_HOST_CHARS = 40


def holder_prefix(process: ProcessIdentity) -> str:
    started = "" if process.started is None else str(process.started)
    return f"{process.host[:_HOST_CHARS]}:{process.pid}:{started}:{process.boot}:"


def holder_process(holder: str) -> ProcessIdentity | None:
    """The process a holder names; None for a holder of another form (an older version)."""
    parts = holder.split(":")
    if len(parts) != 6 or not parts[1].isdigit():
        return None
    host, pid, started, boot = parts[:4]
    if host != socket.gethostname()[:_HOST_CHARS]:
        return ProcessIdentity(host, int(pid), None, boot)  # not ours to judge: gone() is None
    return ProcessIdentity(
        socket.gethostname(), int(pid), int(started) if started.isdigit() else None, boot
    )


def release_dead_holders(engine: Engine, account_name: str | None = None) -> int:
    """Give back the slots (of one account, or of all) whose holder is a process of this
    host that is gone; -> how many. Processes of other hosts are left to their lease."""
    query = select(_slots.account, _slots.slot, _slots.holder).where(_slots.holder.is_not(None))
    if account_name is not None:
        query = query.where(_slots.account == account_name)
    with engine.connect() as conn:
        held = conn.execute(query).all()
    freed = 0
    verdicts: dict[str, bool] = {}
    for account, slot, holder in held:
        process = holder_process(holder)
        if process is None:
            continue
        key = holder_prefix(process)
        if key not in verdicts:
            verdicts[key] = process.gone() is True
        if not verdicts[key]:
            continue
        with engine.begin() as conn:
            gone = _FREE_SLOT.execute(
                conn, {"b_account": account, "b_slot": slot, "b_holder": holder}
            )
            if gone:
                # The dead process's last calls were placed by its own memory of them
                # (made-up late answers can leave them closer than a spacing), which died
                # with it: the next turn waits a second, a Jasper window, once.
                _CLOCK_NOT_BEFORE.execute(
                    conn, {"b_account": account, "b_not_before": time.time() + DEAD_HOLDER_PAUSE}
                )
            freed += gone
    return freed


def release_slots_of_process(engine: Engine, host: str, pid: int) -> int:
    """Give back at once the in-flight slots held by a process known to be dead (its
    holders are ``host:pid:...``, see ``holder_prefix``), instead of waiting for their
    lease to end; returns how many."""
    prefix = f"{host[:_HOST_CHARS]}:{pid}:"
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(t.rate_limit_slots)
                .where(t.rate_limit_slots.c.holder.startswith(prefix, autoescape=True))
                .values(holder=None, expires_at=0.0)
            ).rowcount
        )
