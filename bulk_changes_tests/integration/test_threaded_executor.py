"""The threaded executor on a real (temporary SQLite) Dagster instance."""

from __future__ import annotations

import threading
import time

from dagster import (
    DagsterEventType,
    DynamicOut,
    DynamicOutput,
    Failure,
    RetryPolicy,
    execute_job,
    in_process_executor,
    instance_for_test,
    job,
    op,
    reconstructable,
)

from bulk_changes.threaded_executor import threaded_executor, wait_seconds

# module state shared by the ops of one test (steps run on threads of this process)
_barrier = threading.Barrier(2, timeout=20)
_level = {"now": 0, "most": 0}
_level_lock = threading.Lock()
_attempts: dict[str, int] = {}


@op(out=DynamicOut(int))
def fan_out():
    for n in range(4):
        yield DynamicOutput(n, mapping_key=f"n{n}")


@op
def meet_another(n: int) -> int:
    _barrier.wait()  # only passes when two steps run at the same time
    return n


@op
def count_at_once(n: int) -> int:
    with _level_lock:
        _level["now"] += 1
        _level["most"] = max(_level["most"], _level["now"])
    time.sleep(0.3)
    with _level_lock:
        _level["now"] -= 1
    return n


@op(retry_policy=RetryPolicy(max_retries=2, delay=0.05))
def fail_once(n: int) -> int:
    key = f"fail_once-{n}"
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise RuntimeError("first attempt fails")
    time.sleep(0.2)  # the other steps' retries come due while this one runs
    return n


@op
def fail_for_three(n: int) -> int:
    if n == 3:
        raise Failure("device 3 refused")
    return n


@op
def total(values: list[int]) -> int:
    return sum(values)


two_at_a_time = threaded_executor.configured({"max_concurrent": 2})


@job(executor_def=two_at_a_time)
def meeting_job():
    total(fan_out().map(meet_another).collect())


@job(executor_def=two_at_a_time)
def counting_job():
    total(fan_out().map(count_at_once).collect())


@job(executor_def=two_at_a_time)
def retrying_job():
    total(fan_out().map(fail_once).collect())


@job(executor_def=two_at_a_time)
def failing_job():
    total(fan_out().map(fail_for_three).collect())


@job(executor_def=in_process_executor)
def failing_job_in_process():
    total(fan_out().map(fail_for_three).collect())


def _run(job_def):
    """-> (success, the total or None, the run's event types)."""
    with (
        instance_for_test() as instance,
        execute_job(reconstructable(job_def), instance=instance) as result,
    ):
        events = [e.event_type for e in result.all_events]
        value = result.output_for_node("total") if result.success else None
        return result.success, value, events


def test_two_steps_run_at_the_same_time():
    success, value, _ = _run(meeting_job)
    assert success and value == 0 + 1 + 2 + 3


def test_no_more_steps_run_at_once_than_configured():
    success, _, _ = _run(counting_job)
    assert success
    assert _level["most"] == 2


def test_a_step_that_fails_is_retried_by_its_policy():
    success, value, events = _run(retrying_job)
    assert success and value == 6
    assert events.count(DagsterEventType.STEP_UP_FOR_RETRY) == 4


def test_a_failed_step_fails_the_run_and_skips_what_needs_it():
    success, _, events = _run(failing_job)
    assert not success
    assert events.count(DagsterEventType.STEP_FAILURE) == 1
    assert events.count(DagsterEventType.STEP_SUCCESS) == 4  # fan_out and three devices
    # the same story as Dagster's own in-process executor tells
    _, _, in_process = _run(failing_job_in_process)
    assert sorted(set(events)) == sorted(set(in_process))
    assert DagsterEventType.RUN_FAILURE in events


def test_the_main_thread_never_waits_past_a_due_retry():
    assert wait_seconds(-0.3) == 0.0  # due already: look at once
    assert wait_seconds(0.2) == 0.2
    assert wait_seconds(30.0) == 1.0  # still looks for an interrupt every second
    assert wait_seconds(0) == 1.0  # nothing due: only events and interrupts
