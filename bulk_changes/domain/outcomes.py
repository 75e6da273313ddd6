"""What a finished device change writes back to the AMOP inventory, and Telegence's status moves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bulk_changes.domain.change_types import ChangeType
from bulk_changes.domain.errors import Rejected

_INVENTORY_FIELDS: Mapping[ChangeType, Mapping[str, str]] = {
    # request field -> inventory column
    ChangeType.USERNAME_COST_CENTER: {
        "username": "username",
        "cost_center_1": "cost_center_1",
        "cost_center_2": "cost_center_2",
        "cost_center_3": "cost_center_3",
    },
    ChangeType.DEVICE_STATUS: {"status": "status"},
    ChangeType.CARRIER_RATE_PLAN: {
        "rate_plan": "rate_plan",
        "communication_plan": "communication_plan",
    },
    ChangeType.EQUIPMENT: {"new_iccid": "iccid", "new_imei": "imei"},
}


def inventory_changes(change_type: ChangeType, request: Mapping[str, str]) -> dict[str, str]:
    """Inventory columns and their new values for a device change that succeeded."""
    return {
        column: request[field]
        for field, column in _INVENTORY_FIELDS[change_type].items()
        if field in request
    }


def previous_values(changes: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
    return {column: device.get(column) for column in changes}


# Telegence subscriber statuses: A active, S suspended, C cancelled.
_TELEGENCE_MOVES: Mapping[tuple[str | None, str], str] = {
    ("S", "A"): "restore",
    ("C", "A"): "activate",
    (None, "A"): "activate",
    ("A", "S"): "suspend",
    ("A", "C"): "cancel",
    ("S", "C"): "cancel",
}


def telegence_status_action(current: str | None, target: str) -> str | None:
    """The Telegence call that moves a line from ``current`` to ``target``.

    None when the line is already there. Rejected for a move Telegence has no call for.
    """
    if current == target:
        return None
    action = _TELEGENCE_MOVES.get((current, target))
    if action is None:
        raise Rejected(
            f"a line cannot go from status {current or 'unknown'} to {target}",
            system="telegence",
        )
    return action
