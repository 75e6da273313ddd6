"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

``webhook-id``: the event's stable id; ``webhook-timestamp``: seconds since the epoch of
this attempt; ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``
keyed with the secret's bytes (the secret is ``whsec_<base64>``). Pure: stdlib only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature, a header or the timestamp does not verify."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' and base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes of key")
    return key


def generate_secret(size: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(size)).decode("ascii")


def _body_text(body: str | bytes) -> bytes:
    return body if isinstance(body, bytes) else body.encode("utf-8")


def signature(secret: str, msg_id: str, timestamp: int, body: str | bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>``."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + _body_text(body)
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, msg_id: str, timestamp: int, body: str | bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: str | bytes,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless the headers sign ``body`` with ``secret`` within
    ``tolerance`` seconds of ``now`` (our own check; receivers use their own library)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    given = lowered.get("webhook-signature")
    if not (msg_id and stamp and given):
        raise SignatureError("missing webhook headers")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("invalid webhook-timestamp") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp outside the tolerance")
    expected = signature(secret, msg_id, timestamp, body).split(",", 1)[1].encode()
    for candidate in given.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value.encode()):
            return
    raise SignatureError("no matching signature")
