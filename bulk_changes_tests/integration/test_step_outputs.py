"""The job's IO manager on a real Dagster instance: outputs as files where Dagster's own
filesystem IO manager keeps them, found again by a re-execution, without a debug event
per output and per input."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import (
    DagsterInstance,
    DynamicOut,
    DynamicOutput,
    ReexecutionOptions,
    execute_job,
    instance_for_test,
    job,
    op,
    reconstructable,
)

from bulk_changes.resources.step_outputs import StepOutputStore

FAIL_FLAG = "BULK_CHANGES_TEST_FAIL_SUM"


@op(out=DynamicOut(list))
def split() -> object:
    for number in range(3):
        yield DynamicOutput([number, number], mapping_key=f"part_{number}")


@op
def double(part: list) -> int:
    return sum(part) * 2


@op
def total(parts: list) -> int:
    if os.environ.get(FAIL_FLAG) == "1":
        raise RuntimeError("failing on purpose")
    return sum(parts)


@job(resource_defs={"io_manager": StepOutputStore()})
def parts_job() -> None:
    total(split().map(double).collect())


def _run(instance: DagsterInstance, **kwargs: object):  # type: ignore[no-untyped-def]
    return execute_job(reconstructable(parts_job), instance=instance, **kwargs)


def test_outputs_are_files_under_the_instance_storage_and_steps_read_them(tmp_path: Path) -> None:
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        with _run(instance) as result:
            assert result.success
            assert result.output_for_node("total") == 12
            run_id = result.run_id
        storage = Path(instance.storage_directory(), run_id)
        assert sorted(p.name for p in (storage / "split" / "result").iterdir()) == [
            "part_0",
            "part_1",
            "part_2",
        ]
        messages = [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None]
        assert not [m for m in messages if "Writing file" in m or "Loading file" in m]


def test_a_re_execution_reads_the_outputs_of_the_steps_it_skips(
    tmp_path: Path, monkeypatch
) -> None:
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        monkeypatch.setenv(FAIL_FLAG, "1")
        with _run(instance) as failed:
            assert not failed.success
            parent = failed.run_id
        monkeypatch.setenv(FAIL_FLAG, "0")
        options = ReexecutionOptions.from_failure(parent, instance)
        with _run(instance, reexecution_options=options) as again:
            assert again.success
            assert again.output_for_node("total") == 12
            started = {
                e.step_key
                for e in instance.all_logs(again.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
            }
        assert started == {"total"}  # split and double came from the parent run's files
