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


# Every tick of a sensor costs the daemon and the code server 45-80 ms of CPU together
# (Dagster builds an instance and the resources, and records the tick in its storage)
# whether or not there is anything to do (docs/benchmarks.md, "Idle"): the sensors that
# only look after ended runs look every 60 seconds, and so does the dead run worker check
# (a worker killed outright is rare; its run is marked failed within a minute).
NOTIFY_INTERVAL = seconds("BULK_CHANGES_NOTIFY_INTERVAL", 60)
NOTIFY_STATUS = default_status("BULK_CHANGES_NOTIFY_SENSORS")
RUN_WORKER_CHECK_INTERVAL = seconds("BULK_CHANGES_RUN_WORKER_CHECK_INTERVAL", 60)

# Dagster's sensor loop runs every 5 seconds and never starts a sensor's tick while its last
# one runs: a queue sensor tick that listens until 1.5 s before one of those loops is
# evaluated again at that loop. Whatever the length, the queue goes unheard ~1.5-2.5 s
# between two ticks; the longer the tick, the rarer those gaps and the ticks' cost.
LONG_POLLS = (58.5, 43.5, 28.5, 18.5)
# what a tick keeps of Dagster's sensor timeout for its own start and end
TIMEOUT_MARGIN_SECONDS = 15.0


def sensor_timeout_seconds() -> int:
    """How long the daemon lets a sensor tick run before it fails it: Dagster's
    DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS, else DAGSTER_GRPC_TIMEOUT_SECONDS, else 60."""
    for name in ("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "DAGSTER_GRPC_TIMEOUT_SECONDS"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 60


def default_long_poll(timeout_seconds: int) -> float:
    """The longest of ``LONG_POLLS`` that leaves ``TIMEOUT_MARGIN_SECONDS`` of the tick's
    timeout: 58.5 s (one tick a minute) with the 300 s the stack and production give the
    daemon (docs/production.md), 43.5 s with Dagster's default 60."""
    for seconds_ in LONG_POLLS:
        if seconds_ + TIMEOUT_MARGIN_SECONDS <= timeout_seconds:
            return seconds_
    return min(LONG_POLLS[-1], max(0.0, timeout_seconds - TIMEOUT_MARGIN_SECONDS))
