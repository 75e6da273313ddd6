import pytest

from bulk_changes.domain.state_machine import (
    BulkStatus,
    DeviceStatus,
    IllegalTransition,
    check_bulk_move,
    check_device_move,
    final_bulk_status,
)


def test_processed_device_never_moves_again():
    with pytest.raises(IllegalTransition):
        check_device_move(DeviceStatus.PROCESSED, DeviceStatus.PROCESSING)


def test_api_failed_device_can_be_retried():
    check_device_move(DeviceStatus.API_FAILED, DeviceStatus.PROCESSING)


def test_error_device_is_never_retried():
    with pytest.raises(IllegalTransition):
        check_device_move(DeviceStatus.ERROR, DeviceStatus.PROCESSING)


def test_processed_bulk_change_is_final():
    with pytest.raises(IllegalTransition):
        check_bulk_move(BulkStatus.PROCESSED, BulkStatus.PROCESSING)


def test_bulk_not_final_while_a_device_is_pending():
    assert final_bulk_status({"PROCESSED": 9, "PROCESSING": 1}) is None


def test_bulk_processed_when_every_device_processed():
    assert final_bulk_status({"PROCESSED": 10}) is BulkStatus.PROCESSED


def test_bulk_with_failed_devices_is_processed_with_errors():
    assert (
        final_bulk_status({"PROCESSED": 8, "API_FAILED": 1, "ERROR": 1})
        is BulkStatus.PROCESSED_WITH_ERRORS
    )
