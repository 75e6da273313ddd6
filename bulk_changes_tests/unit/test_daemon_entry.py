"""bulk_changes.daemon: Dagster's daemon, watching code servers less often and keeping one
SQLite engine per database."""

from __future__ import annotations

from types import SimpleNamespace

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
    workspace = dagster_private.WorkspaceProcessContext
    monkeypatch.setattr(workspace, "refresh_workspace", workspace.refresh_workspace)
    consumer = dagster_private.event_log_consumer_module
    monkeypatch.setattr(consumer, "_persist_cursors", consumer._persist_cursors)
    reader = consumer.EventLogConsumerDaemon
    monkeypatch.setattr(reader, "run_iteration", reader.run_iteration)
    client = dagster_private.DagsterGrpcClient
    monkeypatch.setattr(client, "_channel", client._channel)


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


def test_the_daemon_keeps_its_sqlite_runs_and_schedules_connections(restored: None) -> None:
    daemon.main(["--help"])
    assert dagster_private.sqlite_run_storage_module.create_engine.keep_connections
    assert dagster_private.sqlite_schedule_storage_module.create_engine.keep_connections
    assert not dagster_private.sqlite_event_log_module.create_engine.keep_connections


def test_the_daemons_sqlite_connections_are_dagsters_when_told(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(daemon.KEEP_CONNECTIONS_ENV, "new")
    daemon.main(["--help"])
    assert not dagster_private.sqlite_run_storage_module.create_engine.keep_connections


class _Client:
    def __init__(self, server_id: str | Exception) -> None:
        self.server_id = server_id

    def get_server_id(self, timeout: int) -> str:
        if isinstance(self.server_id, Exception):
            raise self.server_id
        return self.server_id


class _Workspace:
    """What the refresh reads of Dagster's WorkspaceProcessContext: one location served
    by a long-lived code server loaded with id "a", whose server now answers ``now``."""

    def __init__(self, now: str | Exception, load_error: object = None) -> None:
        origin = dagster_private.GrpcServerCodeLocationOrigin(
            host="127.0.0.1", port=4266, location_name="bulk_changes"
        )
        location = SimpleNamespace(server_id="a", client=_Client(now))
        entry = SimpleNamespace(origin=origin, code_location=location, load_error=load_error)
        self._origins = [origin]
        self.entries = {"bulk_changes": entry}
        self.refreshed = 0

    def get_current_workspace(self) -> SimpleNamespace:
        return SimpleNamespace(code_location_entries=self.entries)


def test_a_code_server_answering_its_id_is_not_reloaded() -> None:
    assert daemon.code_servers_unchanged(_Workspace(now="a"))


def test_a_replaced_code_server_is_reloaded() -> None:
    assert not daemon.code_servers_unchanged(_Workspace(now="b"))


def test_an_unreachable_code_server_is_reloaded() -> None:
    assert not daemon.code_servers_unchanged(_Workspace(now=ConnectionError("down")))


def test_a_location_that_failed_to_load_is_reloaded() -> None:
    assert not daemon.code_servers_unchanged(_Workspace(now="a", load_error="boom"))


def test_a_location_added_to_the_workspace_file_is_loaded() -> None:
    workspace = _Workspace(now="a")
    workspace._origins = [
        *workspace._origins,
        dagster_private.GrpcServerCodeLocationOrigin(
            host="127.0.0.1", port=4267, location_name="other"
        ),
    ]

    assert not daemon.code_servers_unchanged(workspace)


def test_the_daemons_workspace_refresh_runs_dagsters_only_when_something_changed(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dagsters(self: _Workspace) -> None:
        self.refreshed += 1

    workspace_class = dagster_private.WorkspaceProcessContext
    monkeypatch.setattr(workspace_class, "refresh_workspace", dagsters)
    daemon.main(["--help"])
    same, replaced = _Workspace(now="a"), _Workspace(now="b")

    workspace_class.refresh_workspace(same)  # type: ignore[arg-type]
    workspace_class.refresh_workspace(replaced)  # type: ignore[arg-type]

    assert (same.refreshed, replaced.refreshed) == (0, 1)


class _CursorInstance:
    def __init__(self) -> None:
        self.daemon_cursor_storage = object()


def test_run_retries_write_their_cursors_only_when_they_changed(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = dagster_private.event_log_consumer_module
    written: list[dict[str, int]] = []
    monkeypatch.setattr(consumer, "_persist_cursors", lambda i, c: written.append(dict(c)))
    daemon.persist_changed_cursors_only()
    instance = _CursorInstance()

    for cursors in ({"RUN_FAILURE": 5}, {"RUN_FAILURE": 5}, {"RUN_FAILURE": 7}):
        consumer._persist_cursors(instance, cursors)

    assert written == [{"RUN_FAILURE": 5}, {"RUN_FAILURE": 7}]


def _reads(instance: object, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The run events read from ``instance``'s event log from now on."""
    storage = instance.event_log_storage  # type: ignore[attr-defined]
    read = storage.get_logs_for_all_runs_by_log_id
    calls: list[object] = []

    def get_logs_for_all_runs_by_log_id(*args: object, **kwargs: object) -> object:
        found = read(*args, **kwargs)
        calls.append(found)
        return found

    monkeypatch.setattr(storage, "get_logs_for_all_runs_by_log_id", get_logs_for_all_runs_by_log_id)
    return calls


def test_run_retries_read_the_run_events_only_when_some_were_written(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterRun, instance_for_test

    daemon.read_run_events_when_written()
    consumer = dagster_private.event_log_consumer_module.EventLogConsumerDaemon(interval_seconds=1)
    with instance_for_test() as instance:
        context = SimpleNamespace(instance=instance)
        reads = _reads(instance, monkeypatch)
        list(consumer.run_iteration(context))  # the first look reads (and sets the cursors)
        assert len(reads) == 2  # run failures, run successes
        list(consumer.run_iteration(context))
        list(consumer.run_iteration(context))
        assert len(reads) == 2  # nothing written: not read again

        run = instance.add_run(
            DagsterRun(job_name="job", run_id="a" * 8 + "-0000-0000-0000-" + "0" * 12)
        )
        instance.report_run_failed(run)
        list(consumer.run_iteration(context))
        assert len(reads) == 4
        assert any(found for found in reads[2:])  # the failure was read
        list(consumer.run_iteration(context))
        assert len(reads) == 4


def test_run_retries_read_again_after_a_look_that_failed(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterRun, instance_for_test

    daemon.read_run_events_when_written()
    consumer = dagster_private.event_log_consumer_module.EventLogConsumerDaemon(interval_seconds=1)
    with instance_for_test() as instance:
        context = SimpleNamespace(instance=instance)
        list(consumer.run_iteration(context))
        reads = _reads(instance, monkeypatch)
        storage = instance.event_log_storage
        working = storage.get_logs_for_all_runs_by_log_id
        failing = [True]

        def locked_once(*args: object, **kwargs: object) -> object:
            if failing.pop() if failing else False:
                raise RuntimeError("database is locked")
            return working(*args, **kwargs)

        monkeypatch.setattr(storage, "get_logs_for_all_runs_by_log_id", locked_once)
        run = instance.add_run(
            DagsterRun(job_name="job", run_id="b" * 8 + "-0000-0000-0000-" + "0" * 12)
        )
        instance.report_run_failed(run)
        with pytest.raises(RuntimeError):
            list(consumer.run_iteration(context))
        list(consumer.run_iteration(context))  # nothing written since: read all the same
        assert len(reads) == 2
        assert any(reads)


def test_run_retries_read_every_time_on_other_storage() -> None:
    instance = SimpleNamespace(event_log_storage=object())
    assert daemon.sqlite_event_index_database(instance) is None


class _CodeServer:
    """A gRPC server on ``port`` answering Dagster's GetServerId with ``server_id``."""

    def __init__(self, port: int, server_id: str) -> None:
        from concurrent import futures

        import grpc
        from dagster._grpc.__generated__ import dagster_api_pb2

        def get_server_id(request: object, context: object) -> object:
            return dagster_api_pb2.GetServerIdReply(server_id=server_id)

        handler = grpc.method_handlers_generic_handler(
            "api.DagsterApi",
            {
                "GetServerId": grpc.unary_unary_rpc_method_handler(
                    get_server_id,
                    request_deserializer=dagster_api_pb2.Empty.FromString,
                    response_serializer=dagster_api_pb2.GetServerIdReply.SerializeToString,
                )
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait()


def test_the_daemons_grpc_calls_share_one_channel_per_code_server(restored: None) -> None:
    daemon.main(["--help"])
    client = dagster_private.DagsterGrpcClient
    with client(port=4266, host="127.0.0.1")._channel() as first:
        pass
    with client(port=4266, host="127.0.0.1")._channel() as again:
        pass
    with client(port=4267, host="127.0.0.1")._channel() as other:
        pass
    assert again is first
    assert other is not first


def test_a_kept_channel_reaches_a_restarted_code_server(restored: None) -> None:
    import time

    from dagster._core.errors import DagsterUserCodeUnreachableError

    daemon.keep_grpc_channels()
    server = _CodeServer(0, "first")
    client = dagster_private.DagsterGrpcClient(port=server.port, host="127.0.0.1")
    try:
        assert client.get_server_id(timeout=5) == "first"
        server.stop()
        with pytest.raises(DagsterUserCodeUnreachableError):
            client.get_server_id(timeout=5)
        server = _CodeServer(server.port, "second")
        answers = []
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            try:
                answers.append(client.get_server_id(timeout=5))
            except DagsterUserCodeUnreachableError:
                time.sleep(0.1)
        assert answers == ["second"]
    finally:
        server.stop()
