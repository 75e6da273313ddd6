"""The whole system on this machine for end-to-end tests: simulators, a local SQS server,
the real Dagster daemon launching real run workers, and either the embedded default (an
AMOP SQLite file, SQLite Dagster storage) or PostgreSQL for both with the production
instance configuration (deploy/dagster.yaml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bulk_changes.db.repository import Repository
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.paths import default_instance_yaml
from bulk_changes.resources.amop_db import engine_for
from bulk_changes.resources.local_sqs import (
    free_port,
    start_local_sqs_process,
    stop_local_sqs_process,
)
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes.simulators import (
    freeze_host_objects,
    seed_from_inventory_rows,
    start_simulators,
)
from bulk_changes.simulators.limits import crowded_windows
from bulk_changes_tests.postgres import (
    create_database,
    dagster_pg_env,
    database_url,
    drop_database,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LAUNCH_TIMEOUT_SECONDS = "300"


def embedded_instance() -> dict[str, Any]:
    """The embedded default's instance (bulk_changes/defaults/dagster.yaml) as it is, but
    for four runs at once and shorter waits of run monitoring."""
    config: dict[str, Any] = yaml.safe_load(default_instance_yaml().read_text())
    config["run_coordinator"]["config"].update(max_concurrent_runs=4, dequeue_num_workers=4)
    config["run_monitoring"].update(poll_interval_seconds=5, free_slots_after_run_end_seconds=5)
    return config


def tenants_yaml(sims: Any) -> dict[str, Any]:
    common_revio = {
        "system": "revio",
        "base_url": sims.revio_url,
        "username": "sim-user",
        "client_code": "simclient",
        "password": "${E2E_REVIO_PASSWORD:-sim-revio-password}",
        "subscription_key": "sim-subscription-key",
        "calls_per_minute": 500,
        "max_in_flight": 4,
    }
    return {
        "accounts": {
            "jasper-e2e": {
                "system": "jasper",
                "base_url": sims.jasper_url,
                "username": "sim-user",
                "api_key": "sim-jasper-key",
                "calls_per_second": 5,
                "max_in_flight": 1,
            },
            "telegence-e2e": {
                "system": "telegence",
                "base_url": sims.telegence_url,
                "app_id": "sim-app",
                "app_secret": "sim-telegence-secret",
                "calls_per_second": 40,
                "max_in_flight": 6,
                "activation_poll_seconds": 0.2,
            },
            "revio-e2e": common_revio,
        },
        "tenants": [
            {
                "id": tenant,
                "notify": [f"ops@{tenant}.example"],
                "accounts": {
                    "jasper": "jasper-e2e",
                    "telegence": "telegence-e2e",
                    "revio": "revio-e2e",
                },
                "username_mapping": mapping,
                "rate_plan_billing": {"IOT_1GB": 101, "IOT_5GB": 105, "SOC1GB": 201, "SOC5GB": 205},
            }
            for tenant, mapping in (("acme", "field"), ("globex", "both"))
        ],
    }


@dataclass
class Stack:
    root: Path
    sims: Any
    env: dict[str, str]
    queue: SqsQueue
    db_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    backend: str = "sqlite"
    # PostgreSQL: the AMOP database's and Dagster storage's names (dropped at the end)
    amop_database: str | None = None
    dagster_database: str | None = None
    daemon: subprocess.Popen[bytes] | None = None

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """The real dagster-daemon (sensors, run queue, run monitoring, run retries), in a
        session of its own: its code server and the run workers share its process group."""
        daemon = self._start_process(
            [
                str(Path(sys.executable).with_name("dagster-daemon")),
                "run",
                "-w",
                str(self.root / "workspace.yaml"),
            ],
            "daemon.log",
        )
        self.daemon = daemon
        return daemon

    def start_dagster_dev(self, port: int, timeout: float = 120.0) -> subprocess.Popen[bytes]:
        """``dagster dev`` (webserver and daemon) on ``port``, as an operator runs it;
        returns once the UI answers."""
        import urllib.request

        proc = self._start_process(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-h", "127.0.0.1",
                "-p", str(port),
                "-w", str(self.root / "workspace.yaml"),
            ],
            "dagster-dev.log",
        )  # fmt: skip
        self.daemon = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited; see {self.root / 'dagster-dev.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    return proc
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("dagster dev did not answer")

    def _start_process(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """A process of the stack in a session of its own, its output in ``log_name``."""
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
        """kill -9 the daemon with its code server and any run worker (a host crash)."""
        assert self.daemon is not None
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(30)
        self.processes.remove(self.daemon)
        self.daemon = None

    @property
    def repo(self) -> Repository:
        return Repository(engine_for(self.db_url))

    def settings(self) -> Any:
        return load_settings(self.env["BULK_CHANGES_TENANTS"])

    def import_devices(self, tenant: str, rows: list[dict[str, str]]) -> None:
        self.repo.upsert_devices(tenant, inventory_rows(rows, "e2e"))
        seed_from_inventory_rows(self.sims, rows)

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

    def check_alive(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{proc.args[0]} exited with {proc.returncode}; logs: {self.root}"
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
        return json.loads(done.stdout)

    def violations(self) -> dict[str, dict[str, int]]:
        return {
            name: sim.stats()["violations"]
            for name, sim in zip(("jasper", "telegence", "revio"), self.sims.all(), strict=True)
        }

    def crowded_windows(self) -> list[str]:
        """Where calls started more often than an account's limit, from the simulators'
        call logs (for an assertion's message: a rate violation shows its shape)."""
        found = []
        for name, sim in zip(("jasper", "telegence", "revio"), self.sims.all(), strict=True):
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
    tenants: Callable[[Any], dict[str, Any]] = tenants_yaml,
    credentials: dict[str, dict[str, Any]] | None = None,
    configure_sims: Callable[[Any], None] | None = None,
    env_overrides: dict[str, str] | None = None,
    dagster_yaml: str | None = None,
    backend: str = "sqlite",
    code_server: bool = False,
    dagster_dev_port: int | None = None,
    pool_limits: dict[str, int] | None = None,
) -> Stack:
    """Start everything; ``tenants`` builds the tenant file from the simulators' URLs.

    ``backend``: "sqlite" (the embedded default) or "postgresql": the AMOP database and
    Dagster's storage each in a new database on the local PostgreSQL, the instance
    configured by deploy/dagster.yaml (``production_instance``) unless ``dagster_yaml``.

    ``code_server``: the code location served by one long-lived ``dagster api grpc``
    process that the workspace points at (as in production), instead of the servers the
    daemon starts itself and replaces every minute.

    ``dagster_dev_port``: ``dagster dev`` (the UI on that port, and its daemon) instead of
    the daemon alone.

    ``pool_limits``: PostgreSQL: the ops' pool limits instead of ``POOL_LIMITS``."""
    sims = start_simulators(credentials=credentials)
    if configure_sims is None:
        # The simulators enforce the documented limits; Telegence publishes none, so the
        # test account's own limit is enforced there too.
        sims.telegence.configure(rate_per_second=40, max_in_flight=6)
    else:
        configure_sims(sims)
    sqs_port = free_port()
    sqs = start_local_sqs_process(sqs_port, root / "sqs.log")
    (root / "dagster_home").mkdir()
    amop_database = dagster_database = None
    storage_env: dict[str, str] = {}
    if backend == "postgresql":
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
    (root / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {code_server_port}\n"
        "      location_name: bulk_changes\n"
        if code_server_port
        else "load_from:\n  - python_module:\n      module_name: bulk_changes.definitions\n"
        "      location_name: bulk_changes\n"
    )
    tenants_file = root / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(tenants(sims)))
    queue_name = f"e2e-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "BULK_CHANGES_HOME": str(root),
        "BULK_CHANGES_DB_URL": db_url,
        "BULK_CHANGES_TENANTS": str(tenants_file),
        "BULK_CHANGES_SQS_ENDPOINT": f"http://127.0.0.1:{sqs_port}",
        "BULK_CHANGES_QUEUE": queue_name,
        "BULK_CHANGES_DLQ": f"{queue_name}-dlq",
        "BULK_CHANGES_SENSOR_INTERVAL": "1",
        "BULK_CHANGES_SENSOR_DEFAULT": "running",
        "BULK_CHANGES_VISIBILITY_TIMEOUT": "30",
        "BULK_CHANGES_BASE_DELAY": "0.05",
        "BULK_CHANGES_MAX_ATTEMPTS": "10",
        "BULK_CHANGES_RUN_WORKER_CHECK_INTERVAL": "2",
        # the daemon waits this long for the code server to start a run worker (Dagster's
        # default, 60 s, fails the launch of a worker that a loaded host starts slower:
        # docs/production.md, "Connections and many runs at once")
        "DAGSTER_GRPC_TIMEOUT_SECONDS": LAUNCH_TIMEOUT_SECONDS,
        **storage_env,
        **(env_overrides or {}),
    }
    queue = SqsQueue(
        endpoint_url=env["BULK_CHANGES_SQS_ENDPOINT"],
        queue_name=queue_name,
        dead_letter_queue_name=f"{queue_name}-dlq",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    queue.ensure_queues()
    stack = Stack(
        root=root,
        sims=sims,
        env=env,
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
    if dagster_dev_port:
        stack.start_dagster_dev(dagster_dev_port)
    else:
        stack.start_daemon()
    freeze_host_objects()  # this process hosts the simulators: see the function
    return stack


# As deploy/set-pool-limits.sh sets them. Explicit limits are required on PostgreSQL:
# with only pools.default_limit, runs that first claim a pool concurrently can fail with
# InFailedSqlTransaction (dagster #33552, open in 1.13.27).
POOL_LIMITS = {"bulk_changes_devices": 6}


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


def stop_stack(stack: Stack) -> None:
    for proc in stack.processes[1:]:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    stop_local_sqs_process(stack.processes[0])
    stack.sims.stop()
    if stack.amop_database:
        engine_for(stack.db_url).dispose()
    for name in (stack.amop_database, stack.dagster_database):
        if name:
            drop_database(name)


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
