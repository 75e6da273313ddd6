"""The records the project works on: a bulk change, its device changes, what a step
leaves behind. Plain values (no I/O): the database adapter (``db/``) reads and writes
them, the processing layer reasons about them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulk_changes.domain.audit import Exchange
from bulk_changes.domain.state_machine import FINAL_DEVICE, DeviceStatus

# An inventory file's columns (``devices import``), in the order errors list them; every
# one but ``integration`` is a field of the stored device.
INVENTORY_COLUMNS = (
    "iccid",
    "msisdn",
    "imei",
    "integration",
    "status",
    "rate_plan",
    "communication_plan",
    "username",
    "cost_center_1",
    "cost_center_2",
    "cost_center_3",
    "revio_service_id",
)
INVENTORY_FIELDS = tuple(c for c in INVENTORY_COLUMNS if c != "integration")

# the final device statuses as stored (a tuple, for SQL ``IN`` and quick membership)
FINAL_DEVICE_VALUES = tuple(s.value for s in FINAL_DEVICE)


@dataclass(frozen=True)
class BulkChange:
    id: int
    tenant_id: str
    change_type: str
    integration: str
    status: str
    idempotency_key: str | None
    notify: list[str]
    requested_by: str | None
    source: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_run_id: str | None = None
    # the digest of the request's devices; None for bulk changes stored before it existed
    request_digest: str | None = None


@dataclass(frozen=True)
class DeviceChange:
    id: int
    bulk_change_id: int
    row_number: int
    device_key: str | None
    device_id: int | None
    request: dict[str, str]
    status: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class NewDeviceChange:
    row_number: int
    device_key: str | None
    device_id: int | None
    request: Mapping[str, Any]
    status: DeviceStatus = DeviceStatus.NEW
    error: str | None = None
    error_field: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: an external exchange, or an event of our own (system 'amop')."""

    system: str
    outcome: str
    description: str
    exchange: Exchange | None = None
    error: str | None = None
    attempt: int | None = None
    request: Any = None
    response: Any = None


@dataclass(frozen=True)
class StepSuccess:
    """An external step's success, to be recorded (``record_step_success``, or with the
    device change's end in ``finish_device_change``)."""

    step: str
    result: Any
    audit: Sequence[AuditEntry]
    attempts: int = 1
