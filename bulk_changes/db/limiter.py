"""Each account's call budget, shared through the AMOP database.

Every op, run, process and host that calls an account goes through the same rows:
- the clock (one row per account): locked by every turn taken, it also holds the moment
  before which nobody may call (a penalty after a throttled answer);
- the recent starts (``ring_size`` rows per account, see ``domain.pacing``): a turn reuses
  the oldest and starts no sooner than ``ring_span`` after it, so calls keep within the
  vendor's window wherever they come from, and a late call is made up by the next ones;
- the slots (``max_in_flight`` rows per account): a call holds one, with a lease, while it
  is in flight. A process that dies holding one loses it when the lease expires;
- the waiters: callers that found no free slot, served oldest first (fair sharing of an
  account between runs).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bulk_changes.db import schema as t
from bulk_changes.domain.pacing import next_start, ring_size, ring_span
from bulk_changes.domain.settings import RateLimit

# The statements of every call, built once (building and keying them per call was a
# tenth of a run worker's CPU under py-spy).
_FOREVER = float("inf")
_clock, _slots, _waiters = t.rate_limit_clock.c, t.rate_limit_slots.c, t.rate_limit_waiters.c
_starts = t.rate_limit_starts.c
_CLOCK_LOCKED = (
    select(_clock.next_free_at).where(_clock.account == bindparam("b_account")).with_for_update()
)
_WAITERS_AHEAD = select(func.count()).where(
    _waiters.account == bindparam("b_account"),
    _waiters.holder != bindparam("b_holder"),
    _waiters.expires_at >= bindparam("b_now"),
    _waiters.since < bindparam("b_since"),
)
_FREE_SLOTS = (
    select(_slots.slot)
    .where(
        _slots.account == bindparam("b_account"),
        (_slots.holder.is_(None)) | (_slots.expires_at < bindparam("b_now")),
    )
    .order_by(_slots.slot)
    .limit(bindparam("b_n"))
)
_TAKE_SLOT = (
    update(t.rate_limit_slots)
    .where(_slots.account == bindparam("b_account"), _slots.slot == bindparam("b_slot"))
    .values(holder=bindparam("b_holder"), expires_at=bindparam("b_expires"))
)
_OLDEST_START = (
    select(_starts.position, _starts.started_at)
    .where(_starts.account == bindparam("b_account"), _starts.position < bindparam("b_size"))
    .order_by(_starts.started_at, _starts.position)
    .limit(1)
)
_SET_START = (
    update(t.rate_limit_starts)
    .where(_starts.account == bindparam("b_account"), _starts.position == bindparam("b_position"))
    .values(started_at=bindparam("b_start"))
)
# a call that left later than its turn: its real start, unless the row was reused since
_LATE_START = (
    update(t.rate_limit_starts)
    .where(
        _starts.account == bindparam("b_account"),
        _starts.position == bindparam("b_position"),
        _starts.started_at == bindparam("b_reserved"),
    )
    .values(started_at=bindparam("b_start"))
)
_HELD_SLOT = update(t.rate_limit_slots).where(
    _slots.account == bindparam("b_account"),
    _slots.slot == bindparam("b_slot"),
    _slots.holder == bindparam("b_holder"),
)
_KEEP_SLOT = _HELD_SLOT.values(expires_at=bindparam("b_expires"))
_FREE_SLOT = _HELD_SLOT.values(holder=None, expires_at=0.0)


@dataclass(frozen=True)
class _Turn:
    position: int  # the row of rate_limit_starts that holds this call's start
    start: float  # when the call may start, as written in that row


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
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        # Calls leave a little further apart than the budget allows: the vendor counts
        # arrivals in its window, and the network can bring calls closer together than
        # they left (see domain.pacing.ring_span).
        self.margin_seconds = margin_seconds
        self.poll_seconds = poll_seconds
        self.waiter_lease_seconds = waiter_lease_seconds
        self.clock = clock
        self.sleep = sleep
        self._holder_prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local_gates: dict[str, threading.BoundedSemaphore] = {}
        self._gates_lock = threading.Lock()
        self._known_accounts: set[tuple[str, int, int]] = set()
        # one-in-flight accounts: the slot handed from one thread of this process to the
        # next without taking it again (see slot); bounded so other runs get their turn
        self.max_handoffs = max_handoffs
        self._local = threading.Lock()
        self._queued: Counter[str] = Counter()
        self._handed: dict[str, tuple[str, int, _Turn, int]] = {}
        self.handoffs = 0
        self.waited_seconds = 0.0
        self.calls = 0

    # ---- public --------------------------------------------------------------------

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[None]:
        """Hold one of the account's in-flight slots for a call that starts at its turn.
        ``lease_seconds``: how long after its start the call can still be in flight; a
        process that dies holding the slot loses it then (default: the limiter's)."""
        gate = self._gate(account_name, limit)
        lease = lease_seconds or self.lease_seconds
        started = self.clock()
        with self._local:
            self._queued[account_name] += 1
        gate.acquire()  # threads of this process queue here, not in the database
        try:
            with self._local:
                self._queued[account_name] -= 1
                handed = self._handed.pop(account_name, None)
            if handed is None:
                self._ensure_rows(account_name, limit)
                holder, slot, turn = self._take_slot_and_turn(account_name, limit, lease)
                chain = 0
            else:
                holder, slot, turn, chain = handed
            sent_at = turn.start
            try:
                wait = turn.start - self.clock()
                if wait > 0:
                    self.sleep(wait)
                sent_at = self.clock()
                self.waited_seconds += sent_at - started
                self.calls += 1
                yield
            finally:
                # One call in flight and a thread of this process waiting for the next:
                # hand it the slot and its turn in the release's own transaction, unless
                # another run is waiting (it goes first) or this chain has run long.
                with self._local:
                    hand_on = (
                        limit.max_in_flight == 1
                        and self._queued[account_name] > 0
                        and chain < self.max_handoffs
                    )
                next_turn = self._release(
                    account_name,
                    limit,
                    slot,
                    holder,
                    turn,
                    sent_at,
                    hand_on_lease=lease if hand_on else None,
                )
                if next_turn is not None:
                    with self._local:
                        # the gate's only permit is still held here: the next thread to
                        # pass the gate finds this, before anyone else can take the slot
                        self._handed[account_name] = (holder, slot, next_turn, chain + 1)
                        self.handoffs += 1
        finally:
            gate.release()

    def penalize(self, account_name: str, seconds: float) -> None:
        """The account was throttled: nobody calls it again for ``seconds``."""
        until = self.clock() + seconds
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
        size = ring_size(limit)
        key = (account_name, limit.max_in_flight, size)
        if key in self._known_accounts:
            return
        with self.engine.begin() as conn:
            have_clock = conn.execute(
                select(_clock.account).where(_clock.account == account_name)
            ).first()
            slots = {
                r.slot
                for r in conn.execute(select(_slots.slot).where(_slots.account == account_name))
            }
            positions = {
                r.position
                for r in conn.execute(
                    select(_starts.position).where(_starts.account == account_name)
                )
            }
        missing: list[tuple[Any, dict[str, Any]]] = []
        if not have_clock:
            missing.append((t.rate_limit_clock, {"account": account_name, "next_free_at": 0.0}))
        missing += [
            (
                t.rate_limit_slots,
                {"account": account_name, "slot": n, "holder": None, "expires_at": 0.0},
            )
            for n in range(limit.max_in_flight)
            if n not in slots
        ]
        missing += [
            (t.rate_limit_starts, {"account": account_name, "position": n, "started_at": 0.0})
            for n in range(size)
            if n not in positions
        ]
        for table, values in missing:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(table).values(**values))
            except IntegrityError:
                pass  # another process created it first
        self._known_accounts.add(key)

    def _next_turn(
        self, conn: Connection, account_name: str, limit: RateLimit, now: float, not_before: float
    ) -> _Turn:
        """Reuse the account's oldest recent start for the next call (the clock row is
        locked by the caller's transaction)."""
        position, oldest = conn.execute(
            _OLDEST_START, {"b_account": account_name, "b_size": ring_size(limit)}
        ).one()
        start = next_start(
            now=now,
            not_before=not_before,
            oldest_in_ring=float(oldest),
            span=ring_span(limit, self.margin_seconds),
        )
        conn.execute(
            _SET_START, {"b_account": account_name, "b_position": position, "b_start": start}
        )
        return _Turn(int(position), start)

    def _take_slot_and_turn(
        self, account_name: str, limit: RateLimit, lease_seconds: float
    ) -> tuple[str, int, _Turn]:
        """One transaction: a free in-flight slot (leased), then the call's turn.
        -> (holder, slot, turn).

        Free slots go first to callers that have waited longer (``rate_limit_waiters``),
        so every run sharing the account gets its turns; a caller that finds none for it
        waits in that table, its row kept alive while it polls."""
        holder = f"{self._holder_prefix}:{threading.get_ident()}"
        poll = min(self.poll_seconds, limit.interval / 4)
        waiters = t.rate_limit_waiters.c
        waiting_since: float | None = None
        alive_until = 0.0
        while True:
            with self.engine.begin() as conn:
                # Locked first (SQLite: BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE), the time
                # read after: a turn is never handed out in the past, where it would bunch
                # up with the turns handed out while this one waited for the lock.
                next_free = conn.execute(_CLOCK_LOCKED, {"b_account": account_name}).scalar_one()
                now = self.clock()
                ahead = int(
                    conn.execute(
                        _WAITERS_AHEAD,
                        {
                            "b_account": account_name,
                            "b_holder": holder,
                            "b_now": now,
                            "b_since": waiting_since if waiting_since is not None else _FOREVER,
                        },
                    ).scalar_one()
                )
                free = [
                    int(n)
                    for n in conn.execute(
                        _FREE_SLOTS, {"b_account": account_name, "b_now": now, "b_n": ahead + 1}
                    ).scalars()
                ]
                if len(free) > ahead:
                    slot = free[ahead]
                    turn = self._next_turn(conn, account_name, limit, now, float(next_free))
                    conn.execute(
                        _TAKE_SLOT,
                        {
                            "b_account": account_name,
                            "b_slot": slot,
                            "b_holder": holder,
                            "b_expires": turn.start + lease_seconds,
                        },
                    )
                    if waiting_since is not None:
                        conn.execute(
                            delete(t.rate_limit_waiters).where(
                                waiters.account == account_name, waiters.holder == holder
                            )
                        )
                    return holder, slot, turn
                if waiting_since is None:
                    waiting_since, alive_until = now, now + self.waiter_lease_seconds
                    conn.execute(
                        delete(t.rate_limit_waiters).where(
                            waiters.account == account_name, waiters.holder == holder
                        )
                    )
                    conn.execute(
                        insert(t.rate_limit_waiters).values(
                            account=account_name,
                            holder=holder,
                            since=waiting_since,
                            expires_at=alive_until,
                        )
                    )
                elif alive_until - now < self.waiter_lease_seconds / 2:
                    alive_until = now + self.waiter_lease_seconds
                    conn.execute(
                        update(t.rate_limit_waiters)
                        .where(waiters.account == account_name, waiters.holder == holder)
                        .values(expires_at=alive_until)
                    )
            self.sleep(poll)

    def _release(
        self,
        account_name: str,
        limit: RateLimit,
        slot: int,
        holder: str,
        turn: _Turn,
        sent_at: float,
        *,
        hand_on_lease: float | None = None,
    ) -> _Turn | None:
        """Free the slot; and if this call left later than its turn (a busy machine woke
        its thread late), record its real start: the calls a window after it must keep
        their distance from when it really left.

        With ``hand_on_lease``, and nobody waiting in ``rate_limit_waiters``, keep the slot
        instead and take the next turn for a thread of this process: -> that turn."""
        with self.engine.begin() as conn:
            # the clock first, as every turn taken does: one lock order, no deadlock
            next_free = conn.execute(_CLOCK_LOCKED, {"b_account": account_name}).scalar_one()
            if sent_at > turn.start:
                conn.execute(
                    _LATE_START,
                    {
                        "b_account": account_name,
                        "b_position": turn.position,
                        "b_reserved": turn.start,
                        "b_start": sent_at,
                    },
                )
            if hand_on_lease is not None:
                now = self.clock()
                waiting = conn.execute(
                    _WAITERS_AHEAD,
                    {"b_account": account_name, "b_holder": "", "b_now": now, "b_since": _FOREVER},
                ).scalar_one()
                if not waiting:
                    next_turn = self._next_turn(conn, account_name, limit, now, float(next_free))
                    kept = conn.execute(
                        _KEEP_SLOT,
                        {
                            "b_account": account_name,
                            "b_slot": slot,
                            "b_holder": holder,
                            "b_expires": next_turn.start + hand_on_lease,
                        },
                    ).rowcount
                    if kept:
                        return next_turn
                    # the lease had run out and someone took the slot: release as usual
                    # (the unused turn only delays a later call, which is safe)
            conn.execute(
                _FREE_SLOT, {"b_account": account_name, "b_slot": slot, "b_holder": holder}
            )
        return None


def release_slots_of_process(engine: Engine, host: str, pid: int) -> int:
    """Give back at once the in-flight slots held by a process known to be dead (its
    holders are ``host:pid:...``, see ``DbLimiter``), instead of waiting for their lease
    to end; returns how many."""
    prefix = f"{host}:{pid}:"
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(t.rate_limit_slots)
                .where(t.rate_limit_slots.c.holder.startswith(prefix, autoescape=True))
                .values(holder=None, expires_at=0.0)
            ).rowcount
        )
