"""The ops of ``process_bulk_change``: thin, they move data between resources and the runner."""

import os
import sys
from collections import Counter
from collections.abc import Iterator

from dagster import (
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    Jitter,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    op,
)

from bulk_changes.db.repository import Repository
from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.model import BulkChange
from bulk_changes.domain.settings import Tenant
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.ops.batches import DeviceBatch, LoadedBulkChange, batches_of
from bulk_changes.ops.reporting import ensure_partition, report_final, tag_run
from bulk_changes.partitions import BULK_CHANGES_PARTITIONS
from bulk_changes.processing import stopping
from bulk_changes.processing.memory import give_back_free_memory
from bulk_changes.processing.runner import StageReport, StageRunner
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.device_work import DeviceWork
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.run_tags import (
    OUTCOME_RUNNING,
    TAG_BULK_CHANGE_ID,
    TAG_OUTCOME,
    bulk_change_tags,
    outcome_tags,
)

# Infrastructure failures (the AMOP database away, a worker restarted) retry the op; the
# device outcomes already committed make the retry continue where it stopped.
OP_RETRY = RetryPolicy(
    max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


# Dagster's own run retries must not retry these either (they read the run's tags).
NO_RUN_RETRY = {"dagster/max_retries": "0"}


def permanent_failure(context: OpExecutionContext, description: str) -> Failure:
    """A failure that retrying cannot fix: no op retry, no run retry, and a description
    that says what to do."""
    tag_run(context, NO_RUN_RETRY)
    return Failure(description=description, allow_retries=False)


def no_such_bulk_change(context: OpExecutionContext, bulk_change_id: int) -> Failure:
    return permanent_failure(
        context,
        f"bulk change {bulk_change_id} does not exist in this AMOP database. Check the id "
        "(`bulk-changes status ID`) and that this Dagster deployment uses the AMOP database "
        "the bulk change was submitted to; then launch a run with the right id. Retrying "
        "this run cannot help.",
    )


def tenant_of(context: OpExecutionContext, tenant_config: TenantConfig, bulk: BulkChange) -> Tenant:
    try:
        return tenant_config.settings().tenant(bulk.tenant_id)
    except ConfigurationError as exc:
        raise permanent_failure(
            context,
            f"bulk change {bulk.id}: tenant {bulk.tenant_id!r} cannot be used: {exc}. Add the "
            "tenant and its accounts to the tenants file (BULK_CHANGES_TENANTS), then "
            "re-execute this run (nothing was sent to any system).",
        ) from None


class LoadConfig(Config):
    bulk_change_id: int
    retry_failed_only: bool = False


class PartitionConfig(Config):
    # run config (the Launchpad shows it); the environment sets the default of a deployment
    batch_size: int = int(os.environ.get("BULK_CHANGES_BATCH_SIZE") or 100)


def _device_runner(
    context: OpExecutionContext, bulk: BulkChange, devices: DeviceWork
) -> StageRunner:
    return devices.runner(bulk, tenant_of(context, devices.tenant_config, bulk), context.run_id)


@op(out=Out(LoadedBulkChange), retry_policy=OP_RETRY)
def load_device_changes(
    context: OpExecutionContext,
    config: LoadConfig,
    amop_db: AmopDatabase,
    tenant_config: TenantConfig,
) -> Output[LoadedBulkChange]:
    """Tag the run with its bulk change, open the bulk change for this run and list the
    device changes still to do. A bulk change that does not exist or whose tenant is not
    configured fails the run at once (permanent: no retry)."""
    repo = amop_db.repository()
    # first, so that even a failed run is found by its bulk change
    tag_run(context, {TAG_BULK_CHANGE_ID: str(config.bulk_change_id)})
    bulk = repo.get_bulk_change(config.bulk_change_id)
    if bulk is None:
        raise no_such_bulk_change(context, config.bulk_change_id)
    tag_run(context, {**bulk_change_tags(bulk), TAG_OUTCOME: OUTCOME_RUNNING})
    ensure_partition(context, BULK_CHANGES_PARTITIONS, bulk.id)
    tenant_of(context, tenant_config, bulk)
    reopened = repo.start_processing(bulk.id, context.run_id, config.retry_failed_only)
    pending = repo.pending_device_change_ids(bulk.id)
    counts = repo.counts(bulk.id)
    context.log.info(
        f"bulk change {bulk.id}: {len(pending)} device changes to process, counts {counts}"
    )
    return Output(
        LoadedBulkChange(bulk, tuple(pending)),
        metadata={
            "bulk_change_id": bulk.id,
            "tenant": bulk.tenant_id,
            "change_type": bulk.change_type,
            "integration": bulk.integration,
            "pending": len(pending),
            "reopened_for_retry": reopened,
            "counts_before": MetadataValue.json(counts),
        },
    )


@op(out=DynamicOut(DeviceBatch))
def partition_batches(
    context: OpExecutionContext, config: PartitionConfig, loaded: LoadedBulkChange
) -> Iterator[DynamicOutput[DeviceBatch]]:
    """Batches of ``batch_size`` device changes, one mapped step each."""
    batches = batches_of(loaded, config.batch_size)
    for number, batch in enumerate(batches):
        yield DynamicOutput(
            batch,
            mapping_key=f"batch_{number:05d}",
            metadata={"devices": len(batch.device_change_ids)},
        )
    context.log.info(
        f"{len(loaded.device_change_ids)} device changes in {len(batches)} batch(es) of up "
        f"to {max(1, config.batch_size)}"
    )


@op(out=Out(dict), retry_policy=OP_RETRY, pool="bulk_changes_devices")
def apply_device_changes(
    context: OpExecutionContext,
    batch: DeviceBatch,
    devices: DeviceWork,
) -> Output[dict]:
    """Carrier update, Rev.io update, then the AMOP inventory and audit, device by device.

    The three stages are pipelined per device inside the batch, not run as three ops one
    after the other: with Dagster's in-process executor three ops would keep the carrier
    busy and Rev.io idle, then the reverse (makespan T(carrier) + T(Rev.io) instead of the
    larger of the two), and a step process per stage costs about a CPU-second to start.
    """
    # the wait for the interpreter lock after an answer arrives (ProcessingSettings)
    sys.setswitchinterval(devices.processing.switch_interval_seconds)
    runner = _device_runner(context, batch.bulk, devices)
    repo = devices.repository()
    try:
        report: StageReport = runner.run(batch.device_change_ids, STAGE_ORDER)
    except DagsterExecutionInterruptedError:
        # in-process and multiprocess executors: the interrupt reaches this thread
        stopping.RUN_STOPPING.set()
        runner.wait_for_devices(devices.processing.stop_grace_seconds)
        stop_bulk_change(context, repo, batch.bulk_change_id)
        raise
    if stopping.requested():
        # the threaded executor: it set the signal and waits for this step to return
        stop_bulk_change(context, repo, batch.bulk_change_id)
        return Output(
            {"bulk_change_id": batch.bulk_change_id, "devices": 0, "statuses": {}},
            metadata={**report.as_metadata(), "stopped_by_operator": True},
        )
    # counts, not a status per device: finalize collects every batch's output at once,
    # and the AMOP database has the details
    statuses = dict(Counter(c.status for c in repo.device_changes(batch.device_change_ids)))
    # device_changes.completed for the devices of this batch that are final: each device
    # once (finalize reports whatever no batch did)
    reported = repo.report_final_devices(batch.bulk_change_id, batch.device_change_ids)
    give_back_free_memory()  # a run worker lives for all the batches of a bulk change
    return Output(
        {
            "bulk_change_id": batch.bulk_change_id,
            "devices": len(batch.device_change_ids),
            "statuses": statuses,
        },
        metadata={
            **report.as_metadata(),
            "devices_reported": reported,
            "statuses": MetadataValue.json(statuses),
        },
    )


def stop_bulk_change(context: OpExecutionContext, repo: Repository, bulk_change_id: int) -> None:
    """The run was terminated: the bulk change is CANCELLED, each device not final with it
    (reason: stopped by an operator, and the steps it had completed), never left
    PROCESSING. Final, not resumable: a stop is an operator saying "not this" (a bulk
    change sent by mistake); what was done stays in the audit, and the rest can be sent
    again as a new bulk change."""
    changed, counts = repo.cancel_bulk_change(
        bulk_change_id, stopping.OPERATOR_STOP_REASON, context.run_id
    )
    tag_run(context, outcome_tags("CANCELLED", counts))
    context.log.warning(
        f"bulk change {bulk_change_id} stopped by an operator: {counts}"
        + ("" if changed else " (it was already final)")
    )


# The batches come in as a dependency only: finalize reads the AMOP database, not their
# outputs, and loading each batch's output cost two event-log writes per batch (half a
# second of a 3,333-device run's finish, measured).
@op(ins={"batches_done": In(Nothing)}, retry_policy=OP_RETRY)
def finalize_bulk_change(
    context: OpExecutionContext,
    loaded: LoadedBulkChange,
    devices: DeviceWork,
) -> Output[dict]:
    """Make the bulk change final, once.

    The AMOP database is the source of truth, not what the batches reported: device
    changes that no batch finished (a mapped step that never ran after a re-execution)
    are carried out here before the bulk change is made final.
    """
    bulk_id = loaded.bulk_change_id
    repo: Repository = devices.repository()
    leftover = repo.pending_device_change_ids(bulk_id)
    if leftover:
        context.log.warning(
            f"{len(leftover)} device changes were not finished by their batch: finishing them now"
        )
        _device_runner(context, loaded.bulk, devices).run(leftover, STAGE_ORDER)
    status, counts, changed = repo.finalize(bulk_id)
    bulk = repo.get_bulk_change(bulk_id)
    if BulkStatus(status) not in FINAL_BULK:
        raise Failure(f"bulk change {bulk_id} is not final: device counts {counts}")
    duration = (
        (bulk.finished_at - bulk.started_at).total_seconds()
        if bulk and bulk.finished_at and bulk.started_at
        else None
    )
    context.log.info(
        f"bulk change {bulk_id} is {status}: {counts}" + ("" if changed else " (already final)")
    )
    calls = report_final(context, repo, bulk_id, status, counts, duration)
    return Output(
        {"bulk_change_id": bulk_id, "status": status, "counts": counts},
        metadata={
            "bulk_change_id": bulk_id,
            "status": status,
            "made_final_by_this_run": changed,
            "finished_here": len(leftover),
            "counts": MetadataValue.json(counts),
            "calls": MetadataValue.json(calls),
            "duration_seconds": duration if duration is not None else -1.0,
        },
    )
