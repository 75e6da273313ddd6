from bulk_changes.domain.validation import (
    check_iccid,
    check_imei,
    check_msisdn,
    luhn_check_digit,
    luhn_valid,
    normalize_status,
)
from bulk_changes_tests.helpers import iccid, imei


def test_luhn_accepts_known_valid_number():
    assert luhn_valid("79927398713")


def test_luhn_rejects_wrong_check_digit():
    assert not luhn_valid("79927398710")


def test_luhn_check_digit_completes_a_number():
    assert luhn_check_digit("7992739871") == "3"


def test_valid_iccid_passes():
    assert check_iccid(iccid(42)) is None


def test_iccid_with_wrong_check_digit_names_luhn():
    value = iccid(42)
    broken = value[:-1] + str((int(value[-1]) + 1) % 10)
    assert "Luhn" in check_iccid(broken)


def test_iccid_too_short_names_length():
    assert "19 or 20" in check_iccid("8901410000000001")


def test_iccid_with_letters_is_refused():
    assert "digits" in check_iccid("89014100000000000AB")


def test_valid_imei_passes():
    assert check_imei(imei(7)) is None


def test_imei_wrong_length_is_refused():
    assert "15 digits" in check_imei("35000000000001")


def test_imei_wrong_check_digit_is_refused():
    value = imei(7)
    assert "Luhn" in check_imei(value[:-1] + str((int(value[-1]) + 1) % 10))


def test_msisdn_digits_only():
    assert check_msisdn("5551234567") is None
    assert "digits" in check_msisdn("+15551234567")


def test_jasper_status_vocabulary():
    assert normalize_status("jasper", "activated") == "ACTIVATED"
    assert normalize_status("jasper", "ACTIVE") is None


def test_telegence_status_names_become_letters():
    assert normalize_status("telegence", "suspended") == "S"
    assert normalize_status("telegence", "A") == "A"
    assert normalize_status("telegence", "DEACTIVATED") is None
