"""What is in the dead-letter queue and why; sending it back once the cause is fixed.

Two ways into the dead-letter queue:
- the sensor put it there (a message it cannot understand, a bulk change nobody knows, a
  request intake refuses, an error that outlived ``max_receive_count`` receives): the
  message carries ``DeadLetterReason``, ``OriginalMessageId`` and ``OriginalReceiveCount``;
- SQS moved it (the queue's redrive policy: received ``maxReceiveCount`` times and never
  deleted, e.g. the sensor kept crashing on it): same message id, no reason attribute.

A redrive sends the body and the original attributes back to the main queue, then deletes
the dead letter (sent first: a failure in between gives a duplicate, which the run key
makes harmless, never a lost message). The redriven message carries ``OriginalMessageId``,
so it is the same request as before: a submit without an idempotency key, or a retry
request without a request id, does not become second work.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bulk_changes.domain.errors import BulkChangeError
from bulk_changes.resources.queue import (
    DEAD_LETTER_REASON,
    MAX_ATTRIBUTES,
    ORIGINAL_ATTRIBUTES,
    ORIGINAL_MESSAGE_ID,
    ORIGINAL_RECEIVE_COUNT,
    QueueMessage,
    SqsQueue,
)

# Seconds a looked-at dead letter stays hidden while a listing or a redrive walks the queue.
HIDE_SECONDS = 60
BY_REDRIVE_POLICY = (
    "received {count} times and never deleted: moved by the queue's redrive policy "
    "(maxReceiveCount {max_receive_count})"
)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter queue, as an operator needs to see it."""

    message_id: str  # its id in the dead-letter queue
    original_message_id: str  # the id it was first sent with
    reason: str
    receive_count: int | None  # receives on the main queue before it came here
    dead_lettered_by: str  # "sensor" or "redrive_policy"
    sent_at: str | None  # when it entered the dead-letter queue (UTC, ISO 8601)
    body: str
    attributes: dict[str, str] = field(default_factory=dict)  # the original ones

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "reason": self.reason,
            "receive_count": self.receive_count,
            "dead_lettered_by": self.dead_lettered_by,
            "sent_at": self.sent_at,
            "attributes": self.attributes,
            "body": self.body,
        }


def original_attributes(message: QueueMessage) -> dict[str, str]:
    """The attributes the message had before it was dead-lettered."""
    if ORIGINAL_ATTRIBUTES in message.attributes:
        with contextlib.suppress(ValueError, TypeError):
            packed = json.loads(message.attributes[ORIGINAL_ATTRIBUTES])
            if isinstance(packed, dict):
                return {str(k): str(v) for k, v in packed.items()}
    added = {DEAD_LETTER_REASON, ORIGINAL_MESSAGE_ID, ORIGINAL_RECEIVE_COUNT, ORIGINAL_ATTRIBUTES}
    return {k: v for k, v in message.attributes.items() if k not in added}


def describe(message: QueueMessage, max_receive_count: int) -> DeadLetter:
    attrs = message.attributes
    sent_at = None
    with contextlib.suppress(KeyError, ValueError):
        millis = int(message.system_attributes["SentTimestamp"])
        sent_at = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")
    if DEAD_LETTER_REASON in attrs:
        count: int | None = None
        with contextlib.suppress(KeyError, ValueError):
            count = int(attrs[ORIGINAL_RECEIVE_COUNT])
        return DeadLetter(
            message_id=message.message_id,
            original_message_id=attrs.get(ORIGINAL_MESSAGE_ID, message.message_id),
            reason=attrs[DEAD_LETTER_REASON],
            receive_count=count,
            dead_lettered_by="sensor",
            sent_at=sent_at,
            body=message.body,
            attributes=original_attributes(message),
        )
    # Moved by SQS: it keeps its id, and its receive count goes on counting (our own
    # look at it included), so the count is SQS's approximate one.
    return DeadLetter(
        message_id=message.message_id,
        original_message_id=attrs.get(ORIGINAL_MESSAGE_ID, message.message_id),
        reason=BY_REDRIVE_POLICY.format(
            count=message.receive_count, max_receive_count=max_receive_count
        ),
        receive_count=message.receive_count,
        dead_lettered_by="redrive_policy",
        sent_at=sent_at,
        body=message.body,
        attributes=original_attributes(message),
    )


def list_dead_letters(queue: SqsQueue, limit: int = 1000) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first; they stay in the dead-letter queue."""
    messages = queue.list_dead_letters(limit, hide_seconds=HIDE_SECONDS)
    letters = [describe(m, queue.max_receive_count) for m in messages]
    return sorted(letters, key=lambda d: (d.sent_at or "", d.message_id))


@dataclass
class RedriveResult:
    redriven: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (letter, new id)
    not_found: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "redriven": [
                {
                    "message_id": letter.message_id,
                    "original_message_id": letter.original_message_id,
                    "new_message_id": new_id,
                }
                for letter, new_id in self.redriven
            ],
            "not_found": self.not_found,
        }


def redrive(queue: SqsQueue, ids: list[str] | None, limit: int = 10_000) -> RedriveResult:
    """Send dead letters back to the main queue and delete them from the dead-letter queue.

    ``ids``: message ids (in the dead-letter queue, or the original ones); ``None``: all.
    """
    wanted = None if ids is None else set(ids)
    result = RedriveResult()
    dlq = queue.dead_letter_queue_name
    seen: set[str] = set()
    done: set[str] = set()  # ids (both kinds) of what was redriven
    keep_hidden: list[QueueMessage] = []  # looked at, not chosen: made visible again
    try:
        empty_receives = 0
        while len(seen) < limit and empty_receives < 2:
            if wanted is not None and wanted <= done:
                break
            batch = queue.receive(
                10, wait_time_seconds=0, visibility_timeout_seconds=HIDE_SECONDS, queue_name=dlq
            )
            new = [m for m in batch if m.message_id not in seen]
            # SQS samples servers: one empty answer is not proof of an empty queue.
            empty_receives = 0 if new else empty_receives + 1
            for message in new:
                seen.add(message.message_id)
                letter = describe(message, queue.max_receive_count)
                ids_of = {letter.message_id, letter.original_message_id}
                if wanted is not None and not wanted & ids_of:
                    keep_hidden.append(message)
                    continue
                result.redriven.append((letter, _send_back(queue, message, letter)))
                done |= ids_of
    finally:
        for message in keep_hidden:
            with contextlib.suppress(BulkChangeError):
                queue.change_visibility(message.receipt_handle, 0, queue_name=dlq)
    if wanted is not None:
        result.not_found = sorted(wanted - done)
    return result


def _send_back(queue: SqsQueue, message: QueueMessage, letter: DeadLetter) -> str:
    attributes = dict(letter.attributes)
    if len(attributes) < MAX_ATTRIBUTES:  # SQS allows 10; the identity needs one
        attributes[ORIGINAL_MESSAGE_ID] = letter.original_message_id
    new_id = queue.send(message.body, attributes)
    queue.delete(message.receipt_handle, queue_name=queue.dead_letter_queue_name)
    return new_id
