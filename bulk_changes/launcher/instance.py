"""The Dagster instance and workspace a stack runs with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bulk_changes.paths import default_instance_yaml

# deploy/ is beside the package in a source checkout (the production instance is used by
# the PostgreSQL stack of the tests, which run from one)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# As deploy/set-pool-limits.sh sets them. Explicit limits are required on PostgreSQL:
# with only pools.default_limit, runs that first claim a pool concurrently can fail with
# InFailedSqlTransaction (dagster #33552, open in 1.13.27).
POOL_LIMITS = {"bulk_changes_devices": 6}


def embedded_instance() -> dict[str, Any]:
    """The embedded default's instance (bulk_changes/defaults/dagster.yaml) as it is, but
    for four runs at once and shorter waits of run monitoring."""
    config: dict[str, Any] = yaml.safe_load(default_instance_yaml().read_text())
    config["run_coordinator"]["config"].update(max_concurrent_runs=4, dequeue_num_workers=4)
    config["run_monitoring"].update(poll_interval_seconds=5, free_slots_after_run_end_seconds=5)
    return config


def production_instance() -> dict[str, Any]:
    """deploy/dagster.yaml as it is, but for shorter waits (the run queue and run
    monitoring poll every few seconds) and runs of tenant ``initech`` held in the run
    queue (sensor tests count runs without paying for run workers)."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    config["run_monitoring"].update(poll_interval_seconds=5, free_slots_after_run_end_seconds=5)
    config["concurrency"]["runs"]["tag_concurrency_limits"].append(
        {"key": "bulk_changes/tenant", "value": "initech", "limit": 0}
    )
    return config


def workspace_yaml(code_server_port: int | None) -> str:
    """The code location: loaded by the daemon's own code servers, or served by one
    long-lived ``dagster api grpc`` on ``code_server_port`` (as in production)."""
    if code_server_port:
        return (
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {code_server_port}\n"
            "      location_name: bulk_changes\n"
        )
    return (
        "load_from:\n  - python_module:\n      module_name: bulk_changes.definitions\n"
        "      location_name: bulk_changes\n"
    )


def set_pool_limits(
    home: Path, storage_env: dict[str, str], limits: dict[str, int] | None = None
) -> None:
    """What `dagster instance concurrency set POOL N` does, without two CLI start-ups."""
    from dagster import DagsterInstance

    saved = {name: os.environ.get(name) for name in storage_env}
    os.environ.update(storage_env)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            for pool, limit in (limits or POOL_LIMITS).items():
                instance.event_log_storage.set_concurrency_slots(pool, limit)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
