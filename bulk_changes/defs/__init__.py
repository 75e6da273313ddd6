"""The code location's definitions by area, without resources: ``processing`` (the job,
its assets, the queue sensor), ``notifications`` (the outbox sweep, run failure alerts),
``operations`` (runs whose worker died, stopped runs). ``bulk_changes.definitions``
merges them with the environment's resources.

Sensor intervals and default statuses are read from the environment here: Dagster takes
them when a sensor is defined, not at launch."""
