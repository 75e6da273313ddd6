"""Telegence line fields: how a line's answer carries its SIM, IMEI and rate plan. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def characteristics(line: Mapping[str, Any]) -> dict[str, Any]:
    """``serviceCharacteristic: [{"name", "value"}]`` of a line as ``{name: value}``."""
    out: dict[str, Any] = {}
    for item in line.get("serviceCharacteristic") or []:
        if isinstance(item, Mapping) and item.get("name") is not None:
            out[str(item["name"])] = item.get("value")
    return out
