"""bulk_changes.daemon: Dagster's daemon, watching code servers less often and keeping one
SQLite engine per database."""

from __future__ import annotations

import pytest

from bulk_changes import daemon, dagster_private
from bulk_changes.sqlite_engines import EngineCache


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    # the patches are process-wide: undone after each test
    monkeypatch.delenv(daemon.RUN_RETRY_CHECK_ENV, raising=False)
    watcher = dagster_private.dagster_server_watcher
    monkeypatch.setattr(watcher, "WATCH_INTERVAL", watcher.WATCH_INTERVAL)
    for module in (
        dagster_private.sqlite_run_storage_module,
        dagster_private.sqlite_schedule_storage_module,
        dagster_private.sqlite_event_log_module,
        dagster_private.consolidated_sqlite_event_log_module,
    ):
        monkeypatch.setattr(module, "create_engine", module.create_engine)
    for name in ("has_instigators_table", "has_secondary_index_table", "has_built_index"):
        storage_class = dagster_private.SqlScheduleStorage
        monkeypatch.setattr(storage_class, name, getattr(storage_class, name))
    cli_module = dagster_private.dagster_daemon_cli_module
    monkeypatch.setattr(
        cli_module, "daemon_controller_from_instance", cli_module.daemon_controller_from_instance
    )
    interval_daemon = dagster_private.IntervalDaemon
    monkeypatch.setattr(interval_daemon, "core_loop", interval_daemon.core_loop)
    controller = dagster_private.dagster_daemon_controller
    monkeypatch.setattr(
        controller, "QueuedRunCoordinatorDaemon", controller.QueuedRunCoordinatorDaemon
    )


def test_the_daemon_runs_dagsters_daemon_command(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert daemon.main(["run", "--help"]) == 0
    assert "dagster-daemon run" in capsys.readouterr().out


def test_the_daemon_watches_code_servers_every_ten_seconds_and_reuses_sqlite_engines(
    restored: None,
) -> None:
    daemon.main(["--help"])
    assert dagster_private.dagster_server_watcher.WATCH_INTERVAL == daemon.WATCH_SECONDS == 10
    assert isinstance(dagster_private.sqlite_run_storage_module.create_engine, EngineCache)


def test_the_daemon_looks_for_runs_to_retry_every_15_seconds_unless_told(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    daemon.main(["--help"])
    assert os.environ[daemon.RUN_RETRY_CHECK_ENV] == "15"
    monkeypatch.setenv(daemon.RUN_RETRY_CHECK_ENV, "5")
    daemon.main(["--help"])
    assert os.environ[daemon.RUN_RETRY_CHECK_ENV] == "5"


def test_the_daemon_runs_the_quiet_run_queue(restored: None) -> None:
    from bulk_changes.run_queue import QuietRunQueueDaemon

    daemon.main(["--help"])
    assert dagster_private.dagster_daemon_controller.QueuedRunCoordinatorDaemon is (
        QuietRunQueueDaemon
    )


class _Instance:
    def __init__(self) -> None:
        self.kept: dict[str, int] = {}

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        self.kept = {
            "statement_timeout": statement_timeout,
            "pool_recycle": pool_recycle,
            "max_overflow": max_overflow,
        }


def test_the_daemons_storage_keeps_its_connections_without_a_statement_timeout(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_module = dagster_private.dagster_daemon_cli_module
    made: list[object] = []
    monkeypatch.setattr(
        cli_module, "daemon_controller_from_instance", lambda instance, **kw: made.append(instance)
    )
    assert daemon.keep_storage_connections() is True
    instance = _Instance()
    cli_module.daemon_controller_from_instance(instance, log_level="info")
    assert made == [instance]
    assert instance.kept == {"statement_timeout": 0, "pool_recycle": 3600, "max_overflow": 20}


def test_the_daemons_storage_connections_are_dagsters_when_told(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_module = dagster_private.dagster_daemon_cli_module
    original = cli_module.daemon_controller_from_instance
    monkeypatch.setenv(daemon.KEEP_CONNECTIONS_ENV, "new")
    assert daemon.keep_storage_connections() is False
    assert cli_module.daemon_controller_from_instance is original
