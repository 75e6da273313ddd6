"""Sensor settings read when the code location loads (docs/configuration.md)."""

from __future__ import annotations

import os

from dagster import DefaultSensorStatus


def seconds(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def fractional_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def default_status(name: str) -> DefaultSensorStatus:
    """``running`` (the default) or anything else for stopped until started in the UI."""
    running = (os.environ.get(name) or "running") == "running"
    return DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED


# Every tick of a sensor costs the daemon and the code server tens of milliseconds of CPU
# (Dagster builds an instance and the resources, and records the tick) whether or not there
# is anything to do: the sensors that only look after ended runs look every 30 seconds.
NOTIFY_INTERVAL = seconds("BULK_CHANGES_NOTIFY_INTERVAL", 30)
NOTIFY_STATUS = default_status("BULK_CHANGES_NOTIFY_SENSORS")
