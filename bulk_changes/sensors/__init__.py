"""Sensors: the SQS queue sensor (one run per bulk change asked for)."""

from bulk_changes.sensors.sqs_sensor import SENSOR_NAME, build_queue_sensor

__all__ = ["SENSOR_NAME", "build_queue_sensor"]
