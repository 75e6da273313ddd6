"""Reading JSON Patch (RFC 6902) against a document, without applying it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_MISSING = object()


def resolve(document: Any, pointer: str) -> Any:
    """The value at a JSON Pointer (RFC 6901), or a sentinel when there is none."""
    current = document
    for raw in pointer.strip("/").split("/") if pointer.strip("/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def already_applied(document: Any, ops: Sequence[Mapping[str, Any]]) -> bool:
    """True when every ``replace`` would leave the document as it is (and some op exists).

    Used after a crash between a call and its record: if the service already shows the
    change, the call landed and is not made again.
    """
    replaces = [op for op in ops if op.get("op") == "replace"]
    if not replaces:
        return not ops
    return all(_same(resolve(document, str(op["path"])), op.get("value")) for op in replaces)


def _same(current: Any, wanted: Any) -> bool:
    if current is _MISSING:
        return False
    if current == wanted:
        return True
    return current is not None and wanted is not None and str(current) == str(wanted)
