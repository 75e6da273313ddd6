"""The code location loads in each environment: its job, sensors and assets resolve, every
resource an op or sensor asks for is there, and the settings operators tune are resource
config (shown in the UI, changed at launch) with secrets by name only."""

from __future__ import annotations

import pytest
from dagster import Definitions

from bulk_changes.definitions import build_defs

SENSORS = {
    "bulk_change_queue_sensor",
    "notifications_sweep_sensor",
    "run_failure_alert_sensor",
    "stopped_bulk_change_sensor",
    "dead_run_worker_sensor",
}
PRODUCTION_ENV = {
    "BULK_CHANGES_DB_URL": "postgresql+psycopg2://amop:dummy-pw@db.example/amop",
    "BULK_CHANGES_TENANTS": "/etc/bulk-changes/tenants.yaml",
    "AWS_REGION": "us-east-1",
    "BULK_CHANGES_SMTP_HOST": "smtp.example",
    "BULK_CHANGES_SMTP_PASSWORD": "dummy-smtp-pw",
}


@pytest.fixture(params=["local", "production"])
def environment(request, monkeypatch) -> str:
    if request.param == "production":
        for name, value in PRODUCTION_ENV.items():
            monkeypatch.setenv(name, value)
    return request.param


def resource_config(defs: Definitions, key: str) -> dict:
    job = defs.resolve_job_def("process_bulk_change")
    return job.resource_defs[key].config_schema.default_value


def test_the_definitions_load_and_validate(environment):
    defs = build_defs(environment)
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("process_bulk_change")
    assert sorted(node.name for node in job.nodes) == [
        "apply_device_changes",
        "deliver_notifications",
        "finalize_bulk_change",
        "load_device_changes",
        "partition_batches",
    ]
    sensors = list(defs.sensors or [])
    assert {s.name for s in sensors} == SENSORS
    for sensor in sensors:  # the load does not check a sensor's resources: this does
        assert set(sensor.required_resource_keys) <= set(defs.resources or {}), sensor.name
    assert defs.resolve_assets_def("bulk_change_results") is not None


def test_the_resources_the_ops_take_nest_the_top_level_settings(environment):
    job = build_defs(environment).resolve_job_def("process_bulk_change")
    resources = job.resource_defs
    assert resources["devices"].get_required_resource_keys(resources) == {
        "amop_db",
        "tenant_config",
        "processing",
    }
    assert resources["notifier"].get_required_resource_keys(resources) == {
        "amop_db",
        "tenant_config",
        "mail",
        "webhooks",
        "notifications",
    }


def test_an_environment_variable_sets_a_settings_default(monkeypatch):
    monkeypatch.setenv("BULK_CHANGES_NOTIFY_BASE_DELAY", "3")
    monkeypatch.setenv("BULK_CHANGES_OPERATOR_EMAILS", "a@ops.example, b@ops.example")
    config = resource_config(build_defs("local"), "notifications")
    assert config["base_delay_seconds"] == 3.0
    assert config["operator_emails"] == ["a@ops.example", "b@ops.example"]
    assert config["retry_window_hours"] == 24.0  # not set: the resource's default


def test_production_secrets_are_environment_variables_by_name(monkeypatch):
    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    defs = build_defs("production")
    assert resource_config(defs, "amop_db")["url"] == {"env": "BULK_CHANGES_DB_URL"}
    assert resource_config(defs, "mail")["password"] == {"env": "BULK_CHANGES_SMTP_PASSWORD"}


@pytest.mark.parametrize(("timeout", "long_poll"), [(300, 58.5), (60, 43.5), (45, 28.5), (20, 5.0)])
def test_the_queue_sensor_listens_as_long_as_the_sensor_timeout_leaves_room(timeout, long_poll):
    from bulk_changes.defs.settings import default_long_poll

    assert default_long_poll(timeout) == long_poll


def test_the_sensor_timeout_is_dagsters_sensor_one_else_its_grpc_one(monkeypatch):
    from bulk_changes.defs.settings import sensor_timeout_seconds

    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert sensor_timeout_seconds() == 60
    monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "300")
    assert sensor_timeout_seconds() == 300
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "90")
    assert sensor_timeout_seconds() == 90
