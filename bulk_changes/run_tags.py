"""The run tags that tie Dagster runs to bulk changes: what the runs list shows and filters on.

Every run of ``process_bulk_change`` tags itself at start from the AMOP database (tenant,
bulk change, change type, integration), whichever way it was launched: sensor, Launchpad,
re-execution, run retry, backfill, ``dagster job execute``. Launch-time tags are not
enough: a Launchpad run and ``dagster job execute`` carry only the job's own tags.
The outcome tag is set when the bulk change becomes final, so a bulk change whose devices
failed looks different in the runs list from a clean one (the run itself succeeds: it did
its work; the devices' failures are the bulk change's, not the run's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TAG_TENANT = "bulk_changes/tenant"
TAG_BULK_CHANGE_ID = "bulk_changes/bulk_change_id"
TAG_CHANGE_TYPE = "bulk_changes/change_type"
TAG_INTEGRATION = "bulk_changes/integration"
TAG_OUTCOME = "bulk_changes/outcome"
TAG_FAILED_DEVICES = "bulk_changes/failed_devices"

# Short values: the runs list cuts a tag at about 30 characters, and "PROCESSED" and
# "PROCESSED_WITH_ERRORS" would look alike there.
OUTCOME_OK = "ok"  # PROCESSED: every device processed
OUTCOME_ERRORS = "errors"  # PROCESSED_WITH_ERRORS: devices ended API_FAILED or ERROR
OUTCOME_CANCELLED = "cancelled"  # stopped by an operator
# while a run works on the bulk change (a re-executed run starts with its parent's tags,
# the parent's outcome among them, until its first op says otherwise)
OUTCOME_RUNNING = "running"
OUTCOMES = {
    "PROCESSED": OUTCOME_OK,
    "PROCESSED_WITH_ERRORS": OUTCOME_ERRORS,
    "CANCELLED": OUTCOME_CANCELLED,
}
FAILED_STATUSES = ("API_FAILED", "ERROR")


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def bulk_change_tags(bulk: Any) -> dict[str, str]:
    """Tenant, bulk change, change type and integration of a stored bulk change."""
    return {
        TAG_TENANT: _text(bulk.tenant_id),
        TAG_BULK_CHANGE_ID: str(bulk.id),
        TAG_CHANGE_TYPE: _text(bulk.change_type),
        TAG_INTEGRATION: _text(bulk.integration),
    }


def outcome_tags(status: str, counts: Mapping[str, int]) -> dict[str, str]:
    """``bulk_changes/outcome`` (ok, errors, cancelled: from the final status) and
    ``bulk_changes/failed_devices`` (API_FAILED + ERROR; "0" for a clean one)."""
    failed = sum(int(counts.get(s, 0)) for s in FAILED_STATUSES)
    return {
        TAG_OUTCOME: OUTCOMES.get(_text(status), _text(status).lower()),
        TAG_FAILED_DEVICES: str(failed),
    }
