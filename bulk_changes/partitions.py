"""Partitions of ``process_bulk_change``: one per bulk change, keyed by its id.

They make a bulk change something the UI can select: the Launchpad's partition picker and
the backfill dialog (``dagster job backfill --partitions 7,8`` too) fill in the config and
the tags, so nobody types YAML. A key is added when a run of the bulk change is asked for
(the queue sensor, ``bulk-changes retry``) or starts (any other launch).
"""

from __future__ import annotations

from typing import Any

from dagster import DynamicPartitionsDefinition, partitioned_config

from bulk_changes.run_tags import TAG_BULK_CHANGE_ID

BULK_CHANGES_PARTITIONS = "bulk_changes"
bulk_change_partitions = DynamicPartitionsDefinition(name=BULK_CHANGES_PARTITIONS)

LOAD_OP = "load_device_changes"


def run_config_for(bulk_change_id: int) -> dict[str, Any]:
    """A run of a bulk change finishes it and retries its API_FAILED devices: on a new bulk
    change there are none, so the first run and any later one (a backfill, a re-execution,
    ``bulk-changes retry``) are the same action. Steps that succeeded are never repeated
    (the AMOP database records each one)."""
    return {
        "ops": {LOAD_OP: {"config": {"bulk_change_id": bulk_change_id, "retry_failed_only": True}}}
    }


def partition_tags(bulk_change_id: int) -> dict[str, str]:
    """The tags Dagster gives a run of the bulk change's partition (the UI's partition
    status and backfills read them)."""
    return {
        "dagster/partition": str(bulk_change_id),
        "dagster/partition_set": "process_bulk_change_partition_set",
        **_tags_for_partition(str(bulk_change_id)),
    }


def _tags_for_partition(partition_key: str) -> dict[str, str]:
    # The tenant, type and integration are the op's to add (from the AMOP database): this
    # runs in the code server, which may not reach it.
    return {TAG_BULK_CHANGE_ID: partition_key}


@partitioned_config(
    partitions_def=bulk_change_partitions, tags_for_partition_key_fn=_tags_for_partition
)
def bulk_change_run_config(partition_key: str) -> dict[str, Any]:
    return run_config_for(int(partition_key))
