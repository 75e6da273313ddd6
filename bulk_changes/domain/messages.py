"""Queue messages: what a message on the bulk-change queue may say, and its run key.

The shapes (read by ``bulk_changes.schemas.queue_messages``; JSON Schema generated from its
models: ``bulk_changes/schemas/queue-message.schema.json``):

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
import re
from dataclasses import dataclass, field
from typing import Any

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
