"""What an idempotency key is bound to: the request's devices, as a digest.

The tenant, the change type and the integration are stored on the bulk change itself and
compared as they are; the devices are too many to compare, so a digest of them is stored.
The digest is of the devices as intake reads them: the same cells from a CSV file or a JSON
message give the same digest (numbers as their text, empty cells as absent, spaces around
a value ignored), and so do the same devices in another file format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from bulk_changes.domain.validation import kind_of, text_of


def _canonical(value: object) -> object:
    text = text_of(value)
    if text is not None:
        return text.strip()
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        # Too deep or not JSON: refused at intake anyway; its kind still tells it apart.
        return kind_of(value)


def request_digest(rows: Sequence[Mapping[str, object]]) -> str:
    """SHA-256 of the devices in order, each row's non-empty fields by name."""
    digest = hashlib.sha256()
    for row in rows:
        cells = {str(k).strip(): _canonical(v) for k, v in row.items() if v is not None}
        cells = {k: v for k, v in cells.items() if v != ""}
        digest.update(json.dumps(sorted(cells.items())).encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()
