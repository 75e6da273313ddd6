"""A Dagster executor that runs a run's steps on threads of the run worker, a few at once.

Why: with the in-process executor one batch step ends before the next begins, and the
carrier sits idle at every boundary (the last device's Rev.io call, the step's own events,
the next batch's first reads: about 140 ms per batch of 100, 3-4% of a 5-a-second
budget). The multiprocess executor overlaps steps, but each step process costs about a
CPU-second and 150 MB to start. Threads overlap them for nothing: the work waits on the
carriers' budgets, which the AMOP database's limiter shares between the threads anyway.

It drives Dagster's own plan execution (ActiveExecution: dependencies, retries, pools,
hooks) exactly as the in-process executor does; only the steps' event streams come from
threads, and are yielded and handled on the run worker's main thread.

These are Dagster internals (``dagster._core``), all imported through ``dagster_private``,
which names each one and whose test fails on an upgrade that changes one; the version is
pinned in setup.py, and ``bulk_changes_tests`` run jobs through this executor on a real
instance.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from dagster import Field, executor

from bulk_changes.compute_log_files import capture_logs
from bulk_changes.dagster_private import (
    DagsterEvent,
    DagsterExecutionInterruptedError,
    EngineEventData,
    ExecuteRunWithPlanIterable,
    ExecutionPlan,
    Executor,
    InstanceConcurrencyContext,
    PlanExecutionContext,
    PlanExecutionContextManager,
    PlanOrchestrationContext,
    RetryMode,
    create_compute_log_file_key,
    dagster_event_sequence_for_step,
    get_retries_config,
    trigger_hook,
)
from bulk_changes.processing import stopping

STOP_GRACE_SECONDS = float(os.environ.get("BULK_CHANGES_STOP_GRACE", "20"))

_DONE = object()  # a step's thread has finished its event stream
_IDLE_WAIT_SECONDS = 1.0  # how often an idle loop looks for an interrupt


def wait_seconds(due: float) -> float:
    """How long the main thread waits for a step's next event, given Dagster's time to the
    next due retry or pool claim (0: none; negative: due already)."""
    if due == 0:
        return _IDLE_WAIT_SECONDS  # then only to look for an interrupt now and then
    return min(max(due, 0.0), _IDLE_WAIT_SECONDS)


def _run_step(step_context: Any, events: queue.Queue[tuple[str, Any]]) -> None:
    key = step_context.step.key
    try:
        for event in dagster_event_sequence_for_step(step_context):
            events.put((key, event))
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
        events.put((key, exc))
    finally:
        events.put((key, _DONE))


def _drain(
    events: queue.Queue[tuple[str, Any]],
    running: dict[str, tuple[Any, list[DagsterEvent]]],
    grace_seconds: float,
) -> Iterator[DagsterEvent]:
    """The events of the running steps until each has ended or ``grace_seconds`` passed."""
    deadline = time.monotonic() + grace_seconds
    while running and time.monotonic() < deadline:
        try:
            key, item = events.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            return
        if item is _DONE:
            running.pop(key, None)
        elif not isinstance(item, BaseException):
            yield item


def _threaded_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, max_concurrent: int
) -> Iterator[DagsterEvent]:
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with ExitStack() as stack:
        concurrency = stack.enter_context(
            InstanceConcurrencyContext(job_context.instance, job_context.dagster_run)
        )
        active = stack.enter_context(
            execution_plan.start(
                retry_mode=job_context.retry_mode,
                max_concurrent=max_concurrent,
                instance_concurrency_context=concurrency,
                step_dependency_config=job_context.step_dependency_config,
            )
        )
        # one capture for the whole process, as the in-process executor does: the steps'
        # threads share stdout and stderr
        log_key = compute_log_manager.build_log_key_for_run(
            job_context.run_id, create_compute_log_file_key()
        )
        log_context = stack.enter_context(capture_logs(compute_log_manager, log_key))
        yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)

        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        running: dict[str, tuple[Any, list[DagsterEvent]]] = {}
        while not active.is_complete or running:
            if active.check_for_interrupts():
                active.mark_interrupted()
                # Threads cannot be killed: the steps are told to stop (no new external
                # call), and given time to record where they stopped before the run ends.
                in_flight = sorted(running)
                stopping.RUN_STOPPING.set()
                yield from _drain(events, running, STOP_GRACE_SECONDS)
                raise DagsterExecutionInterruptedError(
                    f"run interrupted with steps in flight: {in_flight}"
                    + (f"; still running: {sorted(running)}" if running else "")
                )
            if not active.is_complete and len(running) < max_concurrent:
                # (not at every event: each look walks the pending steps and their pools)
                steps = active.get_steps_to_execute(limit=max_concurrent - len(running))
                yield from active.concurrency_event_iterator(job_context)
                for step in steps:
                    step_context = job_context.for_step(step, active.get_known_state())
                    running[step.key] = (step_context, [])
                    threading.Thread(
                        target=_run_step,
                        args=(step_context, events),
                        name=f"step {step.key}",
                        daemon=True,
                    ).start()
            try:
                key, item = events.get(timeout=wait_seconds(active.sleep_interval()))
            except queue.Empty:
                continue
            if item is _DONE:
                step_context, step_events = running.pop(key)
                active.verify_complete(job_context, key)
                for event in active.plan_events_iterator(job_context):
                    step_events.append(event)
                    yield event
                yield from trigger_hook(step_context, step_events)
            elif isinstance(item, BaseException):
                raise item  # the framework failed, not the op (its errors are events)
            else:
                running[key][1].append(item)
                yield item
                active.handle_event(item)


class ThreadedExecutor(Executor):
    def __init__(self, retries: RetryMode, max_concurrent: int) -> None:
        self._retries = retries
        self.max_concurrent = max(1, max_concurrent)

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps on threads of process {os.getpid()}, {self.max_concurrent} at a time",
            event_specific_data=EngineEventData.in_process(
                os.getpid(), execution_plan.step_keys_to_execute
            ),
        )

        def iterator(
            job_context: PlanExecutionContext, execution_plan: ExecutionPlan
        ) -> Iterator[DagsterEvent]:
            return _threaded_iterator(job_context, execution_plan, self.max_concurrent)

        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=iterator,
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                ),
            )
        )


@executor(
    name="threaded",
    config_schema={
        "max_concurrent": Field(int, default_value=2, is_required=False),
        "retries": get_retries_config(),
    },
)
def threaded_executor(init_context: Any) -> ThreadedExecutor:
    """Steps on threads of the run worker, ``max_concurrent`` at a time."""
    config = init_context.executor_config
    return ThreadedExecutor(
        retries=RetryMode.from_config(config["retries"]) or RetryMode.ENABLED,
        max_concurrent=int(config["max_concurrent"]),
    )
