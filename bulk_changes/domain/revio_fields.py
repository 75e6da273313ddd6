"""Rev.io custom fields and services: finding fields by label, building JSON Patch ops.

Pure (no I/O). Rev.io changes a custom field by its position (``/fields/{i}/value``), the
position taken from a prior read. Labels are matched ignoring case and all white space.
With ``guard`` each replace is preceded by a JSON Patch ``test`` of the field's label as it
was read, so a service whose fields moved since the read is refused, never patched in the
wrong place (the prior system's failure #9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bulk_changes.domain.errors import Rejected

PatchOp = dict[str, Any]

USERNAME_MAPPINGS = ("field", "description", "both")

# statuses a failed JSON Patch "test" may come back with (RFC 5789 suggests 409/422)
GUARD_FAILURE_STATUSES = (400, 409, 412, 422)


def guard_failed(exc: Rejected, ops: Sequence[Mapping[str, Any]]) -> bool:
    """The patch was refused because a guard ``test`` op failed (the fields moved)."""
    return (
        any(op.get("op") == "test" for op in ops)
        and (exc.status in GUARD_FAILURE_STATUSES)
        and "test" in exc.message.lower()
    )


def normalize_label(label: object) -> str:
    """A label for comparison: case and every white space character ignored."""
    return "".join(str(label).split()).casefold()


def find_field_index(fields: Sequence[Mapping[str, Any]], label: str) -> int | None:
    """Position of the first custom field whose label matches ``label``; None if none does."""
    wanted = normalize_label(label)
    for index, field in enumerate(fields):
        if isinstance(field, Mapping) and normalize_label(field.get("label", "")) == wanted:
            return index
    return None


def _service_name(service_id: object) -> str:
    return f"service {service_id}" if service_id not in (None, "") else "the service"


def _value_ops(
    fields: Sequence[Mapping[str, Any]], index: int, value: str, guard: bool
) -> list[PatchOp]:
    """Replace field ``index``'s value (nothing when it already holds it), guarded."""
    field = fields[index]
    if field.get("value") == value:
        return []
    ops: list[PatchOp] = []
    if guard:
        ops.append({"op": "test", "path": f"/fields/{index}/label", "value": field.get("label")})
    ops.append({"op": "replace", "path": f"/fields/{index}/value", "value": value})
    return ops


def cost_center_ops(
    fields: Sequence[Mapping[str, Any]],
    values: Mapping[int, str],
    labels: Sequence[str],
    fallback_label: str,
    guard: bool,
    *,
    service_id: object = None,
) -> list[PatchOp]:
    """JSON Patch ops setting cost centers ``{1..3: value}``, each found by its label.

    Cost center N is the field labelled ``labels[N-1]``; cost center 1 falls back to
    ``fallback_label`` (plain "Cost Center") when its own label is missing. A missing field
    is a ``Rejected`` naming the label and the service. Fields already holding the value
    get no op.
    """
    if len(labels) != 3:
        raise ValueError("cost center labels: exactly 3 are needed")
    ops: list[PatchOp] = []
    used: set[int] = set()
    for number in sorted(values):
        if number not in (1, 2, 3):
            raise ValueError(f"cost center {number}: only 1, 2 and 3 exist")
        label = labels[number - 1]
        index = find_field_index(fields, label)
        tried = [label]
        if index is None and number == 1 and fallback_label:
            index = find_field_index(fields, fallback_label)
            tried.append(fallback_label)
        if index is None:
            wanted = " or ".join(repr(t) for t in tried)
            raise Rejected(
                f"{_service_name(service_id)} has no custom field labelled {wanted}",
                system="revio",
            )
        if index in used:
            raise Rejected(
                f"{_service_name(service_id)}: cost center {number} ({label!r}) would land in "
                f"the field at position {index} that another cost center already uses",
                system="revio",
            )
        used.add(index)
        ops += _value_ops(fields, index, values[number], guard)
    return ops


def username_ops(
    service: Mapping[str, Any],
    username: str,
    mapping: str,
    label: str,
    guard: bool,
) -> list[PatchOp]:
    """JSON Patch ops putting the username where the tenant keeps it.

    ``mapping``: "field" (the custom field labelled ``label``), "description" (the
    service's description) or "both".
    """
    if mapping not in USERNAME_MAPPINGS:
        raise ValueError(f"username mapping must be one of {', '.join(USERNAME_MAPPINGS)}")
    ops: list[PatchOp] = []
    if mapping in ("field", "both"):
        fields = service.get("fields") or []
        index = find_field_index(fields, label)
        if index is None:
            raise Rejected(
                f"{_service_name(service.get('service_id'))} has no custom field labelled "
                f"{label!r} for the username",
                system="revio",
            )
        ops += _value_ops(fields, index, username, guard)
    if mapping in ("description", "both") and service.get("description") != username:
        ops.append({"op": "replace", "path": "/description", "value": username})
    return ops


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _when(value: object) -> datetime:
    """A date for ordering; unknown or unreadable dates sort first."""
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return datetime.min.replace(tzinfo=UTC)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _service_order(record: Mapping[str, Any]) -> tuple[datetime, int]:
    try:
        service_id = int(record.get("service_id") or 0)
    except (TypeError, ValueError):
        service_id = 0
    return _when(record.get("activated_date")), service_id


def pick_active_service(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The service that is not disconnected, the most recently activated; None if none.

    Ties (same or unknown activation date) go to the highest service id, the newest record.
    """
    active = [r for r in records if _is_empty(r.get("disconnected_date"))]
    if not active:
        return None
    return max(active, key=_service_order)
