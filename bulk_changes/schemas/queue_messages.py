"""The queue messages' JSON bodies as pydantic models: a union discriminated on ``type``
(absent: a reference to a stored bulk change; ``"submit_bulk_change"``: a whole
request), read into ``domain.messages``' types. The prior system's shape (the id in a
message attribute, the body unused) is read from the attributes by hand: it has no JSON.

A message that does not fit is a ``MessageError`` whose reason names the field and what is
wrong with it; the sensor dead-letters it with that reason."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from bulk_changes.domain.change_types import ChangeType, Integration
from bulk_changes.domain.messages import (
    ATTR_BULK_CHANGE_ID,
    ATTR_REQUEST_ID,
    ATTR_RETRY_FAILED,
    MAX_BULK_CHANGE_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_ID_LENGTH,
    SUBMIT_TYPE,
    BulkChangeRef,
    MessageError,
    QueueMessageBody,
    SubmitMessage,
)

REFERENCE = "bulk_change_reference"  # the tag of a body without "type"

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def json_type(value: Any) -> str:
    """What a JSON value is, for a reason (a string's first 40 characters only)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bulk_change_id(value: Any) -> int:
    # JSON has one number type: 12.0 is the integer 12; true is not a number
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("bulk_change_id", "must be a positive integer, got {got}",
                                  {"got": json_type(value)})  # fmt: skip
    if value < 1 or value > MAX_BULK_CHANGE_ID:
        raise PydanticCustomError("bulk_change_id", "must be a positive integer, got {got}",
                                  {"got": str(value)})  # fmt: skip
    return value


def _one_of(known: list[str], what: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.strip() not in known:
            raise PydanticCustomError("unknown_value", "unknown {what} {value} (known: {known})",
                                      {"what": what, "value": repr(value.strip()),
                                       "known": ", ".join(known)})  # fmt: skip
        return value

    return check


def _objects(value: Any) -> Any:
    if not isinstance(value, list):
        raise PydanticCustomError("devices", "must be a list of objects, got {got}",
                                  {"got": json_type(value)})  # fmt: skip
    if not value:
        raise PydanticCustomError("devices", "is empty: a bulk change needs at least one device")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise PydanticCustomError("devices", "must be a list of objects: item {index} is {got}",
                                      {"index": index, "got": json_type(item)})  # fmt: skip
    return value


def _strings(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise PydanticCustomError("notify", "must be a list of strings (email addresses)")
    return value


def _no_default(schema: dict[str, Any]) -> None:
    """A field optional in the body whose null is refused: no ``default: null`` stated."""
    schema.pop("default", None)


# a string with something in it besides white space (a pattern a JSON Schema states too)
NonBlank = Annotated[StrictStr, Field(pattern=r"\S")]
CHANGE_TYPES = [c.value for c in ChangeType]
INTEGRATIONS = [i.value for i in Integration]


class BulkChangeRefBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        frozen=True,
        title="Process (or retry the failed devices of) a stored bulk change",
    )

    bulk_change_id: Annotated[
        int, Field(ge=1, le=MAX_BULK_CHANGE_ID), BeforeValidator(_bulk_change_id)
    ]
    retry_failed: StrictBool = Field(
        False,
        description="Retry only the failed devices; the run key becomes "
        "bulk_change_<id>_retry_<request_id>.",
    )
    # no default of its own: absent is None, null is refused (a retry names its request)
    request_id: Annotated[NonBlank, Field(max_length=MAX_REQUEST_ID_LENGTH)] = Field(
        None,  # type: ignore[assignment]
        description="Names one retry request (defaults to the SQS message id): a redelivered "
        "message gives the same run key.",
        json_schema_extra=_no_default,
    )


class SubmitBulkChangeBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        frozen=True,
        title="A whole bulk-change request, stored by intake",
    )

    type: Literal["submit_bulk_change"]
    tenant: NonBlank
    change_type: Annotated[
        StrictStr,
        BeforeValidator(_one_of(CHANGE_TYPES, "change_type")),
        Field(json_schema_extra={"enum": CHANGE_TYPES}),
    ]
    integration: Annotated[
        StrictStr,
        BeforeValidator(_one_of(INTEGRATIONS, "integration")),
        Field(json_schema_extra={"enum": INTEGRATIONS}),
    ]
    devices: Annotated[
        list[dict[str, Any]],
        BeforeValidator(_objects),
        Field(
            min_length=1,
            description="One object per device: the device key (iccid or msisdn) and the change "
            "type's fields. Values are strings or numbers, without control characters and within "
            "each field's limit (docs/input-validation.md); a device with any other value is "
            "stored as an ERROR naming the field.",
        ),
    ]
    idempotency_key: Annotated[NonBlank, Field(max_length=MAX_IDEMPOTENCY_KEY_LENGTH)] = Field(
        None,  # type: ignore[assignment]
        description='Makes a resubmission return the same bulk change; defaults to "sqs:" + the '
        "SQS message id. Bound to its request: the same key with another tenant, change type, "
        "integration or devices is dead-lettered as a conflict naming the first bulk change.",
        json_schema_extra=_no_default,
    )
    notify: Annotated[list[StrictStr], BeforeValidator(_strings)] = []
    requested_by: NonBlank | None = None


def _kind(data: Any) -> str:
    """The tag of a body: its ``type``, or a reference when it has none."""
    if isinstance(data, dict):
        kind = data.get("type", REFERENCE)
        return kind if isinstance(kind, str) else repr(kind)
    return REFERENCE


QueueBody = Annotated[
    Annotated[BulkChangeRefBody, Tag(REFERENCE)]
    | Annotated[SubmitBulkChangeBody, Tag(SUBMIT_TYPE)],
    Discriminator(
        _kind,
        custom_error_type="unknown_type",
        custom_error_message=f"unknown message type (known: {SUBMIT_TYPE!r})",
    ),
]
QUEUE_BODY: TypeAdapter[BulkChangeRefBody | SubmitBulkChangeBody] = TypeAdapter(QueueBody)


def parse_message(
    body: str,
    attributes: Mapping[str, str] | None = None,
    message_id: str = "",
) -> QueueMessageBody:
    """Read one queue message; raises :class:`MessageError` with a readable reason."""
    attrs = dict(attributes or {})
    size = len(body.encode("utf-8")) + sum(
        len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in attrs.items()
    )
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is {size} bytes, over the 1 MiB limit ({MAX_MESSAGE_BYTES})")
    if ATTR_BULK_CHANGE_ID in attrs:
        return _prior_shape(body, attrs, message_id)
    data = _load_object(body)
    try:
        parsed = QUEUE_BODY.validate_python(data)
    except ValidationError as exc:
        raise MessageError(reason(exc, data)) from None
    if isinstance(parsed, SubmitBulkChangeBody):
        return _submit(parsed, message_id)
    request_id = parsed.request_id
    if parsed.retry_failed and request_id is None:
        # Stable across redeliveries of this message; a new message is a new retry.
        request_id = message_id or None
    return BulkChangeRef(parsed.bulk_change_id, parsed.retry_failed, request_id)


def _submit(body: SubmitBulkChangeBody, message_id: str) -> SubmitMessage:
    if body.idempotency_key is not None:
        key = body.idempotency_key.strip()
    elif message_id:
        key = f"sqs:{message_id}"
    else:
        raise MessageError("submit_bulk_change message has no idempotency_key and no message id")
    return SubmitMessage(
        tenant=body.tenant.strip(),
        change_type=body.change_type.strip(),
        integration=body.integration.strip(),
        idempotency_key=key,
        notify=list(body.notify),
        devices=[dict(d) for d in body.devices],
        requested_by=body.requested_by.strip() if body.requested_by is not None else None,
    )


# -- reasons ------------------------------------------------------------------------------

_FIELDS: dict[str, tuple[str, type[BaseModel]]] = {
    REFERENCE: ("bulk change reference", BulkChangeRefBody),
    SUBMIT_TYPE: ("submit_bulk_change message", SubmitBulkChangeBody),
}
# pydantic's error types for a value of the wrong JSON type, as a reason says it
_EXPECTED = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "literal_error": "must be",
}


def reason(error: ValidationError, data: dict[str, Any]) -> str:
    """One reason for a refused body: unknown fields first, then missing ones, then the
    first field whose value is wrong, each named with what is wrong."""
    errors = error.errors(include_url=False)
    tag = _kind(data)
    if any(e["type"] == "unknown_type" for e in errors):
        return f"unknown message type {data.get('type')!r} (known: {SUBMIT_TYPE!r})"
    what, model = _FIELDS[tag]
    unknown = [str(e["loc"][1]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        names = ", ".join(repr(name) for name in sorted(unknown))
        allowed = ", ".join(sorted(model.model_fields))
        return f"unknown field(s) {names} in {what} (allowed: {allowed})"
    missing = [str(e["loc"][1]) for e in errors if e["type"] == "missing"]
    if missing and tag == REFERENCE:
        return (
            'missing bulk_change_id (expected {"bulk_change_id": N}, a message with '
            f'"type": {SUBMIT_TYPE!r}, or the {ATTR_BULK_CHANGE_ID} attribute)'
        )
    if missing:
        return f"{what} is missing {', '.join(missing)}"
    first = errors[0]
    name = str(first["loc"][1]) if len(first["loc"]) > 1 else "body"
    value = data.get(name)
    if first["type"] in ("bulk_change_id", "devices", "notify"):
        return f"{name} {first['msg']}"
    if first["type"] == "unknown_value":
        return first["msg"]
    if first["type"] == "string_pattern_mismatch":
        return f"{name} is empty"
    if first["type"] == "string_too_long":
        limit = first.get("ctx", {}).get("max_length")
        return f"{name} is longer than {limit} characters"
    if first["type"] in _EXPECTED:
        return f"{name} {_EXPECTED[first['type']]}, got {json_type(value)}"
    return f"{name}: {first['msg']}"


# -- the body as JSON, and the prior system's shape ----------------------------------------


def _load_object(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers of 4,300+ digits
        snippet = body[:60] + ("..." if len(body) > 60 else "")
        raise MessageError(
            f"body is not JSON ({exc.__class__.__name__}: {exc}); body starts {snippet!r}"
        ) from exc
    if not isinstance(data, dict):
        raise MessageError(f"body is not a JSON object (got {json_type(data)})")
    return data


def _prior_shape(body: str, attrs: Mapping[str, str], message_id: str) -> BulkChangeRef:
    raw = attrs[ATTR_BULK_CHANGE_ID].strip()
    if not raw.isdigit() or not raw.isascii():
        raise MessageError(f"attribute {ATTR_BULK_CHANGE_ID} must be digits, got {raw!r}")
    bulk_change_id = int(raw)
    if bulk_change_id < 1 or bulk_change_id > MAX_BULK_CHANGE_ID:
        raise MessageError(
            f"attribute {ATTR_BULK_CHANGE_ID} must be a positive integer, got {bulk_change_id}"
        )
    retry_text = attrs.get(ATTR_RETRY_FAILED, "").strip().lower()
    if retry_text in _TRUE:
        retry_failed = True
    elif retry_text in _FALSE:
        retry_failed = False
    else:
        raise MessageError(
            f"attribute {ATTR_RETRY_FAILED} must be true or false, got {attrs[ATTR_RETRY_FAILED]!r}"
        )
    request_id = attrs.get(ATTR_REQUEST_ID, "").strip() or None
    if request_id is not None and len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise MessageError(
            f"attribute {ATTR_REQUEST_ID} is longer than {MAX_REQUEST_ID_LENGTH} characters"
        )
    # The body is unused by the prior system; a JSON body naming another id is a conflict.
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        data = None
    if isinstance(data, dict) and "bulk_change_id" in data:
        other = data["bulk_change_id"]
        if other != bulk_change_id:
            raise MessageError(
                f"attribute {ATTR_BULK_CHANGE_ID}={bulk_change_id} and body "
                f"bulk_change_id={other!r} disagree"
            )
    if retry_failed and request_id is None:
        request_id = message_id or None
    return BulkChangeRef(bulk_change_id, retry_failed, request_id)
