"""Queue messages: parsing, run keys, and agreement with the JSON Schema."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest

from bulk_changes.domain.change_types import ChangeType, Integration
from bulk_changes.domain.errors import BulkChangeError
from bulk_changes.domain.messages import (
    MAX_MESSAGE_BYTES,
    BulkChangeRef,
    MessageError,
    SubmitMessage,
    run_key_for,
)
from bulk_changes.schemas.generate import schema_text
from bulk_changes.schemas.queue_messages import parse_message

DEVICE = {"iccid": "89014103211118510720", "username": "alice"}
SUBMIT: dict[str, Any] = {
    "type": "submit_bulk_change",
    "tenant": "acme",
    "change_type": "username_cost_center",
    "integration": "jasper",
    "devices": [DEVICE],
}


def schema() -> dict[str, Any]:
    text = (
        resources.files("bulk_changes")
        .joinpath("schemas/queue-message.schema.json")
        .read_text(encoding="utf-8")
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def reason_of(body: str, attributes: dict[str, str] | None = None) -> str:
    with pytest.raises(MessageError) as info:
        parse_message(body, attributes, "m-1")
    return info.value.reason


# -- shapes ---------------------------------------------------------------------------------


def test_reference() -> None:
    assert parse_message('{"bulk_change_id": 12}', {}, "m-1") == BulkChangeRef(12, False, None)


def test_retry_reference_with_request_id() -> None:
    ref = parse_message('{"bulk_change_id": 12, "retry_failed": true, "request_id": "r-9"}')
    assert ref == BulkChangeRef(12, True, "r-9")


def test_retry_without_request_id_uses_message_id() -> None:
    ref = parse_message('{"bulk_change_id": 12, "retry_failed": true}', {}, "abc-1")
    assert ref == BulkChangeRef(12, True, "abc-1")


def test_prior_system_shape_ignores_the_body() -> None:
    attrs = {"BulkChangeId": "42", "DeviceChangeId": "7", "RetryNumber": "0"}
    assert parse_message("unused", attrs, "m") == BulkChangeRef(42, False, None)
    assert parse_message("", {"BulkChangeId": " 42 "}, "m") == BulkChangeRef(42, False, None)


def test_prior_system_shape_with_retry_attributes() -> None:
    attrs = {"BulkChangeId": "42", "RetryFailed": "true", "RequestId": "req 1"}
    assert parse_message("x", attrs, "m") == BulkChangeRef(42, True, "req 1")


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "0", "\u0661\u0662"])
def test_prior_system_shape_needs_digits(value: str) -> None:
    assert "BulkChangeId" in reason_of("x", {"BulkChangeId": value})


def test_prior_system_shape_conflicting_body() -> None:
    assert "disagree" in reason_of('{"bulk_change_id": 2}', {"BulkChangeId": "1"})


def test_submit_message() -> None:
    body = {**SUBMIT, "notify": ["ops@example.com"], "requested_by": "bob"}
    msg = parse_message(json.dumps(body), {}, "m-7")
    assert msg == SubmitMessage(
        tenant="acme",
        change_type="username_cost_center",
        integration="jasper",
        idempotency_key="sqs:m-7",
        notify=["ops@example.com"],
        devices=[DEVICE],
        requested_by="bob",
    )


def test_submit_idempotency_key_given_wins() -> None:
    msg = parse_message(json.dumps({**SUBMIT, "idempotency_key": "k-1"}), {}, "m-7")
    assert isinstance(msg, SubmitMessage)
    assert msg.idempotency_key == "k-1"
    assert msg.notify == [] and msg.requested_by is None


def test_submit_default_key_is_stable_across_redeliveries() -> None:
    body = json.dumps(SUBMIT)
    first = parse_message(body, {}, "same-id")
    again = parse_message(body, {}, "same-id")
    assert isinstance(first, SubmitMessage) and isinstance(again, SubmitMessage)
    assert first.idempotency_key == again.idempotency_key == "sqs:same-id"


# -- refusals -------------------------------------------------------------------------------


def test_message_error_is_a_project_error() -> None:
    assert issubclass(MessageError, BulkChangeError)


def test_not_json() -> None:
    assert "not JSON" in reason_of("hello")


def test_not_an_object() -> None:
    assert "not a JSON object" in reason_of("[1, 2]")
    assert "got a number" in reason_of("12")


def test_unknown_fields_are_named() -> None:
    reason = reason_of('{"bulk_change_id": 1, "colour": "red", "size": 3}')
    assert "'colour'" in reason and "'size'" in reason
    reason = reason_of(json.dumps({**SUBMIT, "priority": 1}))
    assert "'priority'" in reason


def test_missing_bulk_change_id() -> None:
    assert "missing bulk_change_id" in reason_of('{"retry_failed": true}')
    assert "missing bulk_change_id" in reason_of("{}")


@pytest.mark.parametrize("value", ['"12"', "0", "-3", "1.5", "true", "null", "[1]"])
def test_invalid_bulk_change_id(value: str) -> None:
    assert "bulk_change_id must be a positive integer" in reason_of(
        f'{{"bulk_change_id": {value}}}'
    )


def test_over_one_mib() -> None:
    body = json.dumps({**SUBMIT, "devices": [{"iccid": "x" * (MAX_MESSAGE_BYTES + 1)}]})
    assert "1 MiB" in reason_of(body)


def test_devices_must_be_a_list_of_objects() -> None:
    assert "devices must be a list of objects" in reason_of(json.dumps({**SUBMIT, "devices": {}}))
    reason = reason_of(json.dumps({**SUBMIT, "devices": [DEVICE, "89014103211118510720"]}))
    assert "item 1" in reason
    assert "empty" in reason_of(json.dumps({**SUBMIT, "devices": []}))


def test_unknown_type() -> None:
    assert "unknown message type 'cancel'" in reason_of('{"type": "cancel", "bulk_change_id": 1}')


def test_missing_submit_fields() -> None:
    body = {k: v for k, v in SUBMIT.items() if k not in ("tenant", "devices")}
    assert "missing tenant, devices" in reason_of(json.dumps(body))


def test_unknown_change_type_and_integration() -> None:
    assert "unknown change_type" in reason_of(json.dumps({**SUBMIT, "change_type": "x"}))
    assert "unknown integration" in reason_of(json.dumps({**SUBMIT, "integration": "x"}))


# -- run keys -------------------------------------------------------------------------------


def test_run_keys() -> None:
    assert run_key_for(BulkChangeRef(12)) == "bulk_change_12"
    assert run_key_for(BulkChangeRef(12, False, "ignored")) == "bulk_change_12"
    assert run_key_for(BulkChangeRef(12, True, "r_1")) == "bulk_change_12_retry_r_1"


def test_run_key_sanitised_and_distinct() -> None:
    a = run_key_for(BulkChangeRef(3, True, "req-1/ü"))
    b = run_key_for(BulkChangeRef(3, True, "req_1_"))
    c = run_key_for(BulkChangeRef(3, True, "req.1.ü"))
    for key in (a, b, c):
        assert re.fullmatch(r"[A-Za-z0-9_]+", key), key
    assert a.startswith("bulk_change_3_retry_req_1__")
    assert len({a, b, c}) == 3


def test_run_keys_of_two_databases_differ() -> None:
    assert run_key_for(BulkChangeRef(1), "aaa111") != run_key_for(BulkChangeRef(1), "bbb222")


def test_a_retry_key_carries_the_database_id_too() -> None:
    key = run_key_for(BulkChangeRef(1, True, "r_1"), "aaa111")
    assert key == "bulk_change_1_db_aaa111_retry_r_1"


# -- schema agreement -----------------------------------------------------------------------

VALID_BODIES: list[Any] = [
    {"bulk_change_id": 1},
    {"bulk_change_id": 12, "retry_failed": False},
    {"bulk_change_id": 12, "retry_failed": True, "request_id": "r-1"},
    {"bulk_change_id": 12.0},
    SUBMIT,
    {**SUBMIT, "idempotency_key": "k", "notify": [], "requested_by": None},
    {**SUBMIT, "notify": ["a@example.com"], "requested_by": "bob", "devices": [{}]},
    {**SUBMIT, "change_type": "equipment", "integration": "telegence"},
]

INVALID_BODIES: list[Any] = [
    [],
    "text",
    12,
    None,
    {},
    {"bulk_change_id": 0},
    {"bulk_change_id": -1},
    {"bulk_change_id": "12"},
    {"bulk_change_id": True},
    {"bulk_change_id": 1.5},
    {"bulk_change_id": 2**63},
    {"bulk_change_id": 1, "retry_failed": "yes"},
    {"bulk_change_id": 1, "request_id": 5},
    {"bulk_change_id": 1, "request_id": ""},
    {"bulk_change_id": 1, "request_id": "   "},
    {"bulk_change_id": 1, "request_id": "r" * 129},
    {"bulk_change_id": 1, "request_id": None},
    {"bulk_change_id": 1, "extra": 1},
    {"type": "bulk_change", "bulk_change_id": 1},
    {**SUBMIT, "type": "other"},
    {**SUBMIT, "bulk_change_id": 1},
    {k: v for k, v in SUBMIT.items() if k != "tenant"},
    {k: v for k, v in SUBMIT.items() if k != "devices"},
    {k: v for k, v in SUBMIT.items() if k != "type"},
    {**SUBMIT, "tenant": ""},
    {**SUBMIT, "tenant": " "},
    {**SUBMIT, "tenant": 5},
    {**SUBMIT, "change_type": "colour"},
    {**SUBMIT, "integration": "thingspace"},
    {**SUBMIT, "devices": []},
    {**SUBMIT, "devices": [1]},
    {**SUBMIT, "devices": {"iccid": "1"}},
    {**SUBMIT, "notify": "a@example.com"},
    {**SUBMIT, "notify": [1]},
    {**SUBMIT, "idempotency_key": ""},
    {**SUBMIT, "idempotency_key": "k" * 201},
    {**SUBMIT, "requested_by": 3},
    {**SUBMIT, "requested_by": ""},
]


def _parser_accepts(body: Any) -> bool:
    try:
        parse_message(json.dumps(body), {}, "m-1")
    except MessageError:
        return False
    return True


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b, True) for b in VALID_BODIES] + [(b, False) for b in INVALID_BODIES],
    ids=repr,
)
def test_parser_and_schema_agree(body: Any, expected: bool) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    assert validator.is_valid(body) is expected
    assert _parser_accepts(body) is expected


def test_schema_vocabularies_match_the_domain() -> None:
    submit = schema()["$defs"]["submitBulkChange"]["properties"]
    assert set(submit["change_type"]["enum"]) == {c.value for c in ChangeType}
    assert set(submit["integration"]["enum"]) == {i.value for i in Integration}


def test_the_committed_schema_is_the_one_generated_from_the_models() -> None:
    committed = (
        resources.files("bulk_changes")
        .joinpath("schemas/queue-message.schema.json")
        .read_text(encoding="utf-8")
    )
    # if this fails: python -m bulk_changes.schemas.generate
    assert committed == schema_text()
