"""Runs a batch of device changes through their steps: each device on a thread of its own
goes carrier, then billing, then the AMOP database, so the carrier's and Rev.io's budgets
are busy at the same time (a device pipeline) instead of one stage after the other.

Each step's outcome is committed the moment it is known, so a run that dies anywhere can
be re-executed and continues where it stopped: completed steps are skipped, never repeated.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from bulk_changes.domain.audit import Exchange
from bulk_changes.domain.change_types import ChangeType, Integration
from bulk_changes.domain.errors import (
    OutcomeUnknown,
    RetryableError,
    StoreError,
    StoreRefused,
    Throttled,
)
from bulk_changes.domain.model import (
    FINAL_DEVICE_VALUES,
    AuditEntry,
    BulkChange,
    DeviceChange,
    StepSuccess,
)
from bulk_changes.domain.outcomes import inventory_changes, previous_values
from bulk_changes.domain.ports import Clients, DeviceChangeStore
from bulk_changes.domain.retry import GiveUp, Retry, RetryPolicy, decide
from bulk_changes.domain.settings import Tenant
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes.domain.step_plans import UPDATE_AMOP, Stage, Step, plan_for
from bulk_changes.processing import stopping
from bulk_changes.processing.device_lanes import DeviceLanes
from bulk_changes.processing.memory import freeze_startup_objects, limit_arenas
from bulk_changes.processing.recorder import ExchangeRecorder
from bulk_changes.processing.steps import HANDLERS, VERIFIERS, StepContext

_pools: dict[int, ThreadPoolExecutor] = {}
_lanes: dict[int, DeviceLanes] = {}
_pools_lock = threading.Lock()


def device_pool(workers: int) -> ThreadPoolExecutor:
    """The device threads of this process, shared by every batch it runs.

    Two batch steps running at once (threaded executor) queue their devices on the same
    threads: the next batch's devices take the threads the last devices of the other free,
    so the accounts stay busy across a batch boundary without more threads contending
    for the interpreter lock (their calls would leave later than their turns). And the
    threads live as long as the process instead of being made again for every batch."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            limit_arenas()  # before the threads that would each get one
            freeze_startup_objects()
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="device")
            _lanes[workers] = DeviceLanes(pool, workers)
        return pool


def device_lanes(workers: int) -> DeviceLanes:
    """The devices of every batch on the pool of ``workers`` threads, as many at once as
    keep the interpreter busy (processing.device_lanes)."""
    device_pool(workers)
    return _lanes[workers]


class ClientsFactory(Protocol):
    def __call__(self, recorder: ExchangeRecorder) -> Clients: ...


@dataclass
class StageReport:
    """Counts over one batch, for the op's metadata."""

    devices: int = 0
    skipped_final: int = 0
    steps_succeeded: int = 0
    steps_already_done: int = 0
    retries: int = 0
    throttled: int = 0
    verified_after_restart: int = 0
    verified_after_unknown: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def as_metadata(self) -> dict[str, int]:
        data = {
            "devices": self.devices,
            "skipped_final": self.skipped_final,
            "steps_succeeded": self.steps_succeeded,
            "steps_already_done": self.steps_already_done,
            "retries": self.retries,
            "throttled": self.throttled,
            "verified_after_restart": self.verified_after_restart,
            "verified_after_unknown": self.verified_after_unknown,
        }
        data.update({f"ended_{k.lower()}": v for k, v in sorted(self.outcomes.items())})
        return data


class _ReadAgain(Exception):
    """A step started before a crash could not be read back at the system for now."""


class StageRunner:
    def __init__(
        self,
        *,
        repo: DeviceChangeStore,
        bulk: BulkChange,
        tenant: Tenant,
        clients_factory: ClientsFactory,
        policy: RetryPolicy,
        run_id: str | None,
        max_workers: int = 4,
        sleep: Callable[[float], None] = stopping.pause,
        rng: random.Random | None = None,
    ) -> None:
        self.repo = repo
        self.bulk = bulk
        self.tenant = tenant
        self.change_type = ChangeType(bulk.change_type)
        self.integration = Integration(bulk.integration)
        self.recorder = ExchangeRecorder()
        self.clients = clients_factory(self.recorder)
        self.policy = policy
        self.run_id = run_id
        self.max_workers = max(1, max_workers)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._lock = threading.Lock()

    def run(self, device_change_ids: Sequence[int], stages: Sequence[Stage]) -> StageReport:
        """Carry each device change through its steps of ``stages`` (in plan order)."""
        report = StageReport()
        changes = self.repo.device_changes(device_change_ids)
        devices = self.repo.devices_by_id([c.device_id for c in changes if c.device_id is not None])
        done = self.repo.completed_steps([c.id for c in changes])
        self._started = self.repo.started_steps([c.id for c in changes])
        work: list[tuple[DeviceChange, Mapping[str, Any], set[str]]] = []
        for change in changes:
            report.devices += 1
            if change.status in FINAL_DEVICE_VALUES:
                report.skipped_final += 1
                continue
            work.append((change, devices.get(change.device_id or -1) or {}, set(done[change.id])))
        if not work:
            return report
        lanes = device_lanes(self.max_workers)
        futures = [lanes.submit(self._run_device, c, d, s, stages, report) for c, d, s in work]
        self._futures = futures
        # One wake-up for the batch, not one a device: waiting on each future in turn woke
        # this thread as each device ended (at the carriers' limits, about one device
        # every 0.1 s, each wake-up paid cold)
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            # Infrastructure failed (the AMOP database, a bug): fail the op so Dagster
            # retries it; what was committed stays committed.
            raise errors[0]  # type: ignore[misc]
        return report

    def wait_for_devices(self, timeout: float) -> bool:
        """After an interrupt of ``run``: wait until this batch's device threads are done
        (stopping, they make no new call). -> True if they all are."""
        _, not_done = wait(getattr(self, "_futures", []), timeout=timeout)
        return not not_done

    # ---- one device ---------------------------------------------------------------------

    def _run_device(
        self,
        change: DeviceChange,
        device: Mapping[str, Any],
        done: set[str],
        stages: Sequence[Stage],
        report: StageReport,
    ) -> None:
        if stopping.requested():
            return  # left as it is: the run's stop closes it
        if change.device_id is None or not device:
            self._finish(
                change, DeviceStatus.ERROR, "the device is no longer in the inventory", None, report
            )
            return
        plan = plan_for(self.change_type, self.integration, change.request)
        steps = [s for s in plan if s.stage in stages]
        # A step's success is committed with the next step's start, or with the AMOP
        # update that ends the device change: one transaction between two calls, never
        # after the next call (nor after a read at the vendor: see _verified_after_crash).
        pending: StepSuccess | None = None
        for step in steps:
            if stopping.requested():
                if pending is not None:
                    self._record(change, pending)  # its call was made: keep it known
                return
            if step.name in done:
                with self._lock:
                    report.steps_already_done += 1
                continue
            if step is UPDATE_AMOP:
                self._update_inventory(change, device, plan, done, report, pending)
                return
            success = self._run_step(step, change, device, report, pending)
            pending = None  # committed by the step's start (or the step failed on it)
            if success is None:
                return  # the device change ended; later steps and stages skip it
            pending = success
            done.add(step.name)
        if pending is not None:
            self._record(change, pending)

    def _run_step(
        self,
        step: Step,
        change: DeviceChange,
        device: Mapping[str, Any],
        report: StageReport,
        before: StepSuccess | None = None,
    ) -> StepSuccess | None:
        """-> the step's success, still to record; None if the device change ended.
        ``before``: the device's step just done, still to record: committed before this
        step makes any call (with its start, in one transaction)."""
        handler = HANDLERS[step.name]
        ctx = StepContext(
            step=step,
            change=change,
            device=device,
            tenant=self.tenant,
            integration=self.integration.value,
            clients=self.clients,
            progress=self.repo,
            sleep=self._step_sleep,
        )
        failures = throttles = 0
        self.recorder.take()
        # The last attempt may have been applied (its answer left that unknown): the
        # system is read before the write is sent again, never the write repeated blind.
        unknown = False
        try:
            verified = self._verified_after_crash(step, change, ctx, report, before)
        except stopping.Stopped:
            return None  # closed by an operator's stop: no call
        except _ReadAgain:
            # started before a crash, and its read failed for now: read again below (the
            # failed read stays in the recorder, audited with what comes next)
            verified, unknown = None, True
        except OutcomeUnknown as exc:
            # started before a crash, and the system cannot show yet whether it landed
            decision = decide(exc, 1, 0, self.policy, self.rng)
            assert isinstance(decision, GiveUp)
            audit = self._audit(step, self.recorder.take(), "error", exc, 0)
            self._finish(
                change, decision.status, decision.reason, step.name, report, audit, count=True
            )
            return None
        if verified is not None:
            return verified
        verifier = VERIFIERS.get(step.name)
        while True:
            if stopping.requested():
                return None
            try:
                if unknown and verifier is not None:
                    shown = verifier(ctx)
                    if shown is not None:
                        return self._verified_after_unknown(
                            step, shown, failures + throttles, report
                        )
                    # Not there: the read stays in the recorder, audited with the write.
                    unknown = False
                result = handler(ctx)
            except stopping.Stopped:
                # no call left (a poll, a retry inside the step): what was sent before is
                # in the audit, and the step stays open, its start recorded
                self.recorder.take()
                return None
            except StoreError:
                raise  # the AMOP database failed, not the device: the op fails
            except Exception as exc:  # classified below; never escapes for one device
                if isinstance(exc, Throttled):
                    throttles += 1
                else:
                    failures += 1
                decision = decide(exc, failures, throttles, self.policy, self.rng)
                outcome = (
                    "throttled"
                    if isinstance(exc, Throttled)
                    else ("error" if isinstance(decision, GiveUp) else "retry")
                )
                audit = self._audit(step, self.recorder.take(), outcome, exc, failures + throttles)
                if isinstance(decision, GiveUp):
                    self._finish(
                        change,
                        decision.status,
                        decision.reason,
                        step.name,
                        report,
                        audit,
                        count=True,
                    )
                    return None
                if isinstance(decision, Retry) and decision.verify_first:
                    unknown = True
                with self._lock:
                    report.retries += 1
                    report.throttled += isinstance(exc, Throttled)
                self.repo.record_attempt_failure(
                    bulk_change_id=self.bulk.id,
                    device_change_id=change.id,
                    step=step.name,
                    error=str(exc),
                    audit=audit,
                    run_id=self.run_id,
                    count=not isinstance(exc, Throttled),
                )
                self.sleep(decision.delay)
                continue
            audit = self._audit(step, self.recorder.take(), "ok", None, failures + throttles + 1)
            with self._lock:
                report.steps_succeeded += 1
            return StepSuccess(step.name, result, audit, attempts=1)

    def _verified_after_unknown(
        self, step: Step, shown: dict[str, Any], attempts: int, report: StageReport
    ) -> StepSuccess:
        """The system shows the value an attempt with an unknown outcome sent: that
        attempt landed. Its success, with the read in the audit trail."""
        audit = self._audit(step, self.recorder.take(), "ok", None, attempts + 1)
        with self._lock:
            report.steps_succeeded += 1
            report.verified_after_unknown += 1
        result = {**shown, "verified_after_unknown_outcome": True}
        return StepSuccess(step.name, result, audit, attempts=1)

    def _step_sleep(self, seconds: float) -> None:
        """A step's own waits (activation polls): a stop ends the step instead of its
        next call."""
        self.sleep(seconds)
        stopping.check()

    def _record(self, change: DeviceChange, success: StepSuccess) -> None:
        self.repo.record_step_success(self.bulk.id, change.id, success, self.run_id)

    def _verified_after_crash(
        self,
        step: Step,
        change: DeviceChange,
        ctx: StepContext,
        report: StageReport,
        before: StepSuccess | None = None,
    ) -> StepSuccess | None:
        """Check a step that was started before but never recorded (the process died
        between the call and its record): if the external system already shows the
        change, -> its success, to record instead of calling again. Otherwise (None) mark
        the step started (and the device change PROCESSING) before the call.

        ``before``, the step just done, is committed first: with this step's start, or
        on its own before the read at the vendor."""
        verifier = VERIFIERS.get(step.name)
        if step.name not in self._started.get(change.id, set()) or verifier is None:
            if before is None:
                begun = self.repo.begin_step(change.id, step.name, self.run_id)
            else:
                begun = self.repo.begin_step(
                    change.id, step.name, self.run_id, after=before, bulk_change_id=self.bulk.id
                )
            if not begun:
                raise stopping.Stopped("the device change was closed by an operator's stop")
            return None
        if before is not None:
            self._record(change, before)
        try:
            result = verifier(ctx)
        except (StoreError, OutcomeUnknown):
            raise
        except RetryableError as exc:
            # the call may have landed and the system could not say: never call blind
            raise _ReadAgain() from exc
        except Exception:  # refused for good (no such record): the call says why
            self.recorder.take()
            return None
        if result is None:
            self.recorder.take()
            return None
        audit = self._audit(step, self.recorder.take(), "ok", None, 0)
        with self._lock:
            report.steps_succeeded += 1
            report.verified_after_restart += 1
        verified = {**result, "verified_after_restart": True}
        return StepSuccess(step.name, verified, audit, attempts=0)

    def _update_inventory(
        self,
        change: DeviceChange,
        device: Mapping[str, Any],
        plan: tuple[Step, ...],
        done: set[str],
        report: StageReport,
        pending: StepSuccess | None = None,
    ) -> None:
        """The AMOP inventory update that ends a device change; ``pending``, the step just
        before it, is recorded in the same transaction (or on its own if the update fails)."""
        missing = [s.name for s in plan if s is not UPDATE_AMOP and s.name not in done]
        if missing:
            # Completed steps are re-read: earlier stages of this run finished them.
            done = done | self.repo.completed_steps([change.id])[change.id]
            missing = [s.name for s in plan if s is not UPDATE_AMOP and s.name not in done]
        if missing:
            if pending is not None:
                self._record(change, pending)
            self._finish(
                change,
                DeviceStatus.API_FAILED,
                f"steps not completed: {', '.join(missing)}",
                UPDATE_AMOP.name,
                report,
            )
            return
        changes = inventory_changes(self.change_type, change.request)
        before = previous_values(changes, device)
        entry = AuditEntry(
            system="amop",
            outcome="ok",
            description=UPDATE_AMOP.description,
            request=changes,
            response={"previous": before},
        )
        try:
            moved = self.repo.finish_device_change(
                bulk_change_id=self.bulk.id,
                device_change_id=change.id,
                status=DeviceStatus.PROCESSED,
                reason=None,
                step=UPDATE_AMOP.name,
                audit=[entry],
                run_id=self.run_id,
                inventory_update=changes,
                device_id=change.device_id,
                after=pending,
            )
        except LookupError as exc:
            if pending is not None:
                self._record(change, pending)  # rolled back with the update: the call happened
            self._finish(change, DeviceStatus.ERROR, str(exc), UPDATE_AMOP.name, report)
            return
        except StoreError as exc:
            # Rolled back with the update, the external call happened all the same: kept
            # on its own, so no retry of this device calls the vendor again. If even that
            # fails, the database itself is away: the op fails and Dagster retries it
            # (the call is then read back at the vendor, see _verified_after_crash).
            if pending is not None:
                self._record(change, pending)
            if not isinstance(exc, StoreRefused):
                raise  # the database is away or busy: the op's retry continues here
            # This device's values are refused (a NUL character on PostgreSQL, a value too
            # long, a duplicate key): one bad device must not fail the op, and with it
            # every other device of the batch, three times over.
            self._finish(
                change,
                DeviceStatus.API_FAILED,
                "the AMOP database refused the inventory update after the external "
                f"systems were changed ({exc.reason}); retrying the failed "
                "devices repeats only this update",
                UPDATE_AMOP.name,
                report,
            )
            return
        if moved:
            with self._lock:
                report.steps_succeeded += 1
                report.outcomes[DeviceStatus.PROCESSED.value] += 1

    def _finish(
        self,
        change: DeviceChange,
        status: DeviceStatus,
        reason: str | None,
        step: str | None,
        report: StageReport,
        audit: Sequence[AuditEntry] = (),
        count: bool = False,
    ) -> None:
        if not audit and reason:
            audit = [
                AuditEntry(
                    system="amop", outcome="error", description="Device change ended", error=reason
                )
            ]
        moved = self.repo.finish_device_change(
            bulk_change_id=self.bulk.id,
            device_change_id=change.id,
            status=status,
            reason=reason,
            step=step,
            audit=audit,
            run_id=self.run_id,
            count_attempt=count,
        )
        if moved:
            with self._lock:
                report.outcomes[status.value] += 1

    def _audit(
        self,
        step: Step,
        exchanges: list[Exchange],
        outcome: str,
        error: Exception | None,
        attempt: int,
    ) -> list[AuditEntry]:
        message = str(error) if error is not None else None
        if not exchanges:
            return [
                AuditEntry(
                    system=step.system,
                    outcome=outcome,
                    description=step.description,
                    error=message,
                    attempt=attempt,
                )
            ]
        entries = []
        for index, exchange in enumerate(exchanges):
            last = index == len(exchanges) - 1
            entries.append(
                AuditEntry(
                    system=exchange.system,
                    outcome=outcome if last else "ok",
                    description=step.description,
                    exchange=exchange,
                    error=message if last else None,
                    attempt=attempt,
                )
            )
        return entries
