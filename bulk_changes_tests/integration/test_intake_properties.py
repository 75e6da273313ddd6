"""Intake under any input (Hypothesis): a clear error or a correct row, never an exception.

Files: any bytes as CSV or JSON. Requests: any JSON values in any fields, stored on SQLite and
PostgreSQL (which refuses NUL and over-long text that SQLite keeps).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_changes.db.repository import Repository
from bulk_changes.domain.change_types import ChangeType, Integration, allowed_columns
from bulk_changes.domain.errors import BulkChangeError, InputFileError
from bulk_changes.domain.validation import FIELD_LIMITS, check_iccid, check_text
from bulk_changes.intake import (
    IntakeError,
    SubmitRequest,
    inventory_rows,
    read_csv_rows,
    read_json_rows,
    submit_bulk_change,
)
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes_tests.helpers import iccid

COLUMNS = allowed_columns(ChangeType.USERNAME_COST_CENTER, Integration.JASPER)
KNOWN = [iccid(i) for i in range(5)]
SETTINGS = load_settings()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
cells = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["=HYPERLINK(1)", "a\x00b", "⁸⁹", "８", "x" * 256, "  ok  ", ""]),
    json_values,
)
rows = st.lists(
    st.fixed_dictionaries(
        {"iccid": st.one_of(st.sampled_from(KNOWN), cells)},
        optional={name: cells for name in COLUMNS[1:]} | {"colour": cells},
    ),
    min_size=1,
    max_size=4,
)
# database=None: no .hypothesis directory left in the checkout; a failure prints its example.
QUICK = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
_DIGITS = re.compile("[0-9]+")


@QUICK
@given(st.binary(max_size=400))
def test_any_bytes_as_csv_give_rows_of_text_or_a_file_error(data):
    try:
        found = read_csv_rows(data, "x.csv", COLUMNS, ["iccid"])
    except InputFileError as exc:
        assert str(exc).startswith("x.csv: ")
        return
    assert found and all(set(r) <= set(COLUMNS) for r in found)
    assert all(isinstance(v, str) for r in found for v in r.values())


@QUICK
@given(st.one_of(st.binary(max_size=400), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_or_json_as_a_json_file_give_objects_or_a_file_error(data):
    try:
        found = read_json_rows(data, "x.json")
    except InputFileError as exc:
        assert str(exc).startswith("x.json: ")
        return
    assert found and all(isinstance(r, dict) for r in found)


@QUICK
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["iccid", "integration", "username", "revio_service_id", "msisdn"]),
            cells,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_inventory_rows_are_checked_rows_or_an_error_naming_the_line(raw):
    try:
        checked = inventory_rows(raw, "inv.csv")
    except InputFileError as exc:
        assert re.search(r"line \d+: \w+", str(exc))
        return
    for row in checked:
        assert check_iccid(row["iccid"]) is None if row.get("iccid") else True
        assert all(check_text(v) is None for v in row.values() if isinstance(v, str))


@pytest.fixture
def inventory_repo(any_engine):
    repo = Repository(any_engine)
    repo.upsert_devices(
        "acme", inventory_rows([{"integration": "jasper", "iccid": k} for k in KNOWN], "t")
    )
    return repo


@QUICK
@given(devices=rows)
def test_any_request_is_stored_as_correct_rows_or_refused_clearly(inventory_repo, devices):
    request = SubmitRequest("acme", "username_cost_center", "jasper", devices)
    try:
        result = submit_bulk_change(inventory_repo, SETTINGS, request)
    except BulkChangeError as exc:  # IntakeError: the whole request refused, said why
        assert str(exc)
        return
    stored = inventory_repo.device_changes_of(result.id)
    assert len(stored) == len(devices)
    rejected = {r["row"]: r for r in result.rejected}
    for change in stored:
        if change.row_number in rejected:
            assert rejected[change.row_number]["field"] and rejected[change.row_number]["reason"]
            continue
        assert change.device_key in KNOWN and _DIGITS.fullmatch(change.device_key)
        assert change.request and set(change.request) <= set(COLUMNS[1:])
        for name, value in change.request.items():
            assert isinstance(value, str) and value == value.strip() and value
            assert check_text(value) is None and len(value) <= FIELD_LIMITS[name]


@QUICK
@given(
    tenant=st.one_of(st.just("acme"), st.text(max_size=80)),
    key=st.one_of(st.none(), st.text(max_size=300)),
    requested_by=st.one_of(st.none(), st.text(max_size=300)),
    notify=st.lists(st.text(max_size=40), max_size=3),
)
def test_any_request_texts_are_stored_or_refused_clearly(
    inventory_repo, tenant, key, requested_by, notify
):
    request = SubmitRequest(
        tenant,
        "username_cost_center",
        "jasper",
        [{"iccid": KNOWN[0], "username": "ann"}],
        notify=notify,
        idempotency_key=key,
        requested_by=requested_by,
    )
    try:
        result = submit_bulk_change(inventory_repo, SETTINGS, request)
    except IntakeError as exc:
        assert str(exc) and "globex" not in str(exc)
        return
    assert inventory_repo.get_bulk_change(result.id).tenant_id == "acme"


@QUICK
@given(
    st.one_of(
        st.text(max_size=300),
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {
                "type": st.just("submit_bulk_change"),
                "tenant": json_values,
                "change_type": st.sampled_from(["device_status", "equipment"]) | json_values,
                "integration": st.sampled_from(["jasper", "telegence"]) | json_values,
                "devices": st.lists(st.dictionaries(st.text(max_size=8), json_values))
                | json_values,
            },
            optional={"idempotency_key": json_values, "notify": json_values},
        ).map(json.dumps),
    )
)
def test_any_queue_message_body_is_parsed_or_refused_with_a_reason(body):
    from bulk_changes.domain.messages import MessageError, SubmitMessage
    from bulk_changes.schemas.queue_messages import parse_message

    try:
        parsed = parse_message(body, {}, "m-1")
    except MessageError as exc:
        assert exc.reason
        return
    if isinstance(parsed, SubmitMessage):
        assert all(isinstance(d, dict) for d in parsed.devices)
