"""Processing: the job, the results and audit tables it materializes with their check, and
the queue sensor that launches it."""

from __future__ import annotations

from dagster import Definitions

from bulk_changes.assets import audit_spec, no_failed_devices, results_spec
from bulk_changes.defs.settings import (
    default_long_poll,
    default_status,
    fractional_seconds,
    seconds,
    sensor_timeout_seconds,
)
from bulk_changes.jobs import process_bulk_change
from bulk_changes.sensors.sqs_sensor import build_queue_sensor

queue_sensor = build_queue_sensor(
    process_bulk_change,
    minimum_interval_seconds=seconds("BULK_CHANGES_SENSOR_INTERVAL", 5),
    # each tick listens on the queue for most of twelve of the daemon's 5-second sensor
    # loops (it is evaluated again at the loop after it ends): a message starts its run at
    # once, and the daemon and code server evaluate it once a minute, not 12 times
    long_poll_seconds=fractional_seconds(
        "BULK_CHANGES_SENSOR_LONG_POLL", default_long_poll(sensor_timeout_seconds())
    ),
    default_status=default_status("BULK_CHANGES_SENSOR_DEFAULT"),
)

defs = Definitions(
    assets=[results_spec, audit_spec],
    asset_checks=[no_failed_devices],
    jobs=[process_bulk_change],
    sensors=[queue_sensor],
)
