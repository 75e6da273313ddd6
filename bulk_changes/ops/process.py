"""The ops of ``process_bulk_change``: thin, they move data between resources and the runner."""

import os
import sys
from collections import Counter
from typing import Any

from dagster import (
    Backoff,
    Config,
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
from bulk_changes.domain.retry import RetryPolicy as DeviceRetryPolicy
from bulk_changes.domain.settings import Tenant
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.domain.step_plans import STAGE_ORDER
from bulk_changes.processing.memory import give_back_free_memory
from bulk_changes.processing.recorder import ExchangeRecorder
from bulk_changes.processing.runner import StageReport, StageRunner
from bulk_changes.processing.service_directory import directory_for
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import JasperApi, ProcessingSettings, RevioApi, TelegenceApi
from bulk_changes.resources.tenant_config import TenantConfig

# Infrastructure failures (the AMOP database away, a worker restarted) retry the op; the
# device outcomes already committed make the retry continue where it stopped.
OP_RETRY = RetryPolicy(
    max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


SWITCH_INTERVAL = float(os.environ.get("BULK_CHANGES_SWITCH_INTERVAL", "0.001"))


class LoadConfig(Config):
    bulk_change_id: int
    retry_failed_only: bool = False


class PartitionConfig(Config):
    batch_size: int = int(os.environ.get("BULK_CHANGES_BATCH_SIZE", "100"))


class AccountClients:
    """The carrier and billing clients of one bulk change, built on first use."""

    def __init__(self, carrier: Any, billing: Any, services: Any) -> None:
        self._carrier_factory, self._billing_factory = carrier, billing
        self._services = services
        self._carrier: Any = None
        self._billing: Any = None

    def carrier(self) -> Any:
        if self._carrier is None:
            self._carrier = self._carrier_factory()
        return self._carrier

    def billing(self) -> Any:
        if self._billing is None:
            self._billing = self._billing_factory()
        return self._billing

    def services(self) -> Any:
        return self._services


def _device_runner(
    context: OpExecutionContext,
    bulk_change_id: int,
    amop_db: AmopDatabase,
    tenant_config: TenantConfig,
    jasper: JasperApi,
    telegence: TelegenceApi,
    revio: RevioApi,
    processing: ProcessingSettings,
) -> StageRunner:
    repo = amop_db.repository()
    bulk = repo.get_bulk_change(bulk_change_id)
    if bulk is None:
        raise Failure(f"bulk change {bulk_change_id} does not exist")
    tenant: Tenant = tenant_config.settings().tenant(bulk.tenant_id)
    limiter = amop_db.limiter()
    carrier_api = jasper if bulk.integration == "jasper" else telegence

    def clients(recorder: ExchangeRecorder) -> AccountClients:
        return AccountClients(
            lambda: carrier_api.client(tenant.carrier_account(bulk.integration), limiter, recorder),
            lambda: revio.client(tenant.billing_account(), limiter, recorder),
            directory_for(tenant.billing_account().name, context.run_id),
        )

    # Enough threads to keep every account of the pipeline busy: more than its calls in
    # flight, so a device backing off (or waiting on the other system) never idles it.
    in_flight = tenant.carrier_account(bulk.integration).rate_limit.max_in_flight
    if tenant.revio is not None:
        in_flight += tenant.revio.rate_limit.max_in_flight
    return StageRunner(
        repo=repo,
        bulk=bulk,
        tenant=tenant,
        clients_factory=clients,
        policy=DeviceRetryPolicy(
            max_attempts=processing.max_attempts,
            base_delay=processing.base_delay_seconds,
            max_delay=processing.max_delay_seconds,
        ),
        run_id=context.run_id,
        max_workers=min(processing.max_workers, in_flight * processing.workers_per_slot),
    )


@op(out=Out(dict), retry_policy=OP_RETRY)
def load_device_changes(
    context: OpExecutionContext, config: LoadConfig, amop_db: AmopDatabase
) -> Output[dict]:
    """Open the bulk change for this run and list the device changes still to do."""
    repo = amop_db.repository()
    bulk = repo.get_bulk_change(config.bulk_change_id)
    if bulk is None:
        raise Failure(f"bulk change {config.bulk_change_id} does not exist")
    reopened = repo.start_processing(bulk.id, context.run_id, config.retry_failed_only)
    pending = repo.pending_device_change_ids(bulk.id)
    counts = repo.counts(bulk.id)
    context.log.info(
        f"bulk change {bulk.id}: {len(pending)} device changes to process, counts {counts}"
    )
    return Output(
        {"bulk_change_id": bulk.id, "device_change_ids": pending},
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


@op(out=DynamicOut(dict))
def partition_batches(context: OpExecutionContext, config: PartitionConfig, loaded: dict):
    """Batches of ``batch_size`` device changes, one mapped step each."""
    ids: list[int] = loaded["device_change_ids"]
    size = max(1, config.batch_size)
    batches = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
    # An empty batch still flows through, so the run always reaches finalize.
    for number, batch in enumerate(batches):
        yield DynamicOutput(
            {"bulk_change_id": loaded["bulk_change_id"], "device_change_ids": batch},
            mapping_key=f"batch_{number:05d}",
            metadata={"devices": len(batch)},
        )
    context.log.info(f"{len(ids)} device changes in {len(batches)} batch(es) of up to {size}")


@op(out=Out(dict), retry_policy=OP_RETRY, pool="bulk_changes_devices")
def apply_device_changes(
    context: OpExecutionContext,
    batch: dict,
    amop_db: AmopDatabase,
    tenant_config: TenantConfig,
    jasper: JasperApi,
    telegence: TelegenceApi,
    revio: RevioApi,
    processing: ProcessingSettings,
) -> Output[dict]:
    """Carrier update, Rev.io update, then the AMOP inventory and audit, device by device.

    The three stages are pipelined per device inside the batch, not run as three ops one
    after the other: with Dagster's in-process executor three ops would keep the carrier
    busy and Rev.io idle, then the reverse (makespan T(carrier) + T(Rev.io) instead of the
    larger of the two), and a step process per stage costs about a CPU-second to start.
    """
    # A thread whose answer has arrived waits for the interpreter lock up to the switch
    # interval (5 ms by default) while other device threads run: on a one-in-flight
    # account that wait is on the critical path of every call.
    sys.setswitchinterval(SWITCH_INTERVAL)
    runner = _device_runner(
        context,
        batch["bulk_change_id"],
        amop_db=amop_db,
        tenant_config=tenant_config,
        jasper=jasper,
        telegence=telegence,
        revio=revio,
        processing=processing,
    )
    report: StageReport = runner.run(batch["device_change_ids"], STAGE_ORDER)
    repo = amop_db.repository()
    # counts, not a status per device: finalize collects every batch's output at once,
    # and the AMOP database has the details
    statuses = dict(Counter(c.status for c in repo.device_changes(batch["device_change_ids"])))
    # device_changes.completed for the devices of this batch that are final: each device
    # once (finalize reports whatever no batch did)
    reported = repo.report_final_devices(batch["bulk_change_id"], batch["device_change_ids"])
    give_back_free_memory()  # a run worker lives for all the batches of a bulk change
    return Output(
        {
            "bulk_change_id": batch["bulk_change_id"],
            "devices": len(batch["device_change_ids"]),
            "statuses": statuses,
        },
        metadata={
            **report.as_metadata(),
            "devices_reported": reported,
            "statuses": MetadataValue.json(statuses),
        },
    )


# The batches come in as a dependency only: finalize reads the AMOP database, not their
# outputs, and loading each batch's output cost two event-log writes per batch (half a
# second of a 3,333-device run's finish, measured).
@op(ins={"batches_done": In(Nothing)}, retry_policy=OP_RETRY)
def finalize_bulk_change(
    context: OpExecutionContext,
    loaded: dict,
    amop_db: AmopDatabase,
    tenant_config: TenantConfig,
    jasper: JasperApi,
    telegence: TelegenceApi,
    revio: RevioApi,
    processing: ProcessingSettings,
) -> Output[dict]:
    """Make the bulk change final, once.

    The AMOP database is the source of truth, not what the batches reported: device
    changes that no batch finished (a mapped step that never ran after a re-execution)
    are carried out here before the bulk change is made final.
    """
    bulk_id = loaded["bulk_change_id"]
    repo: Repository = amop_db.repository()
    leftover = repo.pending_device_change_ids(bulk_id)
    if leftover:
        context.log.warning(
            f"{len(leftover)} device changes were not finished by their batch: finishing them now"
        )
        resources = dict(
            amop_db=amop_db,
            tenant_config=tenant_config,
            jasper=jasper,
            telegence=telegence,
            revio=revio,
            processing=processing,
        )
        _device_runner(context, bulk_id, **resources).run(leftover, STAGE_ORDER)
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
    calls = repo.audit_summary(bulk_id)
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
