"""What one external call looked like, for the audit trail. Secrets never get here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 4000

_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|api[_-]?key|token|authorization|subscription[_-]?key)", re.I
)


@dataclass(frozen=True)
class Exchange:
    system: str
    account: str
    method: str
    url: str
    request_body: str | None
    status: int | None
    response_body: str | None
    duration_ms: float
    error: str | None = None


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every credential-looking field masked."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEYS.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def to_text(value: Any) -> str | None:
    """Audit text of a body: JSON when it is data, truncated to a readable size."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(redact(value), sort_keys=True)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...(truncated)"
