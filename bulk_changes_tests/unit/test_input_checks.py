"""Values that would break later are refused at intake, naming the field and the reason."""

from __future__ import annotations

from datetime import date

import pytest

from bulk_changes.domain.change_types import ChangeType, Integration, ValidRow, validate_row
from bulk_changes.domain.idempotency import request_digest
from bulk_changes.domain.spreadsheet import safe_cell, to_csv
from bulk_changes.domain.validation import FIELD_LIMITS, check_iccid, check_msisdn, check_text
from bulk_changes_tests.helpers import iccid

TODAY = date(2026, 1, 1)


def errors_of(row: dict[str, object], change_type=ChangeType.USERNAME_COST_CENTER):
    result = validate_row(change_type, Integration.JASPER, row, 7, TODAY)
    assert not isinstance(result, ValidRow), "the row was accepted"
    return {e.field: e.reason for e in result}


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\t", "\x1b", "\x7f", "\x85"])
def test_control_character_inside_a_username_is_refused_with_its_position(char):
    assert errors_of({"iccid": iccid(1), "username": f"ab{char}c"}) == {
        "username": f"control character U+{ord(char):04X} at position 3; remove it"
    }


def test_lone_surrogate_from_a_json_escape_is_refused():
    assert "lone surrogate" in errors_of({"iccid": iccid(1), "username": "a\ud800"})["username"]


def test_printable_unicode_username_is_accepted():
    result = validate_row(
        ChangeType.USERNAME_COST_CENTER,
        Integration.JASPER,
        {"iccid": iccid(1), "username": "Zoë Ångström 名前"},
        1,
        TODAY,
    )
    assert isinstance(result, ValidRow) and result.request["username"] == "Zoë Ångström 名前"


@pytest.mark.parametrize(
    "digits",
    ["٨٩٠١٤١٠٣٢١١١١٨٥١٠٧٢٠", "８９０１４１０３２１１１１８５１０７２０", "⁸⁹⁰¹⁴¹⁰³²¹¹¹¹⁸⁵¹⁰⁷²⁰"],
    ids=["arabic-indic", "full-width", "superscript"],
)
def test_non_ascii_digits_in_an_iccid_are_refused_naming_the_character(digits):
    reason = check_iccid(digits)
    assert reason is not None
    assert "ASCII digits 0-9 only" in reason and f"U+{ord(digits[0]):04X}" in reason


def test_superscript_digits_in_a_row_give_a_row_error_not_a_crash():
    assert "ASCII digits" in errors_of({"iccid": "⁸⁹⁰¹⁴¹⁰³²¹¹¹¹⁸⁵¹⁰⁷²⁰", "username": "a"})["iccid"]


def test_full_width_digits_in_an_msisdn_are_refused():
    assert "ASCII digits" in (check_msisdn("５５５１２３４５６７") or "")


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"a": 1}, "an object"), (True, "a boolean"), ([1], "a list"), (float("nan"), "not finite")],
)
def test_a_value_that_is_not_text_or_a_number_is_refused_by_its_kind(value, kind):
    reason = errors_of({"iccid": iccid(1), "username": value})["username"]
    assert reason.startswith("must be text or a number") and kind in reason


def test_a_number_is_read_as_its_text():
    result = validate_row(
        ChangeType.USERNAME_COST_CENTER,
        Integration.JASPER,
        {"iccid": iccid(1), "cost_center_1": 4711},
        1,
        TODAY,
    )
    assert isinstance(result, ValidRow) and result.request == {"cost_center_1": "4711"}


@pytest.mark.parametrize("field", ["username", "cost_center_2"])
def test_a_value_over_the_field_limit_is_refused_naming_the_limit(field):
    limit = FIELD_LIMITS[field]
    reason = errors_of({"iccid": iccid(1), field: "x" * (limit + 1)})[field]
    assert reason == f"at most {limit} characters, got {limit + 1}"


def test_a_rate_plan_over_the_amop_column_is_refused():
    reason = errors_of({"iccid": iccid(1), "rate_plan": "P" * 129}, ChangeType.CARRIER_RATE_PLAN)[
        "rate_plan"
    ]
    assert reason == "at most 128 characters, got 129"


def test_a_long_unknown_field_name_is_shown_cut_short():
    [field] = errors_of({"iccid": iccid(1), "username": "a", "k" * 5000: "v"})
    assert len(field) <= 64 and field.startswith("'kkk")


def test_effective_date_with_trailing_text_is_refused():
    reason = errors_of(
        {"iccid": iccid(1), "status": "ACTIVATED", "effective_date": "2026-01-02; DROP"},
        ChangeType.DEVICE_STATUS,
    )["effective_date"]
    assert reason.startswith("not an ISO 8601 date")


def test_check_text_accepts_ordinary_text():
    assert check_text("Acme Ops / floor 3 - van #12") is None


def test_digest_is_the_same_for_the_same_cells_from_csv_and_json():
    from_csv = [{"iccid": iccid(1), "cost_center_1": "4711", "username": ""}]
    from_json = [{"iccid": iccid(1), "cost_center_1": 4711}]
    assert request_digest(from_csv) == request_digest(from_json)


def test_digest_differs_when_a_value_differs():
    assert request_digest([{"iccid": iccid(1), "username": "a"}]) != request_digest(
        [{"iccid": iccid(1), "username": "b"}]
    )


def test_digest_tells_a_list_from_its_text():
    assert request_digest([{"username": [1]}]) != request_digest([{"username": "[1]"}])


def test_digest_of_a_deeply_nested_value_does_not_raise():
    nested: object = "x"
    for _ in range(100_000):
        nested = [nested]
    assert len(request_digest([{"username": nested}])) == 64


@pytest.mark.parametrize(
    "value", ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]
)
def test_a_cell_a_spreadsheet_would_execute_gets_a_leading_quote(value):
    assert safe_cell(value) == "'" + value


def test_ordinary_cells_and_numbers_are_left_alone():
    assert [safe_cell(v) for v in ["ann", "a=b", -5, None]] == ["ann", "a=b", -5, ""]


def test_to_csv_neutralises_every_formula_cell():
    text = to_csv(["username"], [["=1+1"], ["@x"]])
    assert text == "username\r\n'=1+1\r\n'@x\r\n"
