"""The whole system on this machine for end-to-end tests: simulators, a local SQS server,
the real Dagster daemon launching real run workers, an AMOP SQLite file."""

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
from bulk_changes.resources.amop_db import engine_for
from bulk_changes.resources.local_sqs import (
    free_port,
    start_local_sqs_process,
    stop_local_sqs_process,
)
from bulk_changes.resources.queue import SqsQueue
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes.simulators import seed_from_inventory_rows, start_simulators

DAGSTER_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""


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
        self.queue.send({"bulk_change_id": result.id})
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


def start_stack(
    root: Path,
    *,
    tenants: Callable[[Any], dict[str, Any]] = tenants_yaml,
    credentials: dict[str, dict[str, Any]] | None = None,
    configure_sims: Callable[[Any], None] | None = None,
    env_overrides: dict[str, str] | None = None,
    dagster_yaml: str = DAGSTER_YAML,
) -> Stack:
    """Start everything; ``tenants`` builds the tenant file from the simulators' URLs."""
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
    (root / "dagster_home" / "dagster.yaml").write_text(dagster_yaml)
    (root / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: bulk_changes.definitions\n      location_name: bulk_changes\n"
    )
    tenants_file = root / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(tenants(sims)))
    db_url = f"sqlite:///{root / 'amop.sqlite'}"
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
    stack = Stack(root=root, sims=sims, env=env, queue=queue, db_url=db_url)
    stack.processes.append(sqs)
    daemon_log = (root / "daemon.log").open("ab")
    daemon = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-daemon")),
            "run",
            "-w",
            str(root / "workspace.yaml"),
        ],
        env=env,
        cwd=root,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack.processes.append(daemon)
    return stack


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
