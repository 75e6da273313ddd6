"""Device-change and bulk-change statuses and the moves between them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class DeviceStatus(StrEnum):
    NEW = "NEW"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    API_FAILED = "API_FAILED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class BulkStatus(StrEnum):
    NEW = "NEW"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    PROCESSED_WITH_ERRORS = "PROCESSED_WITH_ERRORS"
    CANCELLED = "CANCELLED"


FINAL_DEVICE = frozenset(
    {DeviceStatus.PROCESSED, DeviceStatus.ERROR, DeviceStatus.API_FAILED, DeviceStatus.CANCELLED}
)
FINAL_BULK = frozenset(
    {BulkStatus.PROCESSED, BulkStatus.PROCESSED_WITH_ERRORS, BulkStatus.CANCELLED}
)

DEVICE_MOVES: Mapping[DeviceStatus, frozenset[DeviceStatus]] = {
    DeviceStatus.NEW: frozenset(
        {DeviceStatus.PROCESSING, DeviceStatus.ERROR, DeviceStatus.CANCELLED}
    ),
    DeviceStatus.PROCESSING: frozenset(
        {
            DeviceStatus.PROCESSED,
            DeviceStatus.API_FAILED,
            DeviceStatus.ERROR,
            DeviceStatus.CANCELLED,
        }
    ),
    # API_FAILED is final for a run; an operator's "retry failed devices" moves it back.
    DeviceStatus.API_FAILED: frozenset({DeviceStatus.PROCESSING, DeviceStatus.CANCELLED}),
    DeviceStatus.PROCESSED: frozenset(),
    DeviceStatus.ERROR: frozenset(),
    DeviceStatus.CANCELLED: frozenset(),
}

BULK_MOVES: Mapping[BulkStatus, frozenset[BulkStatus]] = {
    BulkStatus.NEW: frozenset({BulkStatus.PROCESSING, BulkStatus.CANCELLED}),
    BulkStatus.PROCESSING: frozenset(
        {BulkStatus.PROCESSED, BulkStatus.PROCESSED_WITH_ERRORS, BulkStatus.CANCELLED}
    ),
    # Retrying the failed devices of a finished bulk change reopens it.
    BulkStatus.PROCESSED_WITH_ERRORS: frozenset({BulkStatus.PROCESSING}),
    BulkStatus.PROCESSED: frozenset(),
    BulkStatus.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def check_device_move(current: DeviceStatus, target: DeviceStatus) -> None:
    if target not in DEVICE_MOVES[current]:
        raise IllegalTransition(f"device change cannot go from {current} to {target}")


def check_bulk_move(current: BulkStatus, target: BulkStatus) -> None:
    if target not in BULK_MOVES[current]:
        raise IllegalTransition(f"bulk change cannot go from {current} to {target}")


def final_bulk_status(counts: Mapping[str, int]) -> BulkStatus | None:
    """The bulk status its device counts imply, or None while some device is not final.

    Derived only from the device changes, never written onto them.
    """
    total = sum(counts.values())
    pending = sum(n for status, n in counts.items() if DeviceStatus(status) not in FINAL_DEVICE)
    if pending:
        return None
    if total and counts.get(DeviceStatus.CANCELLED, 0) == total:
        return BulkStatus.CANCELLED
    if counts.get(DeviceStatus.PROCESSED, 0) == total:
        return BulkStatus.PROCESSED
    return BulkStatus.PROCESSED_WITH_ERRORS
