"""Retry decisions: an error and an attempt in, a delay or a give-up out.

A failure of a call that was sent may hide a write that landed: a timeout while waiting
for the answer, a dropped connection after the request left, a 5xx, an answer that does
not confirm the write (Jasper's 200 without ``iccid``, a gateway's HTML 502). Its retry
is a ``Retry`` with ``verify_first``: the caller reads the record back at the system and
writes again only if the value is not there (``bulk_changes.processing.steps.VERIFIERS``).
Repeating a write blind would be harmless for absolute values in theory, but it spends
the account's budget, shows twice in the vendor's audit trail, and for relative changes
(an activation, a swap of equipment) it is not harmless at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bulk_changes.domain.errors import OutcomeUnknown, PermanentError, RetryableError, Throttled
from bulk_changes.domain.state_machine import DeviceStatus


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5  # +/- this fraction of the delay
    # Throttling never fails a device, but an account throttled this many times in a row
    # for one step is not going to recover within the run.
    max_throttled: int = 100


@dataclass(frozen=True)
class Retry:
    delay: float
    # the failed call may have been applied: read back before writing again
    verify_first: bool = False


@dataclass(frozen=True)
class GiveUp:
    status: DeviceStatus
    reason: str


Decision = Retry | GiveUp


def effect_unknown(error: Exception) -> bool:
    """Whether a failed call may nevertheless have been applied by the system.

    A throttled answer is a refusal (nothing applied); a permanent error is an answer that
    says what happened; a retryable failure of a request that never left (no connection)
    cannot have landed. Every other retryable failure leaves the effect unknown."""
    if isinstance(error, Throttled) or not isinstance(error, RetryableError):
        return False
    return error.sent


def backoff(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential delay after the given failed attempt (1-based), with jitter."""
    raw = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    spread = raw * policy.jitter
    return float(max(0.0, raw + rng.uniform(-spread, spread)))


def decide(
    error: Exception,
    attempt: int,
    throttled: int,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """What to do after a step failed.

    ``attempt`` counts the non-throttled failures so far (1 after the first one),
    ``throttled`` the throttled answers so far.
    """
    if isinstance(error, Throttled):
        if throttled >= policy.max_throttled:
            return GiveUp(
                DeviceStatus.API_FAILED, f"still throttled after {throttled} tries: {error}"
            )
        delay = backoff(min(throttled, 6), policy, rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Retry(delay)
    if isinstance(error, PermanentError):
        return GiveUp(DeviceStatus.ERROR, str(error))
    if isinstance(error, OutcomeUnknown):
        # may have landed, cannot be read yet: never sent again blind (see OutcomeUnknown)
        return GiveUp(DeviceStatus.API_FAILED, str(error))
    if isinstance(error, RetryableError):
        if attempt >= policy.max_attempts:
            return GiveUp(DeviceStatus.API_FAILED, f"gave up after {attempt} attempts: {error}")
        delay = backoff(attempt, policy, rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Retry(delay, verify_first=effect_unknown(error))
    # Not one of ours: a bug or an unexpected failure. Stop the device with the reason
    # rather than retrying something nobody classified.
    return GiveUp(DeviceStatus.API_FAILED, f"unexpected {type(error).__name__}: {error}")
