"""`bulk-changes demo`: everything on one machine, driven through the queue.

Starts the simulators, a local SQS-compatible server and Dagster (the web UI and the
daemon, or the daemon alone with --headless), imports a few thousand devices for two
tenants, sends bulk changes of every type on both integrations as queue messages (with
invalid rows, injected faults and a poison message), and reports each bulk change as it
becomes final.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulk_changes.db.repository import Repository
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.domain.validation import luhn_check_digit
from bulk_changes.intake import NoValidRows, SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.paths import default_instance_yaml, home, write_home_settings

PORTS = {"jasper": 8101, "telegence": 8102, "revio": 8103, "sqs": 9324, "ui": 3000}


def ports() -> dict[str, int]:
    """The demo's ports, each moved by $BULK_CHANGES_DEMO_PORT_OFFSET (two demos, or a test
    beside a running demo, on one machine)."""
    offset = int(os.environ.get("BULK_CHANGES_DEMO_PORT_OFFSET") or 0)
    return {name: port + offset for name, port in PORTS.items()}


WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: bulk_changes.definitions
      location_name: bulk_changes
"""

# The first device of these bulk changes is refused for good by the carrier.
PERMANENT_FAILURE = "Device is in a state that does not allow this change"


def demo_iccid(tenant_index: int, n: int) -> str:
    body = f"8901{tenant_index:02d}{n:013d}"
    return body + luhn_check_digit(body)


def demo_imei(n: int) -> str:
    body = f"35{n:012d}"
    return body + luhn_check_digit(body)


def demo_msisdn(tenant_index: int, n: int) -> str:
    return f"5{tenant_index:02d}{n:07d}"


def make_inventory(tenant_index: int, count: int) -> list[dict[str, str]]:
    rows = []
    for n in range(count):
        jasper = n % 2 == 0
        rows.append(
            {
                "integration": "jasper" if jasper else "telegence",
                "iccid": demo_iccid(tenant_index, n),
                "msisdn": "" if jasper else demo_msisdn(tenant_index, n),
                "imei": demo_imei(tenant_index * 1_000_000 + n),
                "status": "ACTIVATED" if jasper else "A",
                "rate_plan": "IOT_1GB" if jasper else "SOC1GB",
                "communication_plan": "CP_DEFAULT" if jasper else "",
                "username": "",
                "cost_center_1": "",
                "cost_center_2": "",
                "cost_center_3": "",
                "revio_service_id": str(100_000 * tenant_index + n),
            }
        )
    return rows


@dataclass
class Scenario:
    tenant: str
    change_type: str
    integration: str
    rows: list[dict[str, Any]]
    shape: str  # "id", "prior", "submit"
    key: str
    bulk_change_id: int | None = None
    sent_at: float = 0.0
    reported: bool = False
    notes: list[str] = field(default_factory=list)


def scenarios(inventories: dict[str, list[dict[str, str]]]) -> list[Scenario]:
    def keys(tenant: str, integration: str, start: int, count: int) -> list[dict[str, str]]:
        devices = [r for r in inventories[tenant] if r["integration"] == integration]
        return devices[start : start + count]

    acme_j = lambda s, c: keys("acme", "jasper", s, c)  # noqa: E731
    acme_t = lambda s, c: keys("acme", "telegence", s, c)  # noqa: E731
    glx_j = lambda s, c: keys("globex", "jasper", s, c)  # noqa: E731
    glx_t = lambda s, c: keys("globex", "telegence", s, c)  # noqa: E731
    return [
        Scenario(
            "acme",
            "username_cost_center",
            "jasper",
            [
                {"iccid": d["iccid"], "username": f"driver-{i:04d}", "cost_center_1": "FLEET-EAST"}
                for i, d in enumerate(acme_j(0, 100))
            ]
            + [
                {"iccid": "8901000000000000001", "username": "typo"},  # bad Luhn digit
                {"iccid": demo_iccid(9, 1), "username": "stranger"},
            ],  # not in the inventory
            "id",
            "demo-acme-ucc-jasper",
        ),
        Scenario(
            "acme",
            "device_status",
            "jasper",
            [{"iccid": d["iccid"], "status": "DEACTIVATED"} for d in acme_j(100, 60)]
            + [{"iccid": acme_j(160, 1)[0]["iccid"], "status": "SWITCHED_OFF"}],
            "prior",
            "demo-acme-status-jasper",
        ),
        Scenario(
            "acme",
            "carrier_rate_plan",
            "telegence",
            [{"msisdn": d["msisdn"], "rate_plan": "SOC5GB"} for d in acme_t(0, 80)],
            "submit",
            "demo-acme-plan-telegence",
        ),
        Scenario(
            "acme",
            "equipment",
            "telegence",
            [
                {
                    "msisdn": d["msisdn"],
                    "new_imei": demo_imei(9_000_000 + i),
                    "reason_code": "CUST_OWN_EQU",
                }
                for i, d in enumerate(acme_t(80, 40))
            ],
            "submit",
            "demo-acme-equipment-telegence",
        ),
        Scenario(
            "globex",
            "username_cost_center",
            "telegence",
            [
                {"msisdn": d["msisdn"], "username": f"tech-{i:04d}", "cost_center_2": "FIELD-OPS"}
                for i, d in enumerate(glx_t(0, 100))
            ],
            "id",
            "demo-globex-ucc-telegence",
        ),
        Scenario(
            "globex",
            "device_status",
            "telegence",
            [{"msisdn": d["msisdn"], "status": "S", "reason_code": "CR"} for d in glx_t(100, 40)],
            "submit",
            "demo-globex-status-telegence",
        ),
        Scenario(
            "globex",
            "carrier_rate_plan",
            "jasper",
            [
                {"iccid": d["iccid"], "rate_plan": "IOT_5GB", "communication_plan": "CP_DEFAULT"}
                for d in glx_j(0, 80)
            ],
            "id",
            "demo-globex-plan-jasper",
        ),
        Scenario(
            "globex",
            "equipment",
            "jasper",
            [
                {
                    "iccid": d["iccid"],
                    "new_imei": demo_imei(8_000_000 + i),
                    "reason_code": "CUST_OWN_EQU",
                }
                for i, d in enumerate(glx_j(80, 3))
            ],
            "id",
            "demo-globex-equipment-jasper",
        ),
    ]


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = home() / "demo"
        self.ports = ports()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sims: Any = None
        self.started = time.monotonic()

    # ---- set-up ---------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # each demo starts from nothing
        (self.root / "dagster_home").mkdir(parents=True)
        # the embedded default's instance, run retries and run monitoring included
        shutil.copyfile(default_instance_yaml(), self.root / "dagster_home" / "dagster.yaml")
        (self.root / "workspace.yaml").write_text(WORKSPACE_YAML)
        values = {
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "BULK_CHANGES_HOME": str(self.root),
            "BULK_CHANGES_DB_URL": f"sqlite:///{self.root / 'amop.sqlite'}",
            "BULK_CHANGES_SQS_ENDPOINT": f"http://127.0.0.1:{self.ports['sqs']}",
            "BULK_CHANGES_SENSOR_INTERVAL": "3",
            "BULK_CHANGES_SENSOR_DEFAULT": "running",
            "BULK_CHANGES_JASPER_URL": f"http://127.0.0.1:{self.ports['jasper']}/rws/api/v1",
            "BULK_CHANGES_TELEGENCE_URL": f"http://127.0.0.1:{self.ports['telegence']}",
            "BULK_CHANGES_REVIO_URL": f"http://127.0.0.1:{self.ports['revio']}/v1",
        }
        # where the CLI looks (the home, not the demo's folder): `bulk-changes status 3`
        # run beside the demo reads the demo's database and sends to its queue
        settings = write_home_settings(
            {
                k: v
                for k, v in values.items()
                if k not in ("BULK_CHANGES_SENSOR_INTERVAL", "BULK_CHANGES_SENSOR_DEFAULT")
            }
        )
        os.environ.update(values)
        say(f"settings for the CLI: {settings} (the CLI uses the demo's database and queue)")

    def start_services(self) -> None:
        from bulk_changes.resources.local_sqs import start_local_sqs_process
        from bulk_changes.simulators import start_simulators

        self.sims = start_simulators(
            jasper_port=self.ports["jasper"],
            telegence_port=self.ports["telegence"],
            revio_port=self.ports["revio"],
        )
        say(f"simulators: {self.sims.jasper_url}  {self.sims.telegence_url}  {self.sims.revio_url}")
        self.processes.append(start_local_sqs_process(self.ports["sqs"], self.root / "sqs.log"))
        say(f"local SQS-compatible server: http://127.0.0.1:{self.ports['sqs']}")
        self.queue().ensure_queues()

    def queue(self) -> Any:
        from bulk_changes.environments import local_resources

        return local_resources()["queue"]

    def repo(self) -> Repository:
        from bulk_changes.environments import local_resources

        return local_resources()["amop_db"].repository()

    def import_inventory(self) -> dict[str, list[dict[str, str]]]:
        from bulk_changes.simulators import seed_from_inventory_rows

        inventories: dict[str, list[dict[str, str]]] = {}
        repo = self.repo()
        for index, tenant in enumerate(("acme", "globex"), start=1):
            rows = make_inventory(index, self.args.devices)
            inventories[tenant] = rows
            csv_path = self.root / f"inventory-{tenant}.csv"
            write_csv(csv_path, rows)
            inserted, _ = repo.upsert_devices(tenant, inventory_rows(rows, csv_path.name))
            seed_from_inventory_rows(self.sims, rows)
            say(f"imported {inserted} devices for {tenant} ({csv_path})")
        return inventories

    def inject_faults(self, plan: list[Scenario]) -> None:
        fail_jasper = plan[1].rows[0]["iccid"]
        fail_telegence = plan[2].rows[0]["msisdn"]
        self.sims.jasper.configure(error_rate=0.05, fail_keys={fail_jasper: PERMANENT_FAILURE})
        self.sims.telegence.configure(
            error_rate=0.05, fail_keys={fail_telegence: PERMANENT_FAILURE}
        )
        self.sims.revio.configure(error_rate=0.05)
        plan[1].notes.append(f"{fail_jasper} refused for good by Jasper")
        plan[2].notes.append(f"{fail_telegence} refused for good by Telegence")
        say(
            "faults injected: 5% 5xx answers on every system, one permanently failing device on two carriers"
        )

    def start_dagster(self) -> None:
        log = (self.root / "dagster.log").open("ab")
        workspace = str(self.root / "workspace.yaml")
        if self.args.headless:
            command = ["dagster-daemon", "run", "-w", workspace]
        else:
            command = [
                "dagster",
                "dev",
                "-w",
                workspace,
                "-p",
                str(self.ports["ui"]),
                "-h",
                "127.0.0.1",
            ]
        binary = Path(sys.executable).with_name(command[0])
        if binary.exists():
            command[0] = str(binary)
        # its own session: dagster dev ignores signals from a parent without job control
        self.processes.append(
            subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        what = (
            "daemon" if self.args.headless else f"UI http://127.0.0.1:{self.ports['ui']} and daemon"
        )
        say(f"dagster {what} starting (log: {self.root / 'dagster.log'})")

    # ---- sending --------------------------------------------------------------------------

    def send(self, plan: list[Scenario]) -> None:
        queue = self.queue()
        repo = self.repo()
        from bulk_changes.environments import local_resources

        settings = local_resources()["tenant_config"].settings()
        for scenario in plan:
            scenario.sent_at = time.monotonic()
            if scenario.shape == "submit":
                queue.send(
                    {
                        "type": "submit_bulk_change",
                        "tenant": scenario.tenant,
                        "change_type": scenario.change_type,
                        "integration": scenario.integration,
                        "idempotency_key": scenario.key,
                        "notify": [f"demo@{scenario.tenant}.example"],
                        "devices": scenario.rows,
                    }
                )
                continue
            try:
                result = submit_bulk_change(
                    repo,
                    settings,
                    SubmitRequest(
                        tenant=scenario.tenant,
                        change_type=scenario.change_type,
                        integration=scenario.integration,
                        rows=scenario.rows,
                        idempotency_key=scenario.key,
                        requested_by="demo",
                        source="demo",
                    ),
                )
            except NoValidRows as exc:
                # equipment on Jasper: every row refused, so nothing is stored or sent
                scenario.reported = True
                reasons = {r["reason"] for r in exc.rejected}
                say(
                    f"{scenario.tenant} {scenario.change_type}/{scenario.integration} refused at "
                    f"intake, nothing stored: {len(exc.rejected)} row(s): {'; '.join(reasons)}"
                )
                continue
            scenario.bulk_change_id = result.id
            if scenario.shape == "prior":
                queue.send("", attributes={"BulkChangeId": str(result.id)})
            else:
                queue.send({"bulk_change_id": result.id})
        queue.send("this is not a bulk change")  # goes to the dead-letter queue, with its reason
        sent = sum(1 for s in plan if not s.reported)  # a refused one was reported already
        say(f"sent {sent} bulk changes to the queue (3 message shapes) and one poison message")

    # ---- watching -------------------------------------------------------------------------

    def watch(self, plan: list[Scenario]) -> bool:
        repo = self.repo()
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            for scenario in plan:
                if scenario.bulk_change_id is None:
                    found = repo.find_by_idempotency_key(scenario.tenant, scenario.key)
                    scenario.bulk_change_id = found.id if found else None
                if scenario.bulk_change_id is None or scenario.reported:
                    continue
                bulk = repo.get_bulk_change(scenario.bulk_change_id)
                if bulk and BulkStatus(bulk.status) in FINAL_BULK:
                    self.report(scenario, repo)
            if all(s.reported for s in plan):
                return True
            for proc in self.processes:
                if proc.poll() is not None:
                    say(
                        f"a background process exited ({proc.args[0]}, code {proc.returncode}); see the logs in {self.root}"
                    )
                    return False
            time.sleep(2)
        say(f"not all bulk changes final after {self.args.timeout:.0f} s")
        return False

    def report(self, scenario: Scenario, repo: Repository) -> None:
        from bulk_changes.status_report import status_of

        scenario.reported = True
        report = status_of(repo, scenario.bulk_change_id or 0, with_devices=False) or {}
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.get("counts", {}).items()))
        calls = report.get("calls", {})
        per_system = ", ".join(f"{s} {sum(o.values())}" for s, o in sorted(calls.items())) or "none"
        retries = sum(o.get("retry", 0) for o in calls.values())
        throttled = sum(o.get("throttled", 0) for o in calls.values())
        duration = report.get("duration_seconds")
        took = f"{duration:.1f} s" if duration is not None else "-"
        say(
            f"bulk change {scenario.bulk_change_id} {scenario.tenant} {scenario.change_type}/{scenario.integration}"
            f" ({scenario.shape} message): {report.get('status')}"
        )
        print(f"    devices: {counts}; processing time {took}")
        print(f"    calls: {per_system}; retried {retries}; throttled answers {throttled}")
        for note in scenario.notes:
            print(f"    note: {note}")
        print(f"    details: bulk-changes status {scenario.bulk_change_id} --devices", flush=True)

    def summary(self) -> None:
        if self.sims is None:
            return
        stats = {
            name: sim.stats()
            for name, sim in zip(("jasper", "telegence", "revio"), self.sims.all(), strict=True)
        }
        for name, s in stats.items():
            say(
                f"{name} simulator: {s['calls']} calls, rate-limit violations {json.dumps(s['violations'])},"
                f" throttled answers {s['throttled']}, injected faults {json.dumps(s['faults'])}"
            )
        dead = self.queue().list_dead_letters(10)
        for message in dead:
            say(
                f"dead-letter queue: {message.body[:40]!r}: {message.attributes.get('DeadLetterReason')}"
            )

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.sims is not None:
            self.sims.stop()


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    from bulk_changes.domain.spreadsheet import write_rows

    with path.open("w", newline="", encoding="utf-8") as handle:
        write_rows(handle, list(rows[0]), [list(r.values()) for r in rows])


def serve_empty(demo: Demo) -> int:
    """The stack without sample data: for one's own inventory and requests."""
    demo.start_dagster()
    say(
        "ready: import your devices with `bulk-changes devices import FILE --tenant acme "
        "--simulators`, then `bulk-changes submit`. Ctrl-C to stop."
    )
    try:
        while all(p.poll() is None for p in demo.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    say(f"a background process exited; see the logs in {demo.root}")
    return 1


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _stop_on_sigterm(*_: object) -> None:
    # SIGTERM stops the demo as Ctrl-C does: its services run in their own sessions and
    # are stopped by ``Demo.stop``, which a plain exit would skip
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace) -> int:
    demo = Demo(args)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        demo.prepare()
        demo.start_services()
        if getattr(args, "no_samples", False):
            return serve_empty(demo)
        inventories = demo.import_inventory()
        plan = scenarios(inventories)
        demo.inject_faults(plan)
        demo.start_dagster()
        demo.send(plan)
        ok = demo.watch(plan)
        demo.summary()
        if ok:
            say(
                f"all {len(plan)} bulk changes are final ({time.monotonic() - demo.started:.0f} s in all)"
            )
            mails = sorted((demo.root / "outbox-mail").glob("*.eml"))
            say(
                f"notification emails (no SMTP server in the demo): {len(mails)} .eml files in "
                f"{demo.root / 'outbox-mail'}; `bulk-changes status ID` shows each delivery"
            )
        if not args.headless and ok:
            say(
                f"Dagster UI: http://127.0.0.1:{demo.ports['ui']}  (Runs: one per bulk change, tagged by tenant;"
                " Sensors: bulk_change_queue_sensor). Ctrl-C to stop."
            )
            try:
                while all(p.poll() is None for p in demo.processes):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop()
