from datetime import date

from bulk_changes.domain.change_types import ChangeType, Integration, ValidRow, validate_row
from bulk_changes_tests.helpers import iccid, imei

TODAY = date(2026, 11, 29)


def check(change_type, integration, row):
    return validate_row(ChangeType(change_type), Integration(integration), row, 7, TODAY)


def test_username_row_is_valid():
    result = check("username_cost_center", "jasper", {"iccid": iccid(1), "username": "ann"})
    assert isinstance(result, ValidRow)
    assert result.request == {"username": "ann"}
    assert result.device_key == iccid(1)


def test_username_row_without_any_value_names_the_field():
    (error,) = check("username_cost_center", "jasper", {"iccid": iccid(1), "username": " "})
    assert (error.row, error.field) == (7, "username")


def test_invalid_iccid_names_row_field_and_reason():
    (error,) = check("device_status", "jasper", {"iccid": "123", "status": "ACTIVATED"})
    assert error.row == 7 and error.field == "iccid" and "19 or 20" in error.reason


def test_unknown_status_lists_the_vocabulary():
    (error,) = check("device_status", "jasper", {"iccid": iccid(1), "status": "ON"})
    assert error.field == "status" and "ACTIVATED" in error.reason


def test_telegence_status_is_normalised():
    result = check("device_status", "telegence", {"msisdn": "5550000001", "status": "suspended"})
    assert isinstance(result, ValidRow) and result.request["status"] == "S"


def test_equipment_on_jasper_is_refused_with_the_reason():
    (error,) = check(
        "equipment", "jasper", {"iccid": iccid(1), "new_imei": imei(1), "reason_code": "X"}
    )
    assert error.field == "change_type" and "not offered by Jasper" in error.reason


def test_equipment_needs_reason_code_and_valid_imei():
    errors = check("equipment", "telegence", {"msisdn": "5550000001", "new_imei": "123"})
    assert {e.field for e in errors} == {"new_imei", "reason_code"}


def test_rate_plan_effective_date_more_than_180_days_ahead_is_refused_on_jasper():
    (error,) = check(
        "carrier_rate_plan",
        "jasper",
        {"iccid": iccid(1), "rate_plan": "P", "effective_date": "2027-12-01"},
    )
    assert error.field == "effective_date"


def test_unknown_field_is_named():
    (error,) = check(
        "carrier_rate_plan", "jasper", {"iccid": iccid(1), "rate_plan": "P", "colour": "red"}
    )
    assert error.field == "colour"


def test_telegence_device_named_by_msisdn():
    (error,) = check("carrier_rate_plan", "telegence", {"msisdn": "55512AB", "rate_plan": "S"})
    assert error.field == "msisdn"
