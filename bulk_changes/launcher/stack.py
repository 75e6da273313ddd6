"""The whole system on this machine: simulators, a local SQS-compatible server, the AMOP
database (an SQLite file, or PostgreSQL with the production instance configuration),
a tenants file and the real Dagster daemon (or ``dagster dev``) launching real run
workers. Each process runs in a session of its own, its output in a log under the root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bulk_changes.db.repository import Repository
from bulk_changes.domain.settings import Settings
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.launcher.instance import (
    embedded_instance,
    production_instance,
    set_pool_limits,
    workspace_yaml,
)
from bulk_changes.launcher.tenants import simulator_tenants
from bulk_changes.resources.amop_db import engine_for
from bulk_changes.resources.local_sqs import (
    free_port,
    start_local_sqs_process,
    stop_local_sqs_process,
)
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.simulators import (
    SimulatorSet,
    freeze_host_objects,
    seed_from_inventory_rows,
    start_simulators,
)
from bulk_changes.simulators.limits import crowded_windows
from bulk_changes.tenant_file import load_settings

# The tests' and the benchmark's loops: the sensor every second, short waits before a
# retry and before an unacknowledged message returns, so a stack answers in seconds.
QUICK_LOOPS = {
    "BULK_CHANGES_SENSOR_INTERVAL": "1",
    "BULK_CHANGES_VISIBILITY_TIMEOUT": "30",
    "BULK_CHANGES_BASE_DELAY": "0.05",
    "BULK_CHANGES_MAX_ATTEMPTS": "10",
    "BULK_CHANGES_RUN_WORKER_CHECK_INTERVAL": "2",
    # the code's defaults before they were lengthened for an idle daemon's CPU (60 s and
    # 58.5 s): the tests wait for a sweep as before, and a daemon stopped before its code
    # server, which waits for the queue sensor's tick in flight, stops within 20 s
    "BULK_CHANGES_NOTIFY_INTERVAL": "30",
    "BULK_CHANGES_SENSOR_LONG_POLL": "18.5",
}

SYSTEMS = ("jasper", "telegence", "revio")

# How long the daemon waits for the code server to start a run worker: Dagster's default,
# 60 s, fails the launch of a worker that a loaded host starts slower (docs/production.md,
# "Connections and many runs at once").
LAUNCH_TIMEOUT_SECONDS = "300"


@dataclass
class Stack:
    root: Path
    sims: SimulatorSet
    env: dict[str, str]  # what the stack's processes run with: this one's and ``variables``
    variables: dict[str, str]  # the variables the stack set (not inherited)
    queue: SqsQueue
    db_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    backend: str = "sqlite"
    # PostgreSQL: the AMOP database's and Dagster storage's names (dropped at the end)
    amop_database: str | None = None
    dagster_database: str | None = None
    daemon: subprocess.Popen[bytes] | None = None
    inventories: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def start_daemon(self, log_name: str = "daemon.log") -> subprocess.Popen[bytes]:
        """The real dagster-daemon (sensors, run queue, run monitoring, run retries), as
        ``bulk_changes.daemon`` runs it (cheaper while idle), in a session of its own: its
        code server and the run workers share its process group."""
        daemon = self._start_process(
            [
                sys.executable, "-m", "bulk_changes.daemon",
                "run", "-w", str(self.root / "workspace.yaml"),
            ],
            log_name,
        )  # fmt: skip
        self.daemon = daemon
        return daemon

    def start_dagster_dev(
        self,
        port: int,
        timeout: float = 120.0,
        log_name: str = "dagster-dev.log",
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """``dagster dev`` (webserver and daemon) on ``port``, as an operator runs it;
        with ``wait``, returns once the UI answers."""
        import urllib.request

        proc = self._start_process(
            [
                _console_script("dagster"),
                "dev",
                "-h", "127.0.0.1",
                "-p", str(port),
                "-w", str(self.root / "workspace.yaml"),
            ],
            log_name,
        )  # fmt: skip
        self.daemon = proc
        if not wait:
            return proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited; see {self.root / log_name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    return proc
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("dagster dev did not answer")

    def _start_process(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """A process of the stack in a session of its own (dagster dev ignores signals
        from a parent without job control), its output in ``log_name``."""
        with (self.root / log_name).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def start_code_server(self, port: int, timeout: float = 120.0) -> None:
        """``bulk_changes.code_server`` (``dagster api grpc`` with run workers forked from
        a process that has imported the code) serving bulk_changes.definitions; returns
        once it listens."""
        import socket

        server = self._start_process(
            [
                sys.executable, "-m", "bulk_changes.code_server",
                "-m", "bulk_changes.definitions", "-h", "127.0.0.1", "-p", str(port),
            ],
            "code-server.log",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the code server exited; see {self.root / 'code-server.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the code server did not start listening")

    def kill_daemon(self) -> None:
        """kill -9 the daemon with its code server and any run worker (a host crash); back
        once every process of its group is gone."""
        assert self.daemon is not None
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(30)
        # a killed process's exit is asynchronous: a run worker with a dozen threads on a
        # loaded host can still be tearing down for a moment after the signal
        wait_group_gone(self.daemon.pid)
        self.processes.remove(self.daemon)
        self.daemon = None

    @property
    def repo(self) -> Repository:
        return Repository(engine_for(self.db_url))

    def settings(self) -> Settings:
        """The tenants file the stack runs with (the packaged default without one)."""
        return load_settings(self.env.get("BULK_CHANGES_TENANTS") or None)

    def import_devices(
        self,
        tenant: str,
        rows: list[dict[str, str]],
        source: str = "e2e",
        *,
        revio_account: str | None = None,
    ) -> int:
        """Devices into the AMOP inventory and the simulators alike (``revio_account``: the
        Rev.io login whose services these are; None: every account's). -> how many were new."""
        inserted, _ = self.repo.upsert_devices(tenant, inventory_rows(rows, source))
        seed_from_inventory_rows(self.sims, rows, revio_account=revio_account)
        return int(inserted)

    def submit(
        self, tenant: str, change_type: str, integration: str, rows: list[dict[str, Any]]
    ) -> int:
        bulk_id = self.create(tenant, change_type, integration, rows)
        self.queue.send({"bulk_change_id": bulk_id})
        return bulk_id

    def create(
        self, tenant: str, change_type: str, integration: str, rows: list[dict[str, Any]]
    ) -> int:
        """The bulk change in the AMOP database, as the portal makes it; no message yet."""
        result = submit_bulk_change(
            self.repo,
            self.settings(),
            SubmitRequest(
                tenant=tenant,
                change_type=change_type,
                integration=integration,
                rows=rows,
                idempotency_key=uuid.uuid4().hex,
                requested_by="e2e",
            ),
        )
        return result.id

    def wait_final(self, bulk_ids: list[int], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(bulk_ids)
        while pending and time.monotonic() < deadline:
            for bulk_id in list(pending):
                bulk = self.repo.get_bulk_change(bulk_id)
                if bulk and BulkStatus(bulk.status) in FINAL_BULK:
                    pending.discard(bulk_id)
            self.check_alive()
            time.sleep(1)
        if pending:
            raise AssertionError(
                f"bulk changes {sorted(pending)} not final after {timeout} s; logs: {self.root}"
            )

    def exited(self) -> subprocess.Popen[bytes] | None:
        """A process of the stack that has exited, if any."""
        return next((p for p in self.processes if p.poll() is not None), None)

    def check_alive(self) -> None:
        proc = self.exited()
        if proc is not None:
            raise AssertionError(
                f"{program(proc)} exited with {proc.returncode}; logs: {self.root}"
            )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bulk_changes.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def status_json(self, bulk_id: int) -> dict[str, Any]:
        done = self.cli("status", str(bulk_id), "--json", "--devices")
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def violations(self) -> dict[str, dict[str, int]]:
        return {
            name: sim.stats()["violations"]
            for name, sim in zip(SYSTEMS, self.sims.all(), strict=True)
        }

    def crowded_windows(self) -> list[str]:
        """Where calls started more often than an account's limit, from the simulators'
        call logs (for an assertion's message: a rate violation shows its shape)."""
        found = []
        for name, sim in zip(SYSTEMS, self.sims.all(), strict=True):
            by_account: dict[str, list[float]] = {}
            for call in sim.calls():
                by_account.setdefault(call.get("account") or "?", []).append(call["t"])
            for account, starts in by_account.items():
                for w in crowded_windows(starts, sim.limits_for(account)):
                    found.append(
                        f"{name} {account}: call {w['call']} ({w['seconds_in']:.3f} s in) started"
                        f" {w['span_s']:.4f} s after the call a limit's worth before it;"
                        f" gaps ms {w['gaps_ms']}"
                    )
        return found


def start_stack(
    root: Path,
    *,
    tenants: Callable[[Any], dict[str, Any]] | None = simulator_tenants,
    credentials: dict[str, dict[str, Any]] | None = None,
    configure_sims: Callable[[Any], None] | None = None,
    env_overrides: Mapping[str, str] | None = None,
    dagster_yaml: str | None = None,
    backend: str = "sqlite",
    code_server: bool = False,
    dagster_dev_port: int | None = None,
    ports: Mapping[str, int] | None = None,
    loops: Mapping[str, str] = QUICK_LOOPS,
    queue_name: str | None = None,
    start_dagster: bool = True,
    pool_limits: dict[str, int] | None = None,
) -> Stack:
    """Start everything under ``root`` (an existing, empty folder).

    ``tenants`` builds the tenants file from the simulators' URLs; None: no file, the
    packaged default (its URLs taken from BULK_CHANGES_*_URL, which point at the
    simulators).

    ``backend``: "sqlite" (the embedded default) or "postgresql": the AMOP database and
    Dagster's storage each in a new database on the local PostgreSQL, the instance
    configured by deploy/dagster.yaml (``production_instance``) unless ``dagster_yaml``.

    ``code_server``: the code location served by one long-lived ``dagster api grpc``
    process that the workspace points at (as in production), instead of the servers the
    daemon starts itself and replaces every minute.

    ``dagster_dev_port``: ``dagster dev`` (the UI on that port, and its daemon) instead of
    the daemon alone; ``start_dagster`` False: neither yet (``Stack.start_daemon`` or
    ``Stack.start_dagster_dev`` later).

    ``ports``: "jasper", "telegence", "revio", "sqs" (any free port for one not named).
    ``loops``: the variables that pace the sensor and retries (``QUICK_LOOPS``).
    ``queue_name``: the queue (and ``NAME-dlq``); a new one by default.

    ``pool_limits``: PostgreSQL: the ops' pool limits instead of ``POOL_LIMITS``."""
    ports = ports or {}
    sims = start_simulators(
        jasper_port=ports.get("jasper", 0),
        telegence_port=ports.get("telegence", 0),
        revio_port=ports.get("revio", 0),
        credentials=credentials,
    )
    if configure_sims is None:
        # The simulators enforce the documented limits; Telegence publishes none, so the
        # test account's own limit is enforced there too.
        sims.telegence.configure(rate_per_second=40, max_in_flight=6)
    else:
        configure_sims(sims)
    sqs_port = ports.get("sqs") or free_port()
    sqs = start_local_sqs_process(sqs_port, root / "sqs.log")
    (root / "dagster_home").mkdir()
    amop_database = dagster_database = None
    storage_env: dict[str, str] = {}
    if backend == "postgresql":
        from bulk_changes.launcher.postgres import (
            create_database,
            dagster_pg_env,
            database_url,
        )

        amop_database = create_database("amop_e2e")
        dagster_database = create_database("dagster_e2e")
        db_url = database_url(amop_database)
        storage_env = dagster_pg_env(dagster_database)
        dagster_yaml = dagster_yaml or yaml.safe_dump(production_instance())
    else:
        db_url = f"sqlite:///{root / 'amop.sqlite'}"
    (root / "dagster_home" / "dagster.yaml").write_text(
        dagster_yaml or yaml.safe_dump(embedded_instance())
    )
    code_server_port = free_port() if code_server else None
    (root / "workspace.yaml").write_text(workspace_yaml(code_server_port))
    queue_name = queue_name or f"stack-{uuid.uuid4().hex[:8]}"
    variables = {
        "DAGSTER_HOME": str(root / "dagster_home"),
        "BULK_CHANGES_HOME": str(root),
        "BULK_CHANGES_DB_URL": db_url,
        "BULK_CHANGES_SQS_ENDPOINT": f"http://127.0.0.1:{sqs_port}",
        "BULK_CHANGES_QUEUE": queue_name,
        "BULK_CHANGES_DLQ": f"{queue_name}-dlq",
        "BULK_CHANGES_SENSOR_DEFAULT": "running",
        "BULK_CHANGES_JASPER_URL": sims.jasper_url,
        "BULK_CHANGES_TELEGENCE_URL": sims.telegence_url,
        "BULK_CHANGES_REVIO_URL": sims.revio_url,
        "DAGSTER_GRPC_TIMEOUT_SECONDS": LAUNCH_TIMEOUT_SECONDS,
        **loops,
        **storage_env,
    }
    if tenants is not None:
        tenants_file = root / "tenants.yaml"
        tenants_file.write_text(yaml.safe_dump(tenants(sims)))
        variables["BULK_CHANGES_TENANTS"] = str(tenants_file)
    variables.update(env_overrides or {})
    queue = SqsQueue(
        endpoint_url=variables["BULK_CHANGES_SQS_ENDPOINT"],
        queue_name=variables["BULK_CHANGES_QUEUE"],
        dead_letter_queue_name=variables["BULK_CHANGES_DLQ"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    queue.ensure_queues()
    stack = Stack(
        root=root,
        sims=sims,
        env={**os.environ, **variables},
        variables=variables,
        queue=queue,
        db_url=db_url,
        backend=backend,
        amop_database=amop_database,
        dagster_database=dagster_database,
    )
    stack.processes.append(sqs)
    if backend == "postgresql":
        set_pool_limits(root / "dagster_home", storage_env, pool_limits)
    if code_server_port:
        stack.start_code_server(code_server_port)
    if start_dagster and dagster_dev_port:
        stack.start_dagster_dev(dagster_dev_port)
    elif start_dagster:
        stack.start_daemon()
    freeze_host_objects()  # this process hosts the simulators: see the function
    return stack


def stop_stack(stack: Stack) -> None:
    """Stop every process (the SQS server last), the simulators, and drop a PostgreSQL
    stack's databases."""
    for proc in stack.processes[1:]:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    stop_local_sqs_process(stack.processes[0])
    stack.sims.stop()
    if stack.amop_database:
        engine_for(stack.db_url).dispose()
    if stack.amop_database or stack.dagster_database:
        from bulk_changes.launcher.postgres import drop_database

        for name in (stack.amop_database, stack.dagster_database):
            if name:
                drop_database(name)


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies left out: a killed process
    whose parent died too may wait for a reaper that never comes, in a container)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def wait_group_gone(pgid: int, timeout: float = 20.0) -> None:
    """Until no live process of group ``pgid`` is left (after a SIGKILL to the group)."""
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise RuntimeError(
            f"processes {left} of group {pgid} still alive {timeout} s after SIGKILL"
        )


def run_worker_pids(run_id: str) -> list[int]:
    """The run worker of a run: the process whose stdout is that run's compute log."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stdout = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        if run_id in stdout and "compute_logs" in stdout:
            pids.append(int(entry.name))
    return pids


def program(proc: subprocess.Popen[bytes]) -> str:
    """The program a process of the stack runs (its first argument)."""
    args = proc.args
    return str(args[0] if isinstance(args, list | tuple) else args)


def _console_script(name: str) -> str:
    """A console script beside this interpreter (the virtual environment's), else on PATH."""
    binary = Path(sys.executable).with_name(name)
    return str(binary) if binary.exists() else name
