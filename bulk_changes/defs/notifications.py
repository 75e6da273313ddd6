"""Notifications: the outbox sweep, and the operators' alert when a run fails."""

from __future__ import annotations

from dagster import Definitions

from bulk_changes.defs.settings import NOTIFY_INTERVAL, NOTIFY_STATUS
from bulk_changes.jobs import process_bulk_change
from bulk_changes.sensors.notifications import build_run_failure_sensor, build_sweep_sensor

notification_sweep = build_sweep_sensor(NOTIFY_INTERVAL, NOTIFY_STATUS)
run_failure_alerts = build_run_failure_sensor([process_bulk_change], NOTIFY_INTERVAL, NOTIFY_STATUS)

defs = Definitions(sensors=[notification_sweep, run_failure_alerts])
