"""The results and audit tables of each bulk change, as assets partitioned by bulk change.

Runs of ``process_bulk_change`` materialize them when a bulk change becomes final (their
metadata: the failed devices with reasons and the vendor's code, the intake rejections,
counts, duration, calls per system); the catalog shows them per bulk change. They are not
materialized from the UI: the AMOP database holds the tables, Dagster shows them.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetSpec, asset_check

from bulk_changes.domain.results import UI_FAILED_DEVICES
from bulk_changes.ops.reporting import (
    AUDIT_ASSET,
    CHECK_NO_FAILED,
    RESULTS_ASSET,
    check_evaluation,
)
from bulk_changes.partitions import bulk_change_partitions
from bulk_changes.resources.amop_db import AmopDatabase

results_spec = AssetSpec(
    RESULTS_ASSET,
    partitions_def=bulk_change_partitions,
    group_name="bulk_changes",
    description="Each bulk change's device results (AMOP database table device_changes).",
)
audit_spec = AssetSpec(
    AUDIT_ASSET,
    partitions_def=bulk_change_partitions,
    group_name="bulk_changes",
    description="Each bulk change's calls to the external systems (AMOP database table audit_log).",
)


@asset_check(
    asset=RESULTS_ASSET,
    name=CHECK_NO_FAILED,
    partitions_def=bulk_change_partitions,
    description=(
        "Warns when devices of the bulk change ended API_FAILED or ERROR. Evaluated by each "
        "run when its bulk change becomes final; executing it here reads the AMOP database again."
    ),
)
def no_failed_devices(context, amop_db: AmopDatabase) -> AssetCheckResult:  # type: ignore[no-untyped-def]
    bulk_change_id = int(context.partition_key)
    repo = amop_db.repository()
    rows, _ = repo.failed_devices(bulk_change_id, UI_FAILED_DEVICES)
    return AssetCheckResult(**check_evaluation(bulk_change_id, repo.counts(bulk_change_id), rows))
