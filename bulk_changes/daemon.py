"""The Dagster daemon, costing less while nothing happens.

    python -m bulk_changes.daemon run -w workspace.yaml

takes the arguments of ``dagster-daemon`` and runs it. The differences, all for an idle
daemon's CPU (docs/benchmarks.md, "Idle"):

- on the embedded SQLite instance, one SQLAlchemy engine per database
  (``bulk_changes.sqlite_engines``): Dagster makes a new one for every connection, so
  every query of the run queue and of each sensor tick was compiled again;
- it asks a long-lived code server whether it was replaced every ``WATCH_SECONDS``
  seconds instead of every second (Dagster's ``WATCH_INTERVAL``: the UI's reload notice;
  the daemon reloads its workspace every minute anyway). A replaced code server is seen
  that much later;
- run retries look for failed runs every ``RUN_RETRY_CHECK_SECONDS`` seconds instead of
  every 5 (Dagster's ``DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS``, which, set,
  is kept): a run whose worker died is re-executed up to 15 s after it is marked failed;
- its run queue looks for one queued run before Dagster's whole look, and a run submitted
  in the daemon (the queue sensor's, run retries') wakes it at once
  (``bulk_changes.run_queue``; ``BULK_CHANGES_RUN_QUEUE=dagster`` keeps Dagster's);
- run monitoring and run retries sleep until their next look instead of waking twice a
  second to see whether it is time (``bulk_changes.interval_loops``);
- the sensors' storage asks once, not at every statement, whether its tables and indexes
  exist (``bulk_changes.schema_checks``);
- on PostgreSQL storage, each of Dagster's storages (runs, event logs, schedules) keeps
  one connection open, as Dagster's webserver does (``optimize_for_webserver``, without a
  statement timeout): dagster-postgres otherwise opens a new connection for every
  statement, 40% of the idle daemon's CPU on PostgreSQL. Threads that need one while it
  is in use open their own, as before. On SQLite storage the runs and schedules
  databases' connections are kept likewise (``bulk_changes.sqlite_engines``:
  ``keep_sqlite_connections``). ``BULK_CHANGES_DAEMON_DB_CONNECTIONS=new`` keeps
  Dagster's way for both.

- every minute Dagster's daemon reloads its workspace: for a long-lived code server
  (a ``grpc_server`` workspace) a new connection, the repositories' whole snapshot
  fetched and read again (20 ms of the daemon's CPU, more in the code server), and a new
  watch thread. It now first asks each such code server for its id (one small call) and
  reloads only when a location has an error, an id changed or the workspace file names
  other locations (``refresh_changed_code_servers_only``); a replaced code server is
  still seen within ``WATCH_SECONDS`` by the location's watch thread, as before;
- run retries' event log consumer writes its cursors only when they changed
  (``persist_changed_cursors_only``), and on SQLite storage reads them and the new run
  events only when run events were written since its last look
  (``read_run_events_when_written``);
- its gRPC client keeps one channel per code server for all its calls
  (``keep_grpc_channels``): Dagster's opens a new channel, a new connection to the code
  server, for every call (the sensor ticks, the watches for a replaced code server, the
  workspace check, each run's launch), which costs both sides more CPU than the call.

``BULK_CHANGES_SQLITE_ENGINES=new`` keeps Dagster's engines; ``dagster-daemon run`` works
as well (it only costs more).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

WATCH_SECONDS = 10
KEEP_CONNECTIONS_ENV = "BULK_CHANGES_DAEMON_DB_CONNECTIONS"
# a kept connection is replaced after an hour; up to this many more at once, each closed
# after its statement (the daemon's threads: sensors, run queue, monitoring, retries)
POOL_RECYCLE_SECONDS = 3600
POOL_MAX_OVERFLOW = 20
RUN_RETRY_CHECK_SECONDS = 15
RUN_RETRY_CHECK_ENV = "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS"


def watch_code_servers_every(seconds: float) -> None:
    """How often the daemon's workspace asks each gRPC code server for its id."""
    from bulk_changes.dagster_private import dagster_server_watcher

    dagster_server_watcher.WATCH_INTERVAL = seconds


def code_servers_unchanged(context: Any) -> bool:
    """True when every location of the workspace is a loaded long-lived code server
    (``grpc_server``) that still answers with the id it had when it was loaded, and the
    workspace file names the same locations: a reload would change nothing."""
    from bulk_changes.dagster_private import GrpcServerCodeLocationOrigin

    entries = context.get_current_workspace().code_location_entries
    origins = context._origins
    if not origins or {o.location_name: o for o in origins} != {
        name: entry.origin for name, entry in entries.items()
    }:
        return False
    for entry in entries.values():
        location = entry.code_location
        # a loaded grpc_server origin's location is a GrpcServerCodeLocation
        if (
            not isinstance(entry.origin, GrpcServerCodeLocationOrigin)
            or entry.load_error is not None
            or location is None
        ):
            return False
        try:
            if location.client.get_server_id(timeout=WATCH_SECONDS) != location.server_id:
                return False
        except Exception:  # unreachable, or any error: Dagster's refresh says what it is
            return False
    return True


def refresh_changed_code_servers_only() -> None:
    """Make the workspace's periodic refresh (the daemon controller's, every minute)
    reload nothing when ``code_servers_unchanged``."""
    from bulk_changes.dagster_private import WorkspaceProcessContext

    refresh = WorkspaceProcessContext.refresh_workspace
    if getattr(refresh, "_bulk_changes_quiet", False):
        return

    def refresh_workspace(self: Any) -> None:
        if not code_servers_unchanged(self):
            refresh(self)

    refresh_workspace._bulk_changes_quiet = True  # type: ignore[attr-defined]
    WorkspaceProcessContext.refresh_workspace = refresh_workspace  # type: ignore[method-assign]


def persist_changed_cursors_only() -> None:
    """Run retries' event log consumer writes its cursors (one per event type it follows)
    after every look, every 15 s, changed or not: a write and a commit each time. Written
    now only when they differ from what this process last wrote for that storage."""
    import threading

    from bulk_changes.dagster_private import event_log_consumer_module as module

    persist = module._persist_cursors
    if getattr(persist, "_bulk_changes_changed_only", False):
        return
    lock = threading.Lock()
    written: dict[int, dict[Any, int]] = {}

    def _persist_cursors(instance: Any, cursors: Any) -> None:
        key = id(instance.daemon_cursor_storage)
        with lock:
            if written.get(key) == dict(cursors):
                return
        persist(instance, cursors)
        with lock:
            written[key] = dict(cursors)

    _persist_cursors._bulk_changes_changed_only = True  # type: ignore[attr-defined]
    module._persist_cursors = _persist_cursors


def sqlite_event_index_database(instance: Any) -> str | None:
    """The SQLite file that Dagster's SQLite event log storage mirrors every run status
    event into (the file ``get_logs_for_all_runs_by_log_id`` reads), or None."""
    from bulk_changes.dagster_private import (
        consolidated_sqlite_event_log_module,
        sqlite_event_log_module,
    )

    storage = instance.event_log_storage
    if isinstance(storage, sqlite_event_log_module.SqliteEventLogStorage):
        return str(storage.path_for_shard(sqlite_event_log_module.INDEX_SHARD_NAME))
    if isinstance(storage, consolidated_sqlite_event_log_module.ConsolidatedSqliteEventLogStorage):
        conn_string = str(getattr(storage, "_conn_string", ""))
        prefix = "sqlite:///"
        return conn_string[len(prefix) :] if conn_string.startswith(prefix) else None
    return None


def read_run_events_when_written() -> None:
    """Run retries' event log consumer reads its cursors and the new run failures and
    successes every 15 s (``RUN_RETRY_CHECK_SECONDS``): on the embedded SQLite storage it
    now does so only when something was written to the file those events are mirrored into
    since its last look (``PRAGMA data_version``, as the run queue does: a few microseconds
    instead of three statements). A run's step events go to the run's own file, so this
    holds during a run too, but for its start and end. A look that fails leaves the next
    one to read. Other storages are read every time, as before."""
    from bulk_changes.dagster_private import event_log_consumer_module as module
    from bulk_changes.run_queue import SqliteWrites

    consumer = module.EventLogConsumerDaemon
    run_iteration = consumer.run_iteration
    if getattr(run_iteration, "_bulk_changes_when_written", False):
        return

    def run_iteration_when_written(self: Any, workspace_process_context: Any) -> Iterator[Any]:
        writes = self.__dict__.get("_bulk_changes_index_writes")
        if writes is None:
            path = sqlite_event_index_database(workspace_process_context.instance)
            writes = self._bulk_changes_index_writes = SqliteWrites(path) if path else False
        # read before the look: an event written during it is seen at the next one
        if writes and not writes():
            return
        try:
            yield from run_iteration(self, workspace_process_context)
        except BaseException:
            if writes:
                writes.close()  # the next look reads, whatever was written
            raise

    run_iteration_when_written._bulk_changes_when_written = True  # type: ignore[attr-defined]
    consumer.run_iteration = run_iteration_when_written  # type: ignore[method-assign]


def keep_storage_connections() -> bool:
    """Make ``dagster-daemon run`` give its instance's storage kept connections before it
    starts the daemons (nothing changes on SQLite storage). False when told not to."""
    if os.environ.get(KEEP_CONNECTIONS_ENV, "keep") == "new":
        return False
    from bulk_changes.dagster_private import dagster_daemon_cli_module as cli_module

    make = cli_module.daemon_controller_from_instance
    if getattr(make, "_bulk_changes_keeps", False):
        return True

    def daemon_controller_from_instance(instance: Any, *args: Any, **kwargs: Any) -> Any:
        # statement_timeout 0: none, PostgreSQL's default (the webserver sets one)
        instance.optimize_for_webserver(
            statement_timeout=0, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=POOL_MAX_OVERFLOW
        )
        return make(instance, *args, **kwargs)

    daemon_controller_from_instance._bulk_changes_keeps = True  # type: ignore[attr-defined]
    cli_module.daemon_controller_from_instance = daemon_controller_from_instance
    return True


# A kept channel whose code server went away tries to connect again after at most this
# long (gRPC's default backs off up to 120 s): a restarted code server is reached within
# a second of listening, as a new channel would reach it.
RECONNECT_BACKOFF_MS = 1000


def keep_grpc_channels() -> None:
    """Make Dagster's gRPC client (``DagsterGrpcClient``) use one channel per server
    address for every call of this process, made at the first call and never closed.

    Dagster opens a channel for each call and closes it after: a TCP connection, an
    HTTP/2 handshake and the channel's set-up on both sides (daemon 1.2 ms of CPU, code
    server 0.75 ms a call; 0.4 and 0.3 on a kept channel, docs/benchmarks.md). A gRPC
    channel is safe to share between threads and connects again by itself when its server
    restarts (within ``RECONNECT_BACKOFF_MS``). The channel's options and compression
    are Dagster's (``test_dagster_private`` reads its ``_channel``)."""
    import threading
    from contextlib import contextmanager

    import grpc

    from bulk_changes.dagster_private import DagsterGrpcClient, dagster_grpc_utils

    if getattr(DagsterGrpcClient._channel, "_bulk_changes_kept", False):
        return
    lock = threading.Lock()
    channels: dict[tuple[Any, ...], Any] = {}

    def kept_channel(client: Any) -> Any:
        options = [
            ("grpc.max_receive_message_length", dagster_grpc_utils.max_rx_bytes()),
            ("grpc.max_send_message_length", dagster_grpc_utils.max_send_bytes()),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ]
        key = (client._server_address, client._use_ssl, *options)
        with lock:
            channel = channels.get(key)
            if channel is None:
                channel = channels[key] = (
                    grpc.secure_channel(
                        client._server_address,
                        client._ssl_creds,
                        options=options,
                        compression=grpc.Compression.Gzip,
                    )
                    if client._use_ssl
                    else grpc.insecure_channel(
                        client._server_address, options=options, compression=grpc.Compression.Gzip
                    )
                )
        return channel

    @contextmanager
    def _channel(self: Any) -> Iterator[Any]:
        yield kept_channel(self)

    _channel._bulk_changes_kept = True  # type: ignore[attr-defined]
    DagsterGrpcClient._channel = _channel  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    # read by Dagster when the run retries' daemon module is imported: before any import
    os.environ.setdefault(RUN_RETRY_CHECK_ENV, str(RUN_RETRY_CHECK_SECONDS))
    from bulk_changes.dagster_private import dagster_daemon_cli
    from bulk_changes.interval_loops import calm_interval_daemons
    from bulk_changes.run_queue import use_quiet_run_queue
    from bulk_changes.schema_checks import remember_schema_checks
    from bulk_changes.sqlite_engines import keep_sqlite_connections, reuse_sqlite_engines

    reuse_sqlite_engines()
    remember_schema_checks()
    if keep_storage_connections():
        keep_sqlite_connections()
    calm_interval_daemons()
    use_quiet_run_queue()
    watch_code_servers_every(WATCH_SECONDS)
    refresh_changed_code_servers_only()
    persist_changed_cursors_only()
    read_run_events_when_written()
    keep_grpc_channels()
    args = list(sys.argv[1:] if argv is None else argv)
    result = dagster_daemon_cli.main(
        args=args, prog_name="dagster-daemon", standalone_mode=False, obj={}
    )
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
