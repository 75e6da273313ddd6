"""The bulk-change queue: Amazon SQS (or any SQS-compatible server) through boto3.

Configured the AWS way (region, endpoint, optional keys; the usual chain of credentials
when no keys are given). Nothing connects at import or construction: the boto3 client is
created on first use. botocore's errors are translated into the project's errors
(``bulk_changes.domain.errors``) at this boundary.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from bulk_changes.domain.errors import (
    BulkChangeError,
    ConfigurationError,
    ConnectionFailed,
    PermanentError,
    RetryableError,
    ServerError,
    Throttled,
    TimeoutError_,
)

SYSTEM = "sqs"
DEAD_LETTER_REASON = "DeadLetterReason"
ORIGINAL_MESSAGE_ID = "OriginalMessageId"
ORIGINAL_ATTRIBUTES = "OriginalAttributes"
ORIGINAL_RECEIVE_COUNT = "OriginalReceiveCount"
MAX_REASON_CHARS = 256
MAX_ATTRIBUTES = 10  # SQS allows at most 10 message attributes
DLQ_RETENTION_SECONDS = 14 * 24 * 3600

_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "TooManyRequestsException",
    }
)
_MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_BAD_RECEIPT_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}
)


# Process-wide: boto3 clients are thread-safe and costly to create (~0.1 s each).
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_URLS: dict[tuple[Any, ...], str] = {}
_CLIENTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class QueueMessage:
    """One received message. ``attributes`` holds its String/Number message attributes."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)
    receive_count: int = 1
    # SQS's own attributes of the message (SentTimestamp, DeadLetterQueueSourceArn...)
    system_attributes: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """The id the message had when first sent: kept through the dead-letter queue and
        a redrive (``OriginalMessageId``), so a redriven message is the same request."""
        return self.attributes.get(ORIGINAL_MESSAGE_ID) or self.message_id


class ReceiptHandleInvalid(PermanentError):
    """The receipt handle expired or was superseded (the message was received again)."""


class QueueMissing(ConfigurationError):
    """The queue does not exist (create it with ``ensure_queues()``)."""


def readable_reason(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """One line, at most ``limit`` characters, cut with an ellipsis."""
    text = re.sub(r"\s+", " ", reason).strip() or "no reason given"
    # SQS attribute values accept only XML characters: drop the rest.
    text = "".join(ch for ch in text if ch >= " " and ch not in "\ufffe\uffff")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    return text


class SqsQueue(ConfigurableResource):
    """The bulk-change queue and its dead-letter queue.

    The connection fields have the names and defaults of dagster-aws's
    ``ResourceWithBoto3Configuration`` (the region excepted), declared here rather than
    inherited: importing ``dagster_aws`` cost every process that loads the code location
    0.3-0.55 CPU-seconds (boto3, s3transfer and its components), every run worker included."""

    region_name: str | None = Field(default="us-east-1", description="AWS region of the queues.")
    max_attempts: int = Field(
        default=5, description="boto3's retry handler: attempts, the first call included."
    )
    profile_name: str | None = Field(default=None, description="AWS profile of the session.")
    use_ssl: bool = Field(default=True, description="Whether to use SSL.")
    endpoint_url: str | None = Field(
        default=None, description="A custom endpoint (an SQS-compatible server)."
    )
    verify: bool | None = Field(default=True, description="Whether to verify SSL certificates.")
    aws_access_key_id: str | None = Field(default=None, description="AWS access key ID.")
    aws_secret_access_key: str | None = Field(default=None, description="AWS secret access key.")
    aws_session_token: str | None = Field(default=None, description="AWS session token.")
    queue_name: str = Field(default="bulk-changes", description="Name of the main queue.")
    dead_letter_queue_name: str = Field(
        default="bulk-changes-dlq", description="Name of the dead-letter queue."
    )
    visibility_timeout_seconds: int = Field(
        default=60,
        description=(
            "How long a received message stays hidden. Keep it longer than the sensor "
            "interval plus the time to launch a run: the message is deleted on a later tick."
        ),
    )
    max_receive_count: int = Field(
        default=5, description="Receives before SQS moves a message to the dead-letter queue."
    )
    wait_time_seconds: int = Field(
        default=0, description="Long polling wait of a receive (0 in sensors: ticks are short)."
    )
    create_if_missing: bool = Field(
        default=False,
        description="Create the queues (ensure_queues) on first use; handy for local servers.",
    )

    _client: Any = PrivateAttr(default=None)
    _urls: dict[str, str] = PrivateAttr(default_factory=dict)
    _ensured: bool = PrivateAttr(default=False)

    # -- connection -----------------------------------------------------------------------

    def _client_key(self) -> tuple[Any, ...]:
        return (
            self.endpoint_url or None,
            self.region_name,
            self.profile_name,
            self.aws_access_key_id or None,
            self.aws_secret_access_key or None,
            self.aws_session_token or None,
            self.use_ssl,
            self.verify,
            self.max_attempts,
        )

    def client(self) -> Any:
        """The boto3 SQS client, created on first use and shared in the process by every
        resource with the same connection settings (Dagster rebuilds resources per tick)."""
        if self._client is None:
            key = self._client_key()
            with _CLIENTS_LOCK:
                client = _CLIENTS.get(key)
                if client is None:
                    import boto3
                    from botocore.config import Config

                    session = boto3.session.Session(
                        profile_name=self.profile_name,
                        aws_access_key_id=self.aws_access_key_id or None,
                        aws_secret_access_key=self.aws_secret_access_key or None,
                        aws_session_token=self.aws_session_token or None,
                        region_name=self.region_name,
                    )
                    client = session.client(
                        "sqs",
                        endpoint_url=self.endpoint_url or None,
                        use_ssl=self.use_ssl,
                        verify=self.verify,
                        config=Config(
                            retries={"max_attempts": self.max_attempts, "mode": "standard"}
                        ),
                    )
                    _CLIENTS[key] = client
            self._client = client
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            result: dict[str, Any] = getattr(self.client(), operation)(**kwargs)
            return result
        except ClientError as exc:
            raise _translate_client_error(exc, operation) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise TimeoutError_(f"{operation}: {exc}", system=SYSTEM) from exc
        except EndpointConnectionError as exc:
            raise ConnectionFailed(f"{operation}: {exc}", system=SYSTEM) from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(f"SQS {operation}: no AWS credentials ({exc})") from exc
        except BotoCoreError as exc:
            raise RetryableError(f"{operation}: {exc}", system=SYSTEM) from exc

    def queue_url(self, name: str | None = None) -> str:
        """URL of the main queue (or of the queue ``name``)."""
        name = name or self.queue_name
        if name in self._urls:
            return self._urls[name]
        known = _URLS.get((self._client_key(), name))
        if known is not None:
            self._urls[name] = known
            return known
        if self.create_if_missing and not self._ensured:
            self.ensure_queues()
            if name in self._urls:
                return self._urls[name]
        try:
            url = str(self._call("get_queue_url", QueueName=name)["QueueUrl"])
        except QueueMissing as exc:
            raise QueueMissing(
                f"SQS queue {name!r} does not exist (create it, e.g. SqsQueue.ensure_queues())"
            ) from exc
        self._remember(name, url)
        return url

    def _on_queue(self, name: str | None, operation: str, **kwargs: Any) -> dict[str, Any]:
        """``operation`` on the queue ``name`` (default: the main queue). With
        ``create_if_missing``, a queue that vanished (a restarted local server) is created
        again once."""
        name = name or self.queue_name
        try:
            return self._call(operation, QueueUrl=self.queue_url(name), **kwargs)
        except QueueMissing:
            self._urls.pop(name, None)
            _URLS.pop((self._client_key(), name), None)
            if not self.create_if_missing:
                raise
            self.ensure_queues()
            return self._call(operation, QueueUrl=self.queue_url(name), **kwargs)

    def _remember(self, name: str, url: str) -> None:
        self._urls[name] = url
        _URLS[(self._client_key(), name)] = url

    def dead_letter_queue_url(self) -> str:
        return self.queue_url(self.dead_letter_queue_name)

    # -- administration -------------------------------------------------------------------

    def ensure_queues(self) -> dict[str, str]:
        """Create the dead-letter queue and the main queue with its redrive policy.

        Idempotent: existing queues get their attributes set to the configured ones.
        Returns ``{"queue_url", "dead_letter_queue_url", "dead_letter_queue_arn"}``.
        """
        dlq_url = self._create_or_update(
            self.dead_letter_queue_name,
            {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
        )
        dlq_arn = str(
            self._call("get_queue_attributes", QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
        )
        redrive = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receive_count)}
        )
        url = self._create_or_update(
            self.queue_name,
            {
                "VisibilityTimeout": str(self.visibility_timeout_seconds),
                "RedrivePolicy": redrive,
            },
        )
        self._ensured = True
        return {
            "queue_url": url,
            "dead_letter_queue_url": dlq_url,
            "dead_letter_queue_arn": dlq_arn,
        }

    def _create_or_update(self, name: str, attributes: dict[str, str]) -> str:
        try:
            url = str(self._call("get_queue_url", QueueName=name)["QueueUrl"])
        except QueueMissing:
            url = str(self._call("create_queue", QueueName=name, Attributes=attributes)["QueueUrl"])
        else:
            self._call("set_queue_attributes", QueueUrl=url, Attributes=attributes)
        self._remember(name, url)
        return url

    def queue_attributes(self, name: str | None = None) -> dict[str, str]:
        """All attributes of the main queue (or of ``name``): counts, redrive policy..."""
        result = self._on_queue(name, "get_queue_attributes", AttributeNames=["All"])
        return {str(k): str(v) for k, v in result.get("Attributes", {}).items()}

    # -- messages -------------------------------------------------------------------------

    def send(
        self,
        body: dict[str, Any] | str,
        attributes: dict[str, str] | None = None,
        *,
        delay_seconds: int = 0,
        queue_name: str | None = None,
    ) -> str:
        """Send one message; returns its message id."""
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        kwargs: dict[str, Any] = {"MessageBody": text}
        if attributes:
            kwargs["MessageAttributes"] = _encode_attributes(attributes)
        if delay_seconds:
            kwargs["DelaySeconds"] = delay_seconds
        return str(self._on_queue(queue_name, "send_message", **kwargs)["MessageId"])

    def receive(
        self,
        max_messages: int = 10,
        *,
        wait_time_seconds: int | None = None,
        visibility_timeout_seconds: int | None = None,
        queue_name: str | None = None,
    ) -> list[QueueMessage]:
        """Receive up to ``max_messages`` (1..10) messages; they stay hidden until deleted
        or until the visibility timeout passes."""
        kwargs: dict[str, Any] = {
            "MaxNumberOfMessages": max(1, min(10, max_messages)),
            "WaitTimeSeconds": self.wait_time_seconds
            if wait_time_seconds is None
            else wait_time_seconds,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
        }
        if visibility_timeout_seconds is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout_seconds
        result = self._on_queue(queue_name, "receive_message", **kwargs)
        return [_decode_message(raw) for raw in result.get("Messages", [])]

    def change_visibility(
        self, receipt_handle: str, seconds: int, *, queue_name: str | None = None
    ) -> None:
        """Hide a received message for ``seconds`` more (0: visible again at once)."""
        self._on_queue(
            queue_name,
            "change_message_visibility",
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=seconds,
        )

    def delete(self, receipt_handle: str, *, queue_name: str | None = None) -> None:
        """Delete a received message. Raises :class:`ReceiptHandleInvalid` when the handle
        expired or was superseded (the message will come again)."""
        self._on_queue(queue_name, "delete_message", ReceiptHandle=receipt_handle)

    def dead_letter(self, message: QueueMessage, reason: str) -> str:
        """Move ``message`` to the dead-letter queue with its reason; returns the new id.

        The original body and attributes are kept, plus ``DeadLetterReason`` (one readable
        line, at most 256 characters), ``OriginalMessageId`` and ``OriginalReceiveCount``
        (receives on the main queue). Sent first, deleted from
        the main queue second: a failure between the two gives a duplicate in the
        dead-letter queue, never a lost message.
        """
        extra = {
            DEAD_LETTER_REASON: readable_reason(reason),
            ORIGINAL_MESSAGE_ID: message.identity,
            ORIGINAL_RECEIVE_COUNT: str(message.receive_count),
        }
        original = {k: v for k, v in message.attributes.items() if k not in extra and v != ""}
        if len(original) + len(extra) <= MAX_ATTRIBUTES:
            attributes = {**original, **extra}
        else:
            attributes = {**extra, ORIGINAL_ATTRIBUTES: json.dumps(original, sort_keys=True)}
        new_id = self.send(message.body, attributes, queue_name=self.dead_letter_queue_name)
        # An expired handle: the message comes again and is dead-lettered again.
        with contextlib.suppress(ReceiptHandleInvalid):
            self.delete(message.receipt_handle)
        return new_id

    def list_dead_letters(self, max_n: int = 10, hide_seconds: int = 30) -> list[QueueMessage]:
        """Look at up to ``max_n`` dead letters without consuming them.

        Each is received hidden for ``hide_seconds`` (so the next receive returns the next
        ones, not the same ten again) and made visible again once all are read. Someone
        else reading the dead-letter queue meanwhile sees fewer; nothing is lost.
        """
        found: dict[str, QueueMessage] = {}
        try:
            empty_receives = 0
            while len(found) < max_n and empty_receives < 2:
                batch = self.receive(
                    min(10, max_n - len(found)),
                    wait_time_seconds=0,
                    visibility_timeout_seconds=hide_seconds,
                    queue_name=self.dead_letter_queue_name,
                )
                new = [m for m in batch if m.message_id not in found]
                # SQS samples servers: an empty answer is not proof of an empty queue.
                empty_receives = 0 if new else empty_receives + 1
                for message in new:
                    found[message.message_id] = message
        finally:
            for message in found.values():
                with contextlib.suppress(BulkChangeError):
                    self.change_visibility(
                        message.receipt_handle, 0, queue_name=self.dead_letter_queue_name
                    )
        return list(found.values())[:max_n]

    def purge(self, queue_name: str | None = None) -> None:
        """Remove every message of the main queue (or of ``queue_name``)."""
        self._on_queue(queue_name, "purge_queue")


# -- encoding -------------------------------------------------------------------------------


def _encode_attributes(attributes: dict[str, str]) -> dict[str, dict[str, str]]:
    encoded: dict[str, dict[str, str]] = {}
    for name, value in attributes.items():
        text = str(value)
        if text == "":
            raise ValueError(f"message attribute {name!r} is empty (SQS refuses empty values)")
        encoded[name] = {"DataType": "String", "StringValue": text}
    if len(encoded) > MAX_ATTRIBUTES:
        raise ValueError(f"{len(encoded)} message attributes: SQS allows {MAX_ATTRIBUTES}")
    return encoded


def _decode_message(raw: dict[str, Any]) -> QueueMessage:
    attributes: dict[str, str] = {}
    for name, value in (raw.get("MessageAttributes") or {}).items():
        if "StringValue" in value:  # String and Number types; Binary is not used here
            attributes[str(name)] = str(value["StringValue"])
    system = raw.get("Attributes") or {}
    try:
        receive_count = int(system.get("ApproximateReceiveCount", "1"))
    except ValueError:
        receive_count = 1
    return QueueMessage(
        message_id=str(raw["MessageId"]),
        receipt_handle=str(raw["ReceiptHandle"]),
        body=str(raw.get("Body", "")),
        attributes=attributes,
        receive_count=receive_count,
        system_attributes={str(k): str(v) for k, v in system.items()},
    )


def _translate_client_error(exc: Any, operation: str) -> BulkChangeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = f"{operation}: {error.get('Message') or code or exc}"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _MISSING_QUEUE_CODES:
        return QueueMissing(message)
    if code in _THROTTLING_CODES or status == 429:
        return Throttled(message, system=SYSTEM, status=status, code=code)
    if status is not None and status >= 500:
        return ServerError(message, system=SYSTEM, status=status, code=code)
    if operation == "delete_message" and code in _BAD_RECEIPT_CODES:
        return ReceiptHandleInvalid(message, system=SYSTEM, status=status, code=code)
    if code in {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "UnrecognizedClientException",
    }:
        return ConfigurationError(f"SQS refused the credentials: {message}")
    return PermanentError(message, system=SYSTEM, status=status, code=code)
