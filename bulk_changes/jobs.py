"""The job: load -> partition -> carrier -> billing -> record -> collect -> finalize -> notify."""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, job, multiprocess_executor

from bulk_changes.ops.notify import deliver_notifications
from bulk_changes.ops.process import (
    apply_billing_updates,
    apply_carrier_updates,
    finalize_bulk_change,
    load_device_changes,
    partition_batches,
    record_results,
)


def executor_from_env() -> ExecutorDefinition:
    """BULK_CHANGES_EXECUTOR=in_process (default) or multiprocess (steps of different
    batches and stages overlap, so carrier and Rev.io budgets are busy at once; each step
    process costs about a CPU-second to start, see the benchmark figures in the README)."""
    if os.environ.get("BULK_CHANGES_EXECUTOR", "in_process") == "multiprocess":
        return multiprocess_executor.configured(
            {
                "max_concurrent": int(os.environ.get("BULK_CHANGES_MAX_CONCURRENT_STEPS", "4")),
                "start_method": {"forkserver": {"preload_modules": ["bulk_changes.definitions"]}},
            }
        )
    return in_process_executor


# In-process: the work waits on the carriers' budgets, not on CPU, and a step process
# costs 1.5-7 s to start here. Devices inside a batch run concurrently on threads up to
# the account's calls in flight; the limit itself is kept in the AMOP database.
#
# A run whose worker died is retried (instance run_retries) by re-executing ALL steps: the
# AMOP database skips every device step that succeeded, so nothing is called twice, while
# Dagster's from-failure selection can leave out mapped steps that never started yet keep
# their downstream steps (which then fail loading inputs that were never written).
@job(
    executor_def=executor_from_env(),
    tags={"bulk_changes/kind": "bulk_change", "dagster/retry_strategy": "ALL_STEPS"},
)
def process_bulk_change() -> None:
    loaded = load_device_changes()
    batches = partition_batches(loaded)
    results = batches.map(apply_carrier_updates).map(apply_billing_updates).map(record_results)
    deliver_notifications(finalize_bulk_change(results.collect(), loaded))
