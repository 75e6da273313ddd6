"""Queue messages: what a message on the bulk-change queue may say, and its run key.

Pure: parses the body text and the (string) message attributes of one message. The shapes
(JSON Schema: ``bulk_changes/schemas/queue-message.schema.json``):

1. ``{"bulk_change_id": 12}``, optionally ``"retry_failed": true`` and ``"request_id": "..."``:
   process (or retry the failed devices of) a bulk change already stored.
2. The prior system's shape: the body is unused, the id travels in the message attribute
   ``BulkChangeId`` (optional attributes ``RetryFailed`` and ``RequestId``).
3. ``{"type": "submit_bulk_change", "tenant", "change_type", "integration", "devices": [...],
   "idempotency_key"?, "notify"?, "requested_by"?}``: a whole request, stored by intake.

Anything else is a :class:`MessageError` whose ``reason`` says what is wrong; such a
message goes to the dead-letter queue with that reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bulk_changes.domain.change_types import ChangeType, Integration
from bulk_changes.domain.errors import BulkChangeError

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BULK_CHANGE_ID = 2**63 - 1
MAX_REQUEST_ID_LENGTH = 128
MAX_IDEMPOTENCY_KEY_LENGTH = 200
SUBMIT_TYPE = "submit_bulk_change"

# Prior system: everything travels in message attributes.
ATTR_BULK_CHANGE_ID = "BulkChangeId"
ATTR_RETRY_FAILED = "RetryFailed"
ATTR_REQUEST_ID = "RequestId"

REF_FIELDS = frozenset({"bulk_change_id", "retry_failed", "request_id"})
SUBMIT_REQUIRED = ("type", "tenant", "change_type", "integration", "devices")
SUBMIT_FIELDS = frozenset({*SUBMIT_REQUIRED, "idempotency_key", "notify", "requested_by"})

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_RUN_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class MessageError(BulkChangeError):
    """A queue message that cannot be understood; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BulkChangeRef:
    """Process the stored bulk change ``bulk_change_id`` (or retry its failed devices)."""

    bulk_change_id: int
    retry_failed: bool = False
    request_id: str | None = None


@dataclass(frozen=True)
class SubmitMessage:
    """A whole bulk-change request carried by the message, to be stored by intake."""

    tenant: str
    change_type: str
    integration: str
    idempotency_key: str
    notify: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    requested_by: str | None = None


QueueMessageBody = BulkChangeRef | SubmitMessage


def parse_message(
    body: str,
    attributes: Mapping[str, str] | None = None,
    message_id: str = "",
) -> QueueMessageBody:
    """Parse one queue message; raises :class:`MessageError` with a readable reason."""
    attrs = dict(attributes or {})
    size = len(body.encode("utf-8")) + sum(
        len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in attrs.items()
    )
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is {size} bytes, over the 1 MiB limit ({MAX_MESSAGE_BYTES})")
    if ATTR_BULK_CHANGE_ID in attrs:
        return _parse_prior_shape(body, attrs, message_id)
    data = _load_object(body)
    if "type" in data:
        kind = data["type"]
        if kind == SUBMIT_TYPE:
            return _parse_submit(data, message_id)
        raise MessageError(f"unknown message type {kind!r} (known: {SUBMIT_TYPE!r})")
    return _parse_ref(data, message_id)


def run_key_for(ref: BulkChangeRef, database_id: str = "") -> str:
    """``bulk_change_<id>``, or ``bulk_change_<id>_retry_<request_id>`` for a retry request;
    with ``database_id`` (the AMOP database's own id) ``_db_<database_id>`` follows the
    bulk change's id: bulk change 1 of two databases are two runs on one Dagster instance.

    The request id is reduced to ``[A-Za-z0-9_]``; when that changed it, a short hash of
    the original is appended so that different request ids never share a key.
    """
    key = f"bulk_change_{ref.bulk_change_id}"
    if database_id:
        key += f"_db_{_RUN_KEY_UNSAFE.sub('_', database_id)}"
    if not ref.retry_failed:
        return key
    request_id = ref.request_id or "retry"
    safe = _RUN_KEY_UNSAFE.sub("_", request_id)
    if safe != request_id:
        digest = hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe}_{digest}"
    return f"{key}_retry_{safe}"


# -- shapes -------------------------------------------------------------------------------


def _load_object(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers of 4,300+ digits
        snippet = body[:60] + ("..." if len(body) > 60 else "")
        raise MessageError(
            f"body is not JSON ({exc.__class__.__name__}: {exc}); body starts {snippet!r}"
        ) from exc
    if not isinstance(data, dict):
        raise MessageError(f"body is not a JSON object (got {_json_type(data)})")
    return data


def _parse_prior_shape(body: str, attrs: Mapping[str, str], message_id: str) -> BulkChangeRef:
    raw = attrs[ATTR_BULK_CHANGE_ID].strip()
    if not raw.isdigit() or not raw.isascii():
        raise MessageError(f"attribute {ATTR_BULK_CHANGE_ID} must be digits, got {raw!r}")
    bulk_change_id = _check_id(int(raw), f"attribute {ATTR_BULK_CHANGE_ID}")
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
    if request_id is not None:
        _check_request_id(request_id, f"attribute {ATTR_REQUEST_ID}")
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


def _parse_ref(data: dict[str, Any], message_id: str) -> BulkChangeRef:
    _reject_unknown(data, REF_FIELDS, "bulk change reference")
    if "bulk_change_id" not in data:
        raise MessageError(
            'missing bulk_change_id (expected {"bulk_change_id": N}, a message with '
            f'"type": {SUBMIT_TYPE!r}, or the {ATTR_BULK_CHANGE_ID} attribute)'
        )
    bulk_change_id = _check_id(data["bulk_change_id"], "bulk_change_id")
    retry_failed = data.get("retry_failed", False)
    if not isinstance(retry_failed, bool):
        raise MessageError(f"retry_failed must be true or false, got {_json_type(retry_failed)}")
    request_id = data.get("request_id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise MessageError(f"request_id must be a string, got {_json_type(request_id)}")
        _check_request_id(request_id, "request_id")
    elif "request_id" in data:
        raise MessageError("request_id must be a string, got null")
    if retry_failed and request_id is None:
        # Stable across redeliveries of this message; a new message is a new retry.
        request_id = message_id or None
    return BulkChangeRef(bulk_change_id, retry_failed, request_id)


def _parse_submit(data: dict[str, Any], message_id: str) -> SubmitMessage:
    _reject_unknown(data, SUBMIT_FIELDS, "submit_bulk_change message")
    missing = [name for name in SUBMIT_REQUIRED if name not in data]
    if missing:
        raise MessageError(f"submit_bulk_change message is missing {', '.join(missing)}")
    tenant = _text(data, "tenant")
    change_type = _text(data, "change_type")
    if change_type not in {c.value for c in ChangeType}:
        known = ", ".join(c.value for c in ChangeType)
        raise MessageError(f"unknown change_type {change_type!r} (known: {known})")
    integration = _text(data, "integration")
    if integration not in {i.value for i in Integration}:
        known = ", ".join(i.value for i in Integration)
        raise MessageError(f"unknown integration {integration!r} (known: {known})")
    devices = data["devices"]
    if not isinstance(devices, list):
        raise MessageError(f"devices must be a list of objects, got {_json_type(devices)}")
    if not devices:
        raise MessageError("devices is empty: a bulk change needs at least one device")
    for index, device in enumerate(devices):
        if not isinstance(device, dict):
            raise MessageError(
                f"devices must be a list of objects: item {index} is {_json_type(device)}"
            )
    notify = data.get("notify", [])
    if not isinstance(notify, list) or not all(isinstance(a, str) for a in notify):
        raise MessageError("notify must be a list of strings (email addresses)")
    requested_by = data.get("requested_by")
    if requested_by is not None:
        requested_by = _text(data, "requested_by")
    if "idempotency_key" in data:
        idempotency_key = _text(data, "idempotency_key")
        if len(data["idempotency_key"]) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise MessageError(
                f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            )
    elif message_id:
        idempotency_key = f"sqs:{message_id}"
    else:
        raise MessageError("submit_bulk_change message has no idempotency_key and no message id")
    return SubmitMessage(
        tenant=tenant,
        change_type=change_type,
        integration=integration,
        idempotency_key=idempotency_key,
        notify=list(notify),
        devices=[dict(d) for d in devices],
        requested_by=requested_by,
    )


# -- helpers ------------------------------------------------------------------------------


def _reject_unknown(data: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        known = ", ".join(sorted(allowed))
        raise MessageError(f"unknown field(s) {names} in {what} (allowed: {known})")


def _check_id(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{where} must be a positive integer, got {_json_type(value)}")
    if value < 1 or value > MAX_BULK_CHANGE_ID:
        raise MessageError(f"{where} must be a positive integer, got {value}")
    return value


def _check_request_id(value: str, where: str) -> None:
    if not value.strip():
        raise MessageError(f"{where} is empty")
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise MessageError(f"{where} is longer than {MAX_REQUEST_ID_LENGTH} characters")


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise MessageError(f"{name} is empty")
    return value.strip()


def _json_type(value: Any) -> str:
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
