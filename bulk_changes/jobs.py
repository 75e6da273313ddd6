"""The job: load -> partition -> carrier -> billing -> record -> collect -> finalize -> notify."""

from __future__ import annotations

from dagster import in_process_executor, job

from bulk_changes.ops.notify import deliver_notifications
from bulk_changes.ops.process import (
    apply_billing_updates,
    apply_carrier_updates,
    finalize_bulk_change,
    load_device_changes,
    partition_batches,
    record_results,
)


# In-process: the work waits on the carriers' budgets, not on CPU, and a step process
# costs 1.5-7 s to start here. Devices inside a batch run concurrently on threads up to
# the account's calls in flight; the limit itself is kept in the AMOP database.
@job(executor_def=in_process_executor, tags={"bulk_changes/kind": "bulk_change"})
def process_bulk_change() -> None:
    loaded = load_device_changes()
    batches = partition_batches(loaded)
    results = batches.map(apply_carrier_updates).map(apply_billing_updates).map(record_results)
    deliver_notifications(finalize_bulk_change(results.collect(), loaded))
