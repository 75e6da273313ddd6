"""Rev.io custom fields by label, guarded JSON Patch ops, and picking the active service."""

from __future__ import annotations

import pytest

from bulk_changes.domain import revio_fields as rf
from bulk_changes.domain.errors import Rejected

LABELS = ("Cost Center 1", "Cost Center 2", "Cost Center 3")


def fields(*labels: str) -> list[dict[str, object]]:
    return [{"field_id": 100 + i, "label": label, "value": ""} for i, label in enumerate(labels)]


@pytest.mark.parametrize(
    "written",
    ["Cost Center 1", "cost center 1", "COSTCENTER1", " Cost\tCenter  1 ", "cOsT\u00a0cEnTeR 1"],
)
def test_label_matching_ignores_case_and_all_white_space(written: str) -> None:
    assert rf.find_field_index(fields("Username", written), "Cost Center 1") == 1


def test_find_field_index_none_when_missing_and_never_a_prefix_match() -> None:
    assert rf.find_field_index(fields("Cost Center 10", "Cost Center"), "Cost Center 1") is None
    assert rf.find_field_index([], "Username") is None


def test_cost_centers_found_by_label_whatever_the_order() -> None:
    shuffled = fields("Cost Center 3", "Username", "Cost Center 1", "Cost Center 2")
    ops = rf.cost_center_ops(shuffled, {1: "A", 2: "B", 3: "C"}, LABELS, "Cost Center", False)
    assert ops == [
        {"op": "replace", "path": "/fields/2/value", "value": "A"},
        {"op": "replace", "path": "/fields/3/value", "value": "B"},
        {"op": "replace", "path": "/fields/0/value", "value": "C"},
    ]


def test_guard_tests_the_label_exactly_as_read_before_each_replace() -> None:
    read = fields("Username", "  cost CENTER 2")
    ops = rf.cost_center_ops(read, {2: "B"}, LABELS, "Cost Center", True)
    assert ops == [
        {"op": "test", "path": "/fields/1/label", "value": "  cost CENTER 2"},
        {"op": "replace", "path": "/fields/1/value", "value": "B"},
    ]


def test_cost_center_1_falls_back_to_the_plain_label_only_when_its_own_is_missing() -> None:
    only_plain = fields("Username", "Cost Center")
    ops = rf.cost_center_ops(only_plain, {1: "A"}, LABELS, "Cost Center", False)
    assert ops == [{"op": "replace", "path": "/fields/1/value", "value": "A"}]

    both = fields("Cost Center", "Cost Center 1")
    ops = rf.cost_center_ops(both, {1: "A"}, LABELS, "Cost Center", False)
    assert ops == [{"op": "replace", "path": "/fields/1/value", "value": "A"}]


def test_no_fallback_for_cost_centers_2_and_3() -> None:
    with pytest.raises(Rejected) as caught:
        rf.cost_center_ops(
            fields("Cost Center"), {2: "B"}, LABELS, "Cost Center", True, service_id=42
        )
    message = str(caught.value)
    assert "'Cost Center 2'" in message and "service 42" in message
    assert "or 'Cost Center'" not in message


def test_missing_field_names_the_labels_tried_and_the_service() -> None:
    with pytest.raises(Rejected) as caught:
        rf.cost_center_ops(fields("Username"), {1: "A"}, LABELS, "Cost Center", True, service_id=7)
    assert "service 7" in str(caught.value)
    assert "'Cost Center 1' or 'Cost Center'" in str(caught.value)
    assert caught.value.system == "revio"


def test_value_already_held_gets_no_op() -> None:
    read = [{"field_id": 1, "label": "Cost Center 1", "value": "A"}]
    assert rf.cost_center_ops(read, {1: "A"}, LABELS, "Cost Center", True) == []


def test_cost_center_numbers_outside_1_to_3_are_a_bug() -> None:
    with pytest.raises(ValueError):
        rf.cost_center_ops(fields(*LABELS), {4: "D"}, LABELS, "Cost Center", True)


SERVICE = {
    "service_id": 9,
    "description": "old",
    "fields": fields("Cost Center 1", "user name"),
}


def test_username_into_the_field() -> None:
    assert rf.username_ops(SERVICE, "jo", "field", "Username", True) == [
        {"op": "test", "path": "/fields/1/label", "value": "user name"},
        {"op": "replace", "path": "/fields/1/value", "value": "jo"},
    ]


def test_username_into_the_description() -> None:
    assert rf.username_ops(SERVICE, "jo", "description", "Username", True) == [
        {"op": "replace", "path": "/description", "value": "jo"}
    ]


def test_username_into_both() -> None:
    assert rf.username_ops(SERVICE, "jo", "both", "Username", False) == [
        {"op": "replace", "path": "/fields/1/value", "value": "jo"},
        {"op": "replace", "path": "/description", "value": "jo"},
    ]


def test_username_field_missing_is_rejected_naming_label_and_service() -> None:
    service = {"service_id": 9, "description": "", "fields": fields("Cost Center 1")}
    with pytest.raises(Rejected, match=r"service 9 .*'Username'"):
        rf.username_ops(service, "jo", "field", "Username", True)
    # the description mapping needs no field
    assert rf.username_ops(service, "jo", "description", "Username", True)


def test_username_mapping_must_be_known() -> None:
    with pytest.raises(ValueError):
        rf.username_ops(SERVICE, "jo", "elsewhere", "Username", True)


def test_pick_active_service_takes_the_connected_most_recently_activated() -> None:
    records = [
        {"service_id": 1, "activated_date": "2020-01-01T00:00:00", "disconnected_date": None},
        {"service_id": 2, "activated_date": "2024-05-01T00:00:00", "disconnected_date": ""},
        {
            "service_id": 3,
            "activated_date": "2025-01-01T00:00:00",
            "disconnected_date": "2025-02-01",
        },
        {"service_id": 4, "activated_date": "2023-01-01", "disconnected_date": "  "},
    ]
    picked = rf.pick_active_service(records)
    assert picked is not None and picked["service_id"] == 2


def test_pick_active_service_none_when_all_disconnected_or_none() -> None:
    assert rf.pick_active_service([]) is None
    gone = [{"service_id": 1, "activated_date": "2020-01-01", "disconnected_date": "2021-01-01"}]
    assert rf.pick_active_service(gone) is None


def test_pick_active_service_unknown_dates_sort_first_ties_go_to_newest_id() -> None:
    records = [
        {"service_id": 5, "activated_date": None, "disconnected_date": None},
        {"service_id": 3, "activated_date": "2022-01-01T00:00:00Z", "disconnected_date": None},
        {"service_id": 8, "activated_date": "2022-01-01T00:00:00+00:00", "disconnected_date": None},
    ]
    picked = rf.pick_active_service(records)
    assert picked is not None and picked["service_id"] == 8
