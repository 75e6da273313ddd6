"""The job: load -> partition -> apply (carrier, Rev.io, AMOP per device) -> collect ->
finalize -> notify."""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, job, multiprocess_executor

from bulk_changes.ops.notify import deliver_notifications
from bulk_changes.ops.process import (
    apply_device_changes,
    finalize_bulk_change,
    load_device_changes,
    partition_batches,
)
from bulk_changes.partitions import bulk_change_run_config
from bulk_changes.threaded_executor import threaded_executor


def executor_from_env() -> ExecutorDefinition:
    """BULK_CHANGES_EXECUTOR:
    - threaded (default): steps on threads of the run worker, BULK_CHANGES_MAX_CONCURRENT_STEPS
      (default 2) at a time. Two batches overlap, so the carrier has the next batch's
      devices to call while the last devices of the other finish (see threaded_executor).
    - in_process: one step at a time in the run worker.
    - multiprocess: a process per step (about a CPU-second and 150 MB each to start).
    See the figures in docs/benchmarks.md."""
    choice = os.environ.get("BULK_CHANGES_EXECUTOR", "threaded")
    concurrent = int(os.environ.get("BULK_CHANGES_MAX_CONCURRENT_STEPS", "2"))
    if choice == "multiprocess":
        return multiprocess_executor.configured(
            {
                "max_concurrent": concurrent,
                "start_method": {"forkserver": {"preload_modules": ["bulk_changes.definitions"]}},
            }
        )
    if choice == "in_process":
        return in_process_executor
    return threaded_executor.configured({"max_concurrent": concurrent})


# Steps in the run worker: the work waits on the carriers' budgets, not on CPU, and a step
# process costs 1.5-7 s to start here. Devices inside a batch run concurrently on threads,
# each device carrier -> Rev.io -> AMOP, so both budgets are busy at once; the limits
# themselves are kept in the AMOP database.
#
# A run whose worker died is retried (instance run_retries) by re-executing ALL steps: the
# AMOP database skips every device step that succeeded, so nothing is called twice, while
# Dagster's from-failure selection can leave out mapped steps that never started yet keep
# their downstream steps (which then fail loading inputs that were never written).
#
# Partitioned by bulk change (bulk_changes.partitions): the Launchpad's partition picker and
# the backfill dialog fill in the config, so no one types YAML; the config also keeps the
# resources' settings out of the Launchpad's defaults.
@job(
    config=bulk_change_run_config,
    executor_def=executor_from_env(),
    tags={"bulk_changes/kind": "bulk_change", "dagster/retry_strategy": "ALL_STEPS"},
)
def process_bulk_change() -> None:
    loaded = load_device_changes()
    batches = partition_batches(loaded)
    results = batches.map(apply_device_changes)
    deliver_notifications(finalize_bulk_change(loaded, batches_done=results.collect()))
