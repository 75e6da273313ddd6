"""The project's one exception tree.

Resources translate their library's errors into these at the boundary
(``raise ... from exc``); everything above the resources reasons only in these terms.
"""

from __future__ import annotations


class BulkChangeError(Exception):
    """Root of the project's errors."""


class ExternalError(BulkChangeError):
    """An external system's answer or failure.

    ``system`` names the system ("jasper", "telegence", "revio", "amop"), ``status`` the
    HTTP status when there was one, ``code`` the system's own error code when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.status = status
        self.code = code

    def __str__(self) -> str:
        parts = [self.system] if self.system else []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class RetryableError(ExternalError):
    """Trying again later may succeed: timeouts, connection errors, 5xx, garbage answers.

    ``sent`` says whether the request may have reached the system: False only when it
    surely did not (the connection was never made, the request never written out).
    A failed write that was sent may have been applied all the same.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message, system=system, status=status, code=code)
        self.retry_after = retry_after
        self.sent = sent


class TimeoutError_(RetryableError):
    """The call did not answer in time (the request may or may not have been applied)."""


class ConnectionFailed(RetryableError):
    """The system could not be reached."""


class ServerError(RetryableError):
    """A 5xx answer."""


class GarbageResponse(RetryableError):
    """An answer that is not what the API documents (not JSON, an HTML error page...)."""


class Throttled(RetryableError):
    """The account's rate limit was exceeded (Jasper 40000029, HTTP 429).

    Throttling slows the account down; it never uses up a device's attempts.
    """


class OutcomeUnknown(ExternalError):
    """A write that may have landed (its answer was lost) and that the system cannot show
    yet: a rate plan dated in the future, an activation that has not completed. Sending it
    again would repeat it blind, so the device change ends ``API_FAILED`` with this
    reason, for an operator to check at the system before retrying it."""


class PermanentError(ExternalError):
    """Retrying cannot fix it: the request is wrong or refused for good."""


class NotFound(PermanentError):
    """The device, line or service does not exist at the external system."""


class Rejected(PermanentError):
    """A 4xx refusal, or a documented failure that the caller must fix."""


class AuthenticationFailed(PermanentError):
    """Credentials refused. Permanent for the device: fixing it needs an operator."""


class ConfigurationError(BulkChangeError):
    """The project's configuration is missing or wrong."""


class ValidationError(BulkChangeError):
    """A request row is invalid: names the row, the field and the reason."""

    def __init__(self, row: int | None, field: str, reason: str) -> None:
        super().__init__(
            f"row {row}: {field}: {reason}" if row is not None else f"{field}: {reason}"
        )
        self.row = row
        self.field = field
        self.reason = reason


class InputFileError(BulkChangeError):
    """A whole input file is refused (wrong header, not UTF-8, no rows...)."""


class IdempotencyConflict(BulkChangeError):
    """An idempotency key sent again with another request than the one it was first used for.

    Answering with the first bulk change would drop the second request without a word.
    """

    def __init__(self, key: str, bulk_change_id: int, differs: str) -> None:
        super().__init__(
            f"idempotency key {key[:80]!r} was already used for bulk change {bulk_change_id} "
            f"with a different request ({differs}); send it with a new key"
        )
        self.key = key
        self.bulk_change_id = bulk_change_id
        self.differs = differs


class DevicesHeldElsewhere(BulkChangeError):
    """Devices (integration, key) that another tenant holds on the same carrier account."""

    def __init__(self, devices: list[tuple[str, str]]) -> None:
        super().__init__(f"{len(devices)} device(s) are held by another tenant")
        self.devices = devices


class StoreError(BulkChangeError):
    """The AMOP database failed a read or a write (the adapter's translation of its
    driver's error, kept as ``__cause__``). Never one device's failure: the op fails and
    Dagster retries it, unless the values themselves were refused (:class:`StoreRefused`)."""


class StoreUnavailable(StoreError):
    """The database is away or busy: the same statement may pass later."""


class StoreRefused(StoreError):
    """The database refused a statement for the values it carried (a string it cannot
    store, a value too long, a broken constraint): the same values will be refused again,
    other rows are not concerned. ``reason`` is the database's own one-line reason,
    without the statement or its values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
