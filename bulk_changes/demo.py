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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulk_changes.db.repository import Repository
from bulk_changes.domain.state_machine import FINAL_BULK, BulkStatus
from bulk_changes.domain.validation import luhn_check_digit
from bulk_changes.intake import NoValidRows, SubmitRequest, submit_bulk_change
from bulk_changes.launcher import Stack, start_stack, stop_stack
from bulk_changes.launcher.stack import program
from bulk_changes.paths import default_instance_yaml, home, write_home_settings

PORTS = {"jasper": 8101, "telegence": 8102, "revio": 8103, "sqs": 9324, "ui": 3000}


def ports() -> dict[str, int]:
    """The demo's ports, each moved by $BULK_CHANGES_DEMO_PORT_OFFSET (two demos, or a test
    beside a running demo, on one machine)."""
    offset = int(os.environ.get("BULK_CHANGES_DEMO_PORT_OFFSET") or 0)
    return {name: port + offset for name, port in PORTS.items()}


# what the CLI run beside the demo needs to reach the demo's database, queue and simulators
CLI_SETTINGS = (
    "DAGSTER_HOME",
    "BULK_CHANGES_HOME",
    "BULK_CHANGES_DB_URL",
    "BULK_CHANGES_SQS_ENDPOINT",
    "BULK_CHANGES_JASPER_URL",
    "BULK_CHANGES_TELEGENCE_URL",
    "BULK_CHANGES_REVIO_URL",
)
DAGSTER_LOG = "dagster.log"

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
        self.stack: Stack | None = None
        self.started = time.monotonic()

    # ---- set-up ---------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # each demo starts from nothing
        self.root.mkdir(parents=True)

    def start_services(self) -> Stack:
        """The simulators, the local SQS server and the AMOP database on the demo's ports;
        Dagster waits for ``start_dagster`` (after the sample data and the faults)."""
        self.stack = stack = start_stack(
            self.root,
            tenants=None,  # the packaged default, pointed at the simulators
            configure_sims=lambda sims: None,  # the simulators' own limits
            # the embedded default's instance, run retries and run monitoring included
            dagster_yaml=default_instance_yaml().read_text(),
            ports=self.ports,
            loops={"BULK_CHANGES_SENSOR_INTERVAL": "3"},
            queue_name="bulk-changes",
            start_dagster=False,
        )
        # where the CLI looks (the home, not the demo's folder): `bulk-changes status 3`
        # run beside the demo reads the demo's database and sends to its queue
        settings = write_home_settings(
            {k: v for k, v in stack.variables.items() if k in CLI_SETTINGS}
        )
        # this process reads the demo's database and tenants as the CLI does
        os.environ.update(stack.variables)
        say(f"settings for the CLI: {settings} (the CLI uses the demo's database and queue)")
        sims = stack.sims
        say(f"simulators: {sims.jasper_url}  {sims.telegence_url}  {sims.revio_url}")
        say(f"local SQS-compatible server: {stack.variables['BULK_CHANGES_SQS_ENDPOINT']}")
        return stack

    def import_inventory(self, stack: Stack) -> dict[str, list[dict[str, str]]]:
        inventories: dict[str, list[dict[str, str]]] = {}
        for index, tenant in enumerate(("acme", "globex"), start=1):
            rows = make_inventory(index, self.args.devices)
            inventories[tenant] = rows
            csv_path = self.root / f"inventory-{tenant}.csv"
            write_csv(csv_path, rows)
            inserted = stack.import_devices(tenant, rows, csv_path.name)
            say(f"imported {inserted} devices for {tenant} ({csv_path})")
        return inventories

    def inject_faults(self, stack: Stack, plan: list[Scenario]) -> None:
        fail_jasper = plan[1].rows[0]["iccid"]
        fail_telegence = plan[2].rows[0]["msisdn"]
        sims = stack.sims
        sims.jasper.configure(error_rate=0.05, fail_keys={fail_jasper: PERMANENT_FAILURE})
        sims.telegence.configure(error_rate=0.05, fail_keys={fail_telegence: PERMANENT_FAILURE})
        sims.revio.configure(error_rate=0.05)
        plan[1].notes.append(f"{fail_jasper} refused for good by Jasper")
        plan[2].notes.append(f"{fail_telegence} refused for good by Telegence")
        say(
            "faults injected: 5% 5xx answers on every system, one permanently failing device on two carriers"
        )

    def start_dagster(self, stack: Stack) -> None:
        if self.args.headless:
            stack.start_daemon(log_name=DAGSTER_LOG)
        else:
            stack.start_dagster_dev(self.ports["ui"], log_name=DAGSTER_LOG, wait=False)
        what = (
            "daemon" if self.args.headless else f"UI http://127.0.0.1:{self.ports['ui']} and daemon"
        )
        say(f"dagster {what} starting (log: {self.root / DAGSTER_LOG})")

    # ---- sending --------------------------------------------------------------------------

    def send(self, stack: Stack, plan: list[Scenario]) -> None:
        queue, repo, settings = stack.queue, stack.repo, stack.settings()
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

    def watch(self, stack: Stack, plan: list[Scenario]) -> bool:
        repo = stack.repo
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
            proc = stack.exited()
            if proc is not None:
                say(
                    f"a background process exited ({program(proc)}, code {proc.returncode}); see the logs in {self.root}"
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

    def summary(self, stack: Stack) -> None:
        stats = {
            name: sim.stats()
            for name, sim in zip(("jasper", "telegence", "revio"), stack.sims.all(), strict=True)
        }
        for name, s in stats.items():
            say(
                f"{name} simulator: {s['calls']} calls, rate-limit violations {json.dumps(s['violations'])},"
                f" throttled answers {s['throttled']}, injected faults {json.dumps(s['faults'])}"
            )
        dead = stack.queue.list_dead_letters(10)
        for message in dead:
            say(
                f"dead-letter queue: {message.body[:40]!r}: {message.attributes.get('DeadLetterReason')}"
            )

    def stop(self) -> None:
        if self.stack is not None:
            stop_stack(self.stack)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    from bulk_changes.domain.spreadsheet import write_rows

    with path.open("w", newline="", encoding="utf-8") as handle:
        write_rows(handle, list(rows[0]), [list(r.values()) for r in rows])


def serve_empty(demo: Demo, stack: Stack) -> int:
    """The stack without sample data: for one's own inventory and requests."""
    demo.start_dagster(stack)
    say(
        "ready: import your devices with `bulk-changes devices import FILE --tenant acme "
        "--simulators`, then `bulk-changes submit`. Ctrl-C to stop."
    )
    try:
        while stack.exited() is None:
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
        stack = demo.start_services()
        if getattr(args, "no_samples", False):
            return serve_empty(demo, stack)
        inventories = demo.import_inventory(stack)
        plan = scenarios(inventories)
        demo.inject_faults(stack, plan)
        demo.start_dagster(stack)
        demo.send(stack, plan)
        ok = demo.watch(stack, plan)
        demo.summary(stack)
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
                while stack.exited() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop()
