"""What a run tells the Dagster UI about its bulk change: run tags, and at the end the
results and audit tables as asset materializations (table and markdown metadata) with a
check that warns when devices failed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from bulk_changes.db.repository import Repository
from bulk_changes.domain.results import (
    UI_FAILED_DEVICES,
    failed_share,
    summary_markdown,
    vendor_code,
)
from bulk_changes.domain.spreadsheet import write_rows
from bulk_changes.paths import home
from bulk_changes.run_tags import outcome_tags

RESULTS_ASSET = AssetKey("bulk_change_results")
AUDIT_ASSET = AssetKey("bulk_change_audit")
CHECK_NO_FAILED = "no_failed_devices"

FAILED_SCHEMA = TableSchema(
    columns=[
        TableColumn("row", "int"),
        TableColumn("device", "string"),
        TableColumn("status", "string"),
        TableColumn("attempts", "int"),
        TableColumn("reason", "string"),
        TableColumn("vendor_code", "string"),
    ]
)
REJECTION_SCHEMA = TableSchema(
    columns=[
        TableColumn("row", "int"),
        TableColumn("field", "string"),
        TableColumn("reason", "string"),
    ]
)
CALLS_SCHEMA = TableSchema(
    columns=[
        TableColumn("system", "string"),
        TableColumn("outcome", "string"),
        TableColumn("calls", "int"),
    ]
)


def tag_run(context: Any, tags: dict[str, str]) -> None:
    """Add ``tags`` to this run (a later call overwrites a key). A context without a stored
    run (``build_op_context``) has nothing to tag."""
    instance = context.instance
    if instance.get_run_by_id(context.run_id) is not None:
        instance.add_run_tags(context.run_id, tags)


def ensure_partition(context: Any, partitions_name: str, bulk_change_id: int) -> None:
    """The bulk change's partition, so every bulk change is selectable in the UI however
    its first run was launched."""
    key = str(bulk_change_id)
    instance = context.instance
    if instance.get_run_by_id(context.run_id) is None:
        return
    if not instance.has_dynamic_partition(partitions_name, key):
        instance.add_dynamic_partitions(partitions_name, [key])


def results_dir() -> Path:
    return Path(os.environ.get("BULK_CHANGES_RESULTS_DIR") or home() / "results")


def write_results_file(repo: Repository, bulk_change_id: int) -> Path:
    """Every device's result as CSV, written next to the AMOP database: the UI shows the
    first failures, the file has them all."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bulk_change_{bulk_change_id}.csv"
    partial = path.with_suffix(".csv.part")
    with partial.open("w", newline="", encoding="utf-8") as out:
        # through domain.spreadsheet: a username like =HYPERLINK(...) stays text
        write_rows(
            out,
            ["row", "device", "status", "attempts", "field", "reason", "request", "finished_at"],
            (
                [
                    r.row_number,
                    r.device_key or "",
                    r.status,
                    r.attempts,
                    r.error_field or "",
                    r.last_error or "",
                    r.request,
                    r.finished_at.isoformat() if r.finished_at else "",
                ]
                for r in repo.device_results(bulk_change_id)
            ),
        )
    partial.replace(path)
    return path


def _failed_records(rows: list[dict[str, Any]]) -> list[TableRecord]:
    return [
        TableRecord(
            {
                "row": int(r["row_number"]),
                "device": r["device_key"] or "",
                "status": r["status"],
                "attempts": int(r["attempts"]),
                "reason": (r["last_error"] or "")[:500],
                "vendor_code": vendor_code(r["system"], r["response_status"], r["response"]),
            }
        )
        for r in rows
    ]


def check_evaluation(
    bulk_change_id: int, counts: dict[str, int], first_failures: list[dict[str, Any]]
) -> dict[str, Any]:
    """The arguments of the ``no_failed_devices`` check for one bulk change: it warns (does
    not fail: the run did its work) when devices ended API_FAILED or ERROR."""
    failed = failed_share(counts)
    return {
        "passed": failed == 0,
        "severity": AssetCheckSeverity.WARN,
        "description": (
            f"{failed} device(s) of bulk change {bulk_change_id} ended API_FAILED or ERROR"
            if failed
            else f"every device of bulk change {bulk_change_id} was processed or refused for good"
        ),
        "metadata": {
            "failed_devices": failed,
            "api_failed": int(counts.get("API_FAILED", 0)),
            "error": int(counts.get("ERROR", 0)),
            "first_failures": MetadataValue.table(
                _failed_records(first_failures[:20]), schema=FAILED_SCHEMA
            ),
        },
    }


def report_final(
    context: Any,
    repo: Repository,
    bulk_change_id: int,
    status: str,
    counts: dict[str, int],
    duration: float | None,
) -> dict[str, dict[str, int]]:
    """Tag the run with the outcome; materialize the results and audit tables of the bulk
    change (its partition) and evaluate the check. -> the calls per system and outcome
    (the audit's summary, read once for the op's output too)."""
    tag_run(context, outcome_tags(status, counts))
    partition = str(bulk_change_id)
    failed_rows, failed_total = repo.failed_devices(bulk_change_id, UI_FAILED_DEVICES)
    rejections = repo.intake_rejections(bulk_change_id)
    calls = repo.audit_summary(bulk_change_id)
    try:
        results_file: str | None = str(write_results_file(repo, bulk_change_id))
    except OSError as exc:  # a read-only or full disk: the UI still has the first failures
        context.log.warning(f"results file not written: {exc!r}")
        results_file = None
    summary = summary_markdown(
        bulk_change_id,
        status,
        counts,
        duration,
        calls,
        failed_rows,
        failed_total,
        len(rejections),
        results_file,
    )
    metadata: dict[str, Any] = {
        "summary": MetadataValue.md(summary),
        "status": status,
        "counts": MetadataValue.json(counts),
        "failed_devices_total": failed_total,
        "failed_devices": MetadataValue.table(_failed_records(failed_rows), schema=FAILED_SCHEMA),
        "intake_rejections": MetadataValue.table(
            [TableRecord(r) for r in rejections[:UI_FAILED_DEVICES]], schema=REJECTION_SCHEMA
        ),
        "duration_seconds": duration if duration is not None else -1.0,
        "all_devices": MetadataValue.md(
            f"Every device's result: `{results_file}`, or `bulk-changes status "
            f"{bulk_change_id} --devices`"
            if results_file
            else f"`bulk-changes status {bulk_change_id} --devices`"
        ),
    }
    if results_file:
        metadata["results_file"] = MetadataValue.path(results_file)
    context.log_event(
        AssetMaterialization(asset_key=RESULTS_ASSET, partition=partition, metadata=metadata)
    )
    call_rows = [
        TableRecord({"system": system, "outcome": outcome, "calls": int(n)})
        for system, outcomes in sorted(calls.items())
        for outcome, n in sorted(outcomes.items())
    ]
    context.log_event(
        AssetMaterialization(
            asset_key=AUDIT_ASSET,
            partition=partition,
            metadata={
                "calls": MetadataValue.table(call_rows, schema=CALLS_SCHEMA),
                "calls_per_system": MetadataValue.json(
                    {system: sum(o.values()) for system, o in calls.items()}
                ),
                "intake_rejections": len(rejections),
            },
        )
    )
    context.log_event(
        AssetCheckEvaluation(
            asset_key=RESULTS_ASSET,
            check_name=CHECK_NO_FAILED,
            partition=partition,
            **check_evaluation(bulk_change_id, counts, failed_rows),
        )
    )
    if failed_total:
        first = failed_rows[0]
        context.log.warning(
            f"bulk change {bulk_change_id}: {failed_total} device(s) not processed, e.g. row "
            f"{first['row_number']} {first['device_key']}: {first['status']}: {first['last_error']}"
        )
    return calls
