"""The SQS sensor: one run of ``process_bulk_change`` per bulk change asked for on the queue.

Each tick:

1. Pending deletions (kept in the cursor): a message whose run now exists is deleted.
   A message is never deleted in the tick that asks for its run: Dagster stores the
   cursor only after the daemon launched the tick's runs, so a crash in between leaves
   the message on the queue (it comes back after the visibility timeout, and the run key
   keeps it from starting a second run).
2. Receives of up to 10 messages, ``max_messages`` a tick. When no message waits for its run,
   the tick long-polls until ``long_poll_seconds`` after it began, or until it has a run to
   ask for: a message sent while it listens starts its run at once. The daemon evaluates
   sensors every 5 seconds (Dagster's sensor loop) and never starts a sensor's tick while
   the last one still runs, so a tick that listens for most of several loops (58.5 s of
   60 by default, in receives of at most SQS's 20 s) is evaluated again at the loop after
   it ends: the queue is listened to about 97% of the time, at 1 tick a minute instead of
   12 (each tick costs the daemon and the code server 45-80 ms of CPU, docs/benchmarks.md,
   "Idle"). Each message is parsed
   (``bulk_changes.domain.messages``):

   - not understood -> dead-letter queue with the reason;
   - a ``submit_bulk_change`` -> stored through intake (its idempotency key makes a
     redelivery return the same bulk change); a request intake refuses as a whole
     -> dead-letter queue with intake's reason;
   - a bulk change the AMOP database does not know -> dead-letter queue;
   - the run for its run key exists already (a duplicate, a redelivery) -> deleted;
   - the bulk change is final and this is not a retry request -> deleted, nothing to do;
   - otherwise a ``RunRequest`` (one per run key per tick), and the receipt handle goes
     into the cursor to be deleted once the run exists.

One bad message never fails the tick: its error is logged, and it is dead-lettered
(request errors at once; unexpected errors after ``max_receive_count`` receives, earlier
receives leave it to come back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from bulk_changes.domain.errors import BulkChangeError, ConfigurationError, RetryableError
from bulk_changes.domain.messages import (
    BulkChangeRef,
    MessageError,
    SubmitMessage,
    run_key_for,
)
from bulk_changes.partitions import bulk_change_partitions, partition_tags, run_config_for
from bulk_changes.resources.queue import QueueMessage, ReceiptHandleInvalid
from bulk_changes.run_tags import (  # noqa: F401 - TAG_* are read from here too
    TAG_BULK_CHANGE_ID,
    TAG_CHANGE_TYPE,
    TAG_INTEGRATION,
    TAG_TENANT,
    bulk_change_tags,
)
from bulk_changes.schemas.queue_messages import parse_message
from bulk_changes.sensors import long_poll

SENSOR_NAME = "bulk_change_queue_sensor"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
FINAL_STATUSES = frozenset({"PROCESSED", "PROCESSED_WITH_ERRORS", "CANCELLED"})
TAG_RETRY_REQUEST = "bulk_changes/retry_request_id"
LOAD_OP = "load_device_changes"
# runs that ended without finishing a bulk change, after which its messages wait (and go
# to the dead-letter queue) instead of starting yet another
MAX_RUNS_PER_KEY = 5

# (repository, settings, message) -> id of the stored bulk change
SubmitFn = Callable[[Any, Any, SubmitMessage], int]

# Messages sent together (a portal sending several bulk changes, one after the other)
# arrive milliseconds apart; a long poll returns with the first. The tick waits this long
# for the next before it stops taking messages: otherwise the rest wait for the daemon's
# next sensor loop, five seconds on. Costs a lone message as much.
BURST_GAP_SECONDS = 0.1
# SQS's longest wait of one receive (WaitTimeSeconds)
MAX_WAIT_SECONDS = 20


def submit_via_intake(repo: Any, settings: Any, message: SubmitMessage) -> int:
    """Store a submit message exactly as ``bulk-changes submit`` stores a file."""
    from bulk_changes.intake import SubmitRequest, submit_bulk_change

    result = submit_bulk_change(
        repo,
        settings,
        SubmitRequest(
            tenant=message.tenant,
            change_type=message.change_type,
            integration=message.integration,
            rows=message.devices,
            notify=message.notify,
            idempotency_key=message.idempotency_key,
            requested_by=message.requested_by,
            source="sqs",
        ),
    )
    return int(result.id)


def _is_request_error(exc: BaseException) -> bool:
    """Errors that say the message itself is wrong (retrying cannot fix them)."""
    try:
        from bulk_changes.intake import IntakeError
    except ImportError:  # pragma: no cover - intake is part of the package
        intake_errors: tuple[type[BaseException], ...] = ()
    else:
        intake_errors = (IntakeError,)
    if isinstance(exc, intake_errors):
        return True
    if isinstance(exc, RetryableError | ConfigurationError):
        return False  # a passing failure, or our configuration: not the message's fault
    return isinstance(exc, BulkChangeError | ValueError)


# -- cursor -----------------------------------------------------------------------------------


@dataclass
class Pending:
    """A message whose run was asked for and which is deleted once that run exists."""

    run_key: str
    receipt_handle: str
    message_id: str = ""
    received_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "receipt_handle": self.receipt_handle,
            "message_id": self.message_id,
            "received_at": round(self.received_at, 3),
        }


def load_cursor(cursor: str | None) -> list[Pending]:
    if not cursor:
        return []
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return []
    if not isinstance(data, list):
        return []
    pending: list[Pending] = []
    for item in data:
        if isinstance(item, dict) and item.get("run_key") and item.get("receipt_handle"):
            pending.append(
                Pending(
                    run_key=str(item["run_key"]),
                    receipt_handle=str(item["receipt_handle"]),
                    message_id=str(item.get("message_id") or ""),
                    received_at=float(item.get("received_at") or 0.0),
                )
            )
    return pending


def dump_cursor(pending: list[Pending]) -> str:
    return json.dumps([p.as_json() for p in pending], separators=(",", ":"))


# -- one tick ---------------------------------------------------------------------------------


@dataclass
class TickOutcome:
    run_requests: list[RunRequest] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    deleted: int = 0
    dead_lettered: int = 0
    left: int = 0  # unexpected errors: left on the queue to come back
    received: int = 0


class QueueTick:
    """The work of one tick; kept apart from the decorator so it can be read and tested."""

    def __init__(
        self,
        context: SensorEvaluationContext,
        queue: Any,
        amop_db: Any,
        tenant_config: Any,
        submit: SubmitFn,
        max_messages: int,
        pending_ttl_seconds: float,
        long_poll_seconds: float = 0,
        began: float | None = None,
    ) -> None:
        self.context = context
        self.queue = queue
        self.amop_db = amop_db
        self.tenant_config = tenant_config
        self.submit = submit
        self.max_messages = max_messages
        self.pending_ttl_seconds = pending_ttl_seconds
        self.long_poll_seconds = long_poll_seconds
        # when the tick began (time.monotonic()): it listens until long_poll_seconds later
        self.began = time.monotonic() if began is None else began
        self._failed = False  # a receive failed: handle what came, then end the tick
        self.out = TickOutcome()
        self._repo: Any = None
        self._settings: Any = None
        self._run_exists: dict[str, bool] = {}
        self._requested: set[str] = set()

    @property
    def log(self) -> Any:
        return self.context.log

    def repo(self) -> Any:
        if self._repo is None:
            self._repo = self.amop_db.repository()
        return self._repo

    def settings(self) -> Any:
        if self._settings is None:
            self._settings = self.tenant_config.settings()
        return self._settings

    def run_exists(self, run_key: str) -> bool:
        if not self._run_exists.get(run_key):
            runs = self.context.instance.get_runs(
                filters=RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1
            )
            self._run_exists[run_key] = bool(runs)
        return self._run_exists[run_key]

    # -- step 1 ---------------------------------------------------------------------------

    def settle_pending(self, pending: list[Pending]) -> None:
        now = time.time()
        for entry in pending:
            try:
                if self.run_exists(entry.run_key):
                    self._delete(entry.receipt_handle, entry.message_id, entry.run_key)
                    continue
            except Exception as exc:  # keep it: try again next tick
                self.log.warning(f"pending message {entry.message_id}: {exc!r}; kept")
            if now - entry.received_at <= self.pending_ttl_seconds:
                self.out.pending.append(entry)
            else:
                self.log.warning(
                    f"message {entry.message_id} for {entry.run_key}: no run after "
                    f"{self.pending_ttl_seconds:.0f}s; forgotten (it comes back from the queue)"
                )

    def _delete(self, receipt_handle: str, message_id: str, run_key: str) -> None:
        try:
            self.queue.delete(receipt_handle)
        except ReceiptHandleInvalid:
            # Expired or superseded: the message comes back and is deleted then, since
            # its run exists.
            self.log.info(f"message {message_id} ({run_key}): receipt handle expired")
            return
        self.out.deleted += 1
        self.log.info(f"deleted message {message_id}: run {run_key} exists")

    # -- step 2 ---------------------------------------------------------------------------

    def receive_all(self) -> None:
        # A tick listens until its long-poll time is up or it has a run to ask for (then
        # it returns, so the run launches); one with deletions to settle returns at once.
        # The tick's bound is in messages, not receives: an empty receive costs nothing,
        # so messages handled earlier in the tick never cut a burst short.
        # SQS waits whole seconds: each wait is the whole seconds left, so the tick ends
        # within a second before its deadline, never after it.
        # One receive waits at most SQS's 20 seconds: longer long polls are made of several.
        deadline = self.began + (0 if self.out.pending else self.long_poll_seconds)
        budget = self.max_messages
        while budget > 0:
            remaining = deadline - time.monotonic()
            wait = (
                0
                if self.out.run_requests or remaining < 1
                else min(MAX_WAIT_SECONDS, int(remaining))
            )
            # a receive cut to SQS's longest wait is followed by another, if it found nothing
            cut = wait == MAX_WAIT_SECONDS and int(remaining) > MAX_WAIT_SECONDS
            messages = self._receive(wait, budget)
            # a long poll returns with the first message of a burst: take the rest too
            while messages and wait and len(messages) < budget:
                time.sleep(BURST_GAP_SECONDS)
                more = self._receive(0, budget - len(messages))
                if not more:
                    break
                messages += more
            budget -= len(messages)
            for message in messages:
                self.handle_safely(message)
            if self._failed or (not messages and not cut) or long_poll.stopping():
                return

    def _receive(self, wait: int, at_most: int) -> list[QueueMessage]:
        """Up to ``at_most`` (and 10) messages; none once a receive has failed (the tick
        stops after it)."""
        if self._failed:
            return []
        try:
            messages = long_poll.receive(self.queue, min(10, at_most), wait)
        except Exception as exc:
            if not self.out.run_requests and not self.out.received:
                raise  # nothing done yet: a failed tick is the visible answer
            self.log.error(f"receiving from the queue failed: {exc!r}; stopping this tick")
            self._failed = True
            return []
        self.out.received += len(messages)
        return messages

    def handle_safely(self, message: QueueMessage) -> None:
        try:
            self.handle(message)
        except Exception as exc:
            self.log.exception(
                f"message {message.message_id} (receive {message.receive_count}): {exc!r}"
            )
            limit = int(getattr(self.queue, "max_receive_count", 5) or 5)
            if message.receive_count >= limit:
                self.dead_letter(
                    message, f"failed {message.receive_count} times; last error: {exc!r}"
                )
            else:
                self.out.left += 1

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        try:
            self.queue.dead_letter(message, reason)
        except Exception as exc:
            self.log.error(
                f"message {message.message_id}: could not dead-letter ({exc!r}); reason was: {reason}"
            )
            self.out.left += 1
            return
        self.out.dead_lettered += 1
        self.log.warning(f"message {message.message_id} sent to the dead-letter queue: {reason}")

    def handle(self, message: QueueMessage) -> None:
        try:
            # identity: a redriven message keeps the id it was first sent with
            parsed = parse_message(message.body, message.attributes, message.identity)
        except MessageError as exc:
            self.dead_letter(message, exc.reason)
            return
        if isinstance(parsed, SubmitMessage):
            try:
                bulk_change_id = self.submit(self.repo(), self.settings(), parsed)
            except Exception as exc:
                if not _is_request_error(exc):
                    raise
                self.dead_letter(message, f"submit_bulk_change refused: {exc}")
                return
            self.log.info(
                f"message {message.message_id}: submit ({parsed.idempotency_key}) "
                f"-> bulk change {bulk_change_id}"
            )
            ref = BulkChangeRef(bulk_change_id)
        else:
            ref = parsed
        self.handle_ref(message, ref)

    def database_id(self) -> str:
        # a stand-in repository without an id (unit tests) keeps the plain key
        reader = getattr(self.repo(), "database_id", None)
        return str(reader()) if reader is not None else ""

    def live_run_key(self, base_key: str, bulk_id: int) -> str:
        """The key of the run that will finish the bulk change: ``base_key``, unless its
        run ended without making the bulk change final (it failed, was cancelled, or was
        a different database's); then the next ``_again_<n>`` key whose run is not over.
        A message is deleted only once that run exists."""
        key = base_key
        for n in range(2, MAX_RUNS_PER_KEY + 2):
            run = self.run_of(key)
            if run is None or not run.is_finished:
                return key
            bulk = self.repo().get_bulk_change(bulk_id)
            if bulk is None or str(getattr(bulk.status, "value", bulk.status)) in FINAL_STATUSES:
                return key
            key = f"{base_key}_again_{n}"
        raise RuntimeError(f"{base_key}: {MAX_RUNS_PER_KEY} runs ended without finishing it")

    def run_of(self, run_key: str) -> Any:
        runs = self.context.instance.get_runs(
            filters=RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1
        )
        return runs[0] if runs else None

    def handle_ref(self, message: QueueMessage, ref: BulkChangeRef) -> None:
        run_key = run_key_for(ref, self.database_id())
        if run_key in self._requested:
            # A second message for the run asked for in this tick: deleted with the first.
            self._add_pending(run_key, message)
            return
        bulk = self.repo().get_bulk_change(ref.bulk_change_id)
        if bulk is None:
            self.dead_letter(message, f"unknown bulk change {ref.bulk_change_id}")
            return
        status = str(getattr(bulk.status, "value", bulk.status))
        if status not in FINAL_STATUSES and not ref.retry_failed:
            run_key = self.live_run_key(run_key, ref.bulk_change_id)
            if run_key in self._requested:
                self._add_pending(run_key, message)
                return
        if self.run_exists(run_key):
            self._delete(message.receipt_handle, message.message_id, run_key)
            return
        if status in FINAL_STATUSES and not ref.retry_failed:
            self.log.info(
                f"message {message.message_id}: bulk change {ref.bulk_change_id} is already "
                f"{status}; nothing to do, message deleted"
            )
            try:
                self.queue.delete(message.receipt_handle)
            except ReceiptHandleInvalid:
                return  # it comes back and is deleted then
            self.out.deleted += 1
            return
        self._requested.add(run_key)
        self.out.run_requests.append(run_request_for(ref, bulk, run_key))
        self._add_pending(run_key, message)
        self.log.info(f"message {message.message_id}: run requested, key {run_key}")

    def _add_pending(self, run_key: str, message: QueueMessage) -> None:
        # A message received again supersedes its older receipt handle.
        self.out.pending = [p for p in self.out.pending if p.message_id != message.message_id]
        self.out.pending.append(
            Pending(run_key, message.receipt_handle, message.message_id, time.time())
        )


def run_request_for(ref: BulkChangeRef, bulk: Any, run_key: str) -> RunRequest:
    tags = bulk_change_tags(bulk)
    if ref.retry_failed and ref.request_id:
        tags[TAG_RETRY_REQUEST] = ref.request_id[:200]
    # The bulk change's partition: its key is added in the same tick (SensorResult), so the
    # run shows under the bulk change in the UI and can be backfilled from there. Its config
    # is the partition's: every run of a bulk change retries its API_FAILED devices (a new
    # one has none), so re-executing any of its runs from the UI is "retry the failed".
    # The partition is given by its tags (what the daemon derives from a partition_key), so
    # that evaluating the sensor needs no repository definition.
    return RunRequest(
        run_key=run_key,
        run_config=run_config_for(ref.bulk_change_id),
        tags={**tags, **partition_tags(ref.bulk_change_id)},
    )


# -- the sensor -------------------------------------------------------------------------------


def sweep_queue_outbox(amop_db: Any, queue: Any, log: Any) -> None:
    """Send the bulk changes stored while the queue was down (db.queue_outbox); this tick
    or the next receives them like any message. A failure is logged and tried again."""
    engine_of = getattr(amop_db, "engine", None)
    if engine_of is None:  # a stand-in database (unit tests) has no outbox
        return
    from bulk_changes.db.queue_outbox import send_unsent

    try:
        result = send_unsent(engine_of().raw_connection, queue.send)
    except Exception as exc:
        log.warning(f"queue outbox: {exc!r}; tried again next tick")
        return
    if result.sent:
        log.info(f"queue outbox: sent bulk change(s) {result.sent}")
    for bulk_change_id, error in result.failed.items():
        log.warning(f"queue outbox: bulk change {bulk_change_id} not sent ({error}); next tick")


def build_queue_sensor(
    job: JobDefinition,
    minimum_interval_seconds: int = 5,
    *,
    name: str = SENSOR_NAME,
    max_messages: int = 30,
    pending_ttl_seconds: float = 3600.0,
    long_poll_seconds: float = 0,
    submit: SubmitFn | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """The queue sensor for ``job`` (``process_bulk_change``).

    Resources: ``queue`` (SqsQueue), ``amop_db`` (AmopDatabase), ``tenant_config``
    (TenantConfig). ``submit`` stores a submit message (default: intake, as the CLI does).
    """
    submit_fn = submit or submit_via_intake

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={"queue", "amop_db", "tenant_config"},
        default_status=default_status,
        description=(
            "Reads the bulk-change SQS queue: one run per bulk change asked for; messages "
            "deleted once their run exists; bad messages to the dead-letter queue."
        ),
    )
    def bulk_change_queue_sensor(context: SensorEvaluationContext, **_: Any) -> SensorResult:
        # ``**_``: a direct call (``sensor_def(context)``) also passes the resources by name.
        began = time.monotonic()
        tick = QueueTick(
            context,
            queue=context.resources.queue,
            amop_db=context.resources.amop_db,
            tenant_config=context.resources.tenant_config,
            submit=submit_fn,
            max_messages=max_messages,
            pending_ttl_seconds=pending_ttl_seconds,
            long_poll_seconds=long_poll_seconds,
            began=began,
        )
        sweep_queue_outbox(context.resources.amop_db, context.resources.queue, context.log)
        tick.settle_pending(load_cursor(context.cursor))
        tick.receive_all()
        out = tick.out
        cursor = dump_cursor(out.pending)
        if out.run_requests:
            keys = sorted({r.tags[PARTITION_TAG] for r in out.run_requests})
            return SensorResult(
                run_requests=out.run_requests,
                cursor=cursor,
                dynamic_partitions_requests=[bulk_change_partitions.build_add_request(keys)],
            )
        summary = (
            f"no new runs: {out.received} message(s) received, {out.deleted} deleted, "
            f"{out.dead_lettered} dead-lettered, {out.left} left for later, "
            f"{len(out.pending)} awaiting their run"
        )
        return SensorResult(skip_reason=SkipReason(summary), cursor=cursor)

    return bulk_change_queue_sensor
