"""The production instance configurations in deploy/ through Dagster's own validation, and
the PostgreSQL one for real: an instance built from it stores and reads a run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, RunsFilter, job, op
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.workspace.config_schema import ensure_workspace_config

from bulk_changes_tests.postgres import dagster_pg_env, fresh_database, require_postgres

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTANCE_FILES = ["dagster.yaml", "ecs/dagster.yaml"]
OPS_POOLS = {"bulk_changes_devices"}


@pytest.fixture
def pg_env(monkeypatch):
    for name, value in {
        **dagster_pg_env("test"),
        "BULK_CHANGES_ECS_CLUSTER": "bulk-changes",
        "BULK_CHANGES_CODE_SERVER_HOST": "code.internal",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def load(relative: str, tmp_path: Path) -> dict:
    home = tmp_path / relative.replace("/", "_")
    home.mkdir()
    shutil.copy(DEPLOY / relative, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    return dict(config)


@pytest.mark.parametrize("relative", INSTANCE_FILES)
def test_instance_file_passes_dagsters_validation(relative, tmp_path, pg_env):
    config = load(relative, tmp_path)
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["scheme"] == "postgresql+psycopg2"
    assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # never written here
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert process_config(
        QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"]
    ).success
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] > 0
    [tenant_limit] = runs["tag_concurrency_limits"]
    assert tenant_limit["key"] == "bulk_changes/tenant"
    assert tenant_limit["value"] == {"applyLimitPerUniqueValue": True}
    assert config["concurrency"]["pools"]["default_limit"] > 0
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }


def test_ecs_run_launcher_config_passes_the_launchers_own_schema(tmp_path, pg_env):
    from dagster_aws.ecs import EcsRunLauncher

    launcher = load("ecs/dagster.yaml", tmp_path)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    result = process_config(EcsRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert result.value["run_task_kwargs"]["cluster"] == "bulk-changes"  # from the environment
    secrets = {s["name"] for s in result.value["secrets"]}
    assert "DAGSTER_PG_PASSWORD" in secrets
    assert not any(v.startswith("DAGSTER_PG_PASSWORD") for v in result.value["env_vars"])


def test_ecs_workspace_passes_dagsters_validation(pg_env):
    path = DEPLOY / "ecs" / "workspace.yaml"
    ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))


def test_the_validation_refuses_run_limits_in_two_places(tmp_path, pg_env):
    """The check the files rely on: with `concurrency` set, the queued run coordinator's
    limits must live under concurrency.runs, not in run_coordinator.config too."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 5
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


@op
def noop() -> None:
    pass


@job
def stand_in() -> None:
    noop()


def test_postgres_instance_from_the_file_stores_and_reads_a_run(tmp_path, monkeypatch):
    require_postgres()
    with fresh_database("dagster_deploy_test") as database:
        for name, value in dagster_pg_env(database).items():
            monkeypatch.setenv(name, value)
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
        # the pool limits, exactly as an operator sets them (dagster instance concurrency set)
        done = subprocess.run(
            [str(DEPLOY / "set-pool-limits.sh")],
            env={**os.environ, "DAGSTER_HOME": str(home), "BULK_CHANGES_DEVICES_POOL": "3"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        instance = DagsterInstance.from_config(str(home))
        try:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            queue = instance.get_concurrency_config().run_queue_config
            assert queue is not None and queue.max_concurrent_runs == 10
            assert instance.run_monitoring_enabled
            assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
            slots = {
                pool: instance.event_log_storage.get_concurrency_info(pool).slot_count
                for pool in OPS_POOLS
            }
            assert slots == {"bulk_changes_devices": 3}

            run = instance.create_run_for_job(
                job_def=stand_in, tags={"bulk_changes/tenant": "acme", "dagster/run_key": "k1"}
            )
            again = instance.get_run_by_id(run.run_id)
            assert again is not None and again.job_name == "stand_in"
            [found] = instance.get_runs(filters=RunsFilter(tags={"bulk_changes/tenant": "acme"}))
            assert found.run_id == run.run_id
        finally:
            instance.dispose()


def test_the_embedded_default_instance_retries_runs_whose_worker_died(tmp_path):
    from bulk_changes.paths import default_instance_yaml

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(default_instance_yaml(), home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled


def test_the_embedded_default_instance_starts_only_the_daemons_the_project_uses(tmp_path):
    # no automation conditions, auto-materialize or freshness policies: their daemons
    # would only cost an idle daemon CPU; backfills, run queue, monitoring and retries stay
    from bulk_changes.paths import default_instance_yaml

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(default_instance_yaml(), home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        daemons = set(instance.get_required_daemon_types())
    assert daemons == {
        "SENSOR",
        "BACKFILL",
        "SCHEDULER",
        "QUEUED_RUN_COORDINATOR",
        "MONITORING",
        "EVENT_LOG_CONSUMER",
    }


@pytest.mark.parametrize("relative", INSTANCE_FILES)
def test_the_production_instance_starts_no_asset_or_freshness_daemon(relative, tmp_path, pg_env):
    config = load(relative, tmp_path)
    assert config["auto_materialize"] == {"enabled": False, "use_sensors": False}
    assert config["freshness"] == {"enabled": False}
