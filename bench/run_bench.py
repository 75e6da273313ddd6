"""Benchmark: the real path (queue message, sensor, Dagster run, AMOP database) against
the simulators with realistic latency and the documented limits, scaled up uniformly.

    python -m bench.run_bench                       # every scenario, 2,000 devices, scale 10
    python -m bench.run_bench --devices 10000 --scenarios jasper_ucc,unconstrained
    python -m bench.run_bench --smoke               # a few hundred devices, for the test suite
    python -m bench.run_bench --scenarios twenty_accounts --devices 500 --scale 1 --db postgres
    python -m bench.run_bench --scenarios many_accounts --accounts 60 --devices 500 --scale 1

The stack runs with the code's own loops, as the demo, the embedded default and
production run it: the queue sensor long-polls 58.5 s of each minute, the housekeeping
sensors tick every 60 s (dead run workers every 30 s), the instance file is the embedded
``bulk_changes/defaults/dagster.yaml`` (or ``deploy/dagster.yaml`` with ``--db
postgres``) as it is but for a run queue that lets every bulk change of the scenario run
at once. ``--quick-loops`` runs the tests' loops instead (``QUICK_LOOPS``: short long
poll, dead run workers every 2 s, short retry delays; the sensor every 5 s) and the tests'
instance (run monitoring every 5 s): what this benchmark ran before 2026-12-06 09:00 UTC.

``--db postgres``: the AMOP database and Dagster's storage on the local PostgreSQL (new
databases, dropped afterwards), the instance of deploy/dagster.yaml (its storage section),
with a run queue and a batch pool that let every bulk change of the scenario run at once;
the connections at peak and the server's CPU are printed beside the project's.

The code location is served by one long-lived ``dagster api grpc`` process, as in
production and under ``dagster dev``; ``--daemon-code-servers`` measures a bare
``dagster-daemon run`` with a python_module workspace instead, whose code servers the
daemon replaces every minute.

Prints a table per scenario and the whole result as JSON; writes a PNG per scenario.
It never fails on time: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import host_caches
from bench.measure import (
    HostPauses,
    TreeSampler,
    account_figures,
    peak_memory_of,
    per_second_series,
    plot,
    stop_cleanly_on_sigterm,
)
from bench.scenarios import BASE_LATENCY_MS, BASE_LIMITS, Scenario, scenarios
from bulk_changes.demo import demo_iccid, demo_msisdn
from bulk_changes.launcher import start_stack, stop_stack
from bulk_changes.launcher.instance import DEPLOY, embedded_instance, production_instance
from bulk_changes.launcher.stack import QUICK_LOOPS
from bulk_changes.paths import default_instance_yaml
from bulk_changes.simulators import freeze_host_objects
from bulk_changes.simulators.limits import Limits, crowded_windows

SYSTEMS = ("jasper", "telegence", "revio")


def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the project writes them in UTC
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def account_name(system: str, tenant: str, scenario: Scenario) -> str:
    return f"{system}-{'shared' if scenario.shared_accounts else tenant}"


def login(system: str, account: str) -> str:
    return {"jasper": account, "telegence": f"app-{account}", "revio": f"{account}@bench"}[system]


def credentials(scenario: Scenario) -> dict[str, dict[str, Any]]:
    accounts = {account_name(s, t, scenario) for s in SYSTEMS for t in scenario.tenants}
    creds: dict[str, dict[str, Any]] = {"jasper": {}, "telegence": {}, "revio": {}}
    for account in accounts:
        system = account.split("-", 1)[0]
        key = login(system, account)
        creds[system][key] = ("pw", "sub") if system == "revio" else "key"
    return creds


def limits(system: str, scale: float, scenario: Scenario) -> tuple[float, float, int]:
    calls, window, in_flight = BASE_LIMITS[system]
    if not scenario.constrained:
        return 100_000.0, 1.0, 64
    return calls * scale, window, in_flight


def tenants_file(scenario: Scenario, scale: float):
    def build(sims: Any) -> dict[str, Any]:
        urls = {"jasper": sims.jasper_url, "telegence": sims.telegence_url, "revio": sims.revio_url}
        accounts: dict[str, Any] = {}
        for tenant in scenario.tenants:
            for system in SYSTEMS:
                name = account_name(system, tenant, scenario)
                calls, window, in_flight = limits(system, scale, scenario)
                spec: dict[str, Any] = {
                    "system": system,
                    "base_url": urls[system],
                    # the budget as the vendor states it, so the limiter knows its window
                    **(
                        {"calls_per_minute": calls}
                        if window == 60
                        else {"calls_per_second": calls / window}
                    ),
                    "max_in_flight": in_flight,
                    "timeout_seconds": 10,
                }
                user = login(system, name)
                if system == "jasper":
                    spec.update(username=user, api_key="key")
                elif system == "telegence":
                    spec.update(app_id=user, app_secret="key", activation_poll_seconds=0.1)
                else:
                    spec.update(
                        username=name, client_code="bench", password="pw", subscription_key="sub"
                    )
                accounts[name] = spec
        return {
            "accounts": accounts,
            "tenants": [
                {
                    "id": tenant,
                    "accounts": {s: account_name(s, tenant, scenario) for s in SYSTEMS},
                    "rate_plan_billing": {"IOT_1GB": 101, "SOC1GB": 201, "SOC5GB": 205},
                }
                for tenant in scenario.tenants
            ],
        }

    return build


def configure(scenario: Scenario, scale: float):
    def setup(sims: Any) -> None:
        for system, sim in zip(SYSTEMS, sims.all(), strict=True):
            if not scenario.constrained:
                sim.configure(enforce_limits=False, latency_ms=0)
                continue
            calls, window, in_flight = limits(system, scale, scenario)
            per_account = {
                login(system, account_name(system, t, scenario)): {
                    "rate_limit": int(calls),
                    "rate_window_seconds": window,
                    "max_in_flight": in_flight,
                }
                for t in scenario.tenants
            }
            sim.configure(
                latency_ms=BASE_LATENCY_MS[system] / scale,
                latency_jitter_ms=BASE_LATENCY_MS[system] / scale / 3,
                arrival_jitter_ms=scenario.arrival_jitter_ms / scale,
                account_limits=per_account,
            )

    return setup


def inventory(tenant_index: int, integration: str, count: int, offset: int) -> list[dict[str, str]]:
    rows = []
    for n in range(offset, offset + count):
        rows.append(
            {
                "integration": integration,
                "iccid": demo_iccid(tenant_index, n),
                "msisdn": demo_msisdn(tenant_index, n) if integration == "telegence" else "",
                "status": "ACTIVATED" if integration == "jasper" else "A",
                "rate_plan": "IOT_1GB" if integration == "jasper" else "SOC1GB",
                "revio_service_id": str(1_000_000 * tenant_index + n),
            }
        )
    return rows


def request_rows(
    change_type: str, integration: str, devices: list[dict[str, str]]
) -> list[dict[str, str]]:
    key = "iccid" if integration == "jasper" else "msisdn"
    change = {
        "username_cost_center": {"username": "bench-user", "cost_center_1": "BENCH"},
        "device_status": {"status": "DEACTIVATED" if integration == "jasper" else "S"},
        "carrier_rate_plan": {"rate_plan": "SOC5GB" if integration == "telegence" else "IOT_1GB"},
    }[change_type]
    return [{key: d[key], **change} for d in devices]


def wait_for_sensor(stack: Any, timeout: float = 180.0) -> None:
    """Start the clock once the daemon's sensor answers: a message naming no bulk change
    reaches the dead-letter queue only through a sensor tick."""
    stack.queue.send({"bulk_change_id": 999_999_999})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if stack.queue.list_dead_letters(1):
            return
        time.sleep(0.5)
    raise RuntimeError("the queue sensor did not tick")


# batch steps of one run at once (the threaded executor's default max_concurrent)
STEPS_PER_RUN = 2


def instance_for(
    backend: str, runs: int, quick_loops: bool = False
) -> tuple[str, dict[str, int] | None]:
    """The Dagster instance (YAML) and pool limits that let ``runs`` runs work at once:
    the run queue's limit and the batch pool (each run holds up to two batch steps).

    The instance file as it is (the embedded default's, or deploy/dagster.yaml on
    PostgreSQL) but for those limits; with ``quick_loops`` the tests' instance (run
    monitoring every 5 s; on PostgreSQL the run queue every second)."""
    import yaml

    if backend == "postgres":
        config = (
            production_instance()
            if quick_loops
            else yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
        )
        limits = config["concurrency"]["runs"]
        limits["max_concurrent_runs"] = max(limits["max_concurrent_runs"], runs)
        return yaml.safe_dump(config), {"bulk_changes_devices": max(6, STEPS_PER_RUN * runs)}
    config = (
        embedded_instance() if quick_loops else yaml.safe_load(default_instance_yaml().read_text())
    )
    coordinator = config["run_coordinator"]["config"]
    coordinator["max_concurrent_runs"] = max(coordinator["max_concurrent_runs"], runs)
    return yaml.safe_dump(config), None


def loop_settings(quick_loops: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(loops, overrides) for ``start_stack``: the code's own (no variables) or the tests'
    loops with the sensor every 5 s, as this benchmark ran them before."""
    if quick_loops:
        return dict(QUICK_LOOPS), {"BULK_CHANGES_SENSOR_INTERVAL": "5"}
    return {}, {}


def loops_label(quick_loops: bool) -> str:
    if quick_loops:
        return "quick (the tests' loops, sensor every 5 s; the tests' instance)"
    return (
        "the code's own (queue sensor long-polls 58.5 s a minute, housekeeping sensors every"
        " 60 s, dead run workers 30 s; the instance file as it is)"
    )


def run_scenario(
    scenario: Scenario,
    scale: float,
    out_dir: Path,
    batch_size: int,
    py_spy: bool = False,
    code_server: bool = False,
    backend: str = "sqlite",
    pool_size: int | None = None,
    quick_loops: bool = False,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{scenario.name}-"))
    dagster_yaml, pool_limits = instance_for(backend, len(scenario.sends), quick_loops)
    loops, loop_overrides = loop_settings(quick_loops)
    stack = start_stack(
        root,
        tenants=tenants_file(scenario, scale),
        credentials=credentials(scenario),
        configure_sims=configure(scenario, scale),
        env_overrides={
            **loop_overrides,
            "BULK_CHANGES_BATCH_SIZE": str(batch_size),
            **({"BULK_CHANGES_DB_POOL_SIZE": str(pool_size)} if pool_size else {}),
        },
        code_server=code_server,
        backend="postgresql" if backend == "postgres" else "sqlite",
        dagster_yaml=dagster_yaml,
        pool_limits=pool_limits,
        loops=loops,
    )
    # this process reads the instance too (collect): its storage's variables
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("DAGSTER_PG_")})
    sampler = TreeSampler([p.pid for p in stack.processes[1:]]).start()
    pg_sampler = None
    profiler = None
    host_pauses = HostPauses()
    try:
        if py_spy:
            from bench.pyspy import RunWorkerProfiler

            profiler = RunWorkerProfiler(sampler, out_dir / f"py-spy-{scenario.name}").start()
        wait_for_sensor(stack)
        offsets: dict[tuple[str, str], int] = {}
        planned = []
        for send in scenario.sends:
            index = scenario.tenants.index(send.tenant) + 1
            start = offsets.get((send.tenant, send.integration), 0)
            rows = inventory(index, send.integration, send.devices, start)
            offsets[(send.tenant, send.integration)] = start + send.devices
            # a Rev.io account lists only its own services, as a tenant's would
            revio_login = login("revio", account_name("revio", send.tenant, scenario))
            stack.import_devices(send.tenant, rows, revio_account=revio_login)
            planned.append((send, request_rows(send.change_type, send.integration, rows)))
        calls_before = {
            s: len(sim.calls()) for s, sim in zip(SYSTEMS, stack.sims.all(), strict=True)
        }
        # The bulk changes are made first, as the portal makes them before it sends their
        # messages: the clock starts at the first message (makespan: message -> final).
        created = []
        for send, rows in planned:
            made = time.time()
            bulk_id = stack.create(send.tenant, send.change_type, send.integration, rows)
            created.append((send, bulk_id, round(time.time() - made, 1)))
        intake = {bulk_id: seconds for _, bulk_id, seconds in created}
        freeze_host_objects()  # this process hosts the simulators: see the function
        host_pauses.start()
        load_at_first = os.getloadavg()
        if backend == "postgres":
            from bench.pg_sampler import PgSampler
            from bulk_changes.launcher.postgres import PG_ADMIN_URL

            databases = [stack.amop_database, stack.dagster_database]
            pg_sampler = PgSampler(PG_ADMIN_URL, [d for d in databases if d]).start()
        first = time.time()
        cpu_at_first = sampler.snapshot()
        sent: dict[int, tuple[Any, float]] = {}
        for send, bulk_id, _ in sorted(created, key=lambda c: c[0].after_seconds):
            while time.time() < first + send.after_seconds:
                time.sleep(0.2)
            sent_at = time.time()
            stack.queue.send({"bulk_change_id": bulk_id})
            sent[bulk_id] = (send, sent_at)
        stack.wait_final(list(sent), timeout=6 * 3600)
        finished = time.time()
        cpu_at_final = sampler.snapshot()
        load_at_final = os.getloadavg()
        database = pg_sampler.stop() if pg_sampler is not None else None
        pg_sampler = None
        result = collect(stack, scenario, scale, sent, first, finished, calls_before, root)
        result["backend"] = backend
        result["loops"] = loops_label(quick_loops)
        result["loop_variables"] = {**loops, **loop_overrides}
        result["load_average"] = {
            "at_first_message": [round(x, 2) for x in load_at_first],
            "at_last_final": [round(x, 2) for x in load_at_final],
        }
        if database is not None:
            result["postgres"] = database
        for row in result["bulk_changes"]:
            row["intake_before_message_s"] = intake[row["bulk_change_id"]]
    finally:
        host_pauses.stop()
        if pg_sampler is not None:
            pg_sampler.stop()
        stop_stack(stack)
        sampler.stop()
        if profiler is not None:
            from bench.pyspy import summarize

            profile = summarize(profiler.stop())
    if profiler is not None:
        result["py_spy"] = profile
    devices = sum(s.devices for s, _ in sent.values())
    # CPU from the first message to the last bulk change final: what the bulk changes cost
    # a running system (the daemon's and code server's start-up are not in it)
    by_role = sampler.cpu_by_role(cpu_at_first, cpu_at_final)
    window_cpu = sum(by_role.values())
    result["cpu_seconds_total"] = round(window_cpu, 1)
    result["cpu_seconds_by_process"] = by_role
    result["cpu_seconds_per_1000_devices_by_process"] = {
        role: round(seconds / devices * 1000, 2) for role, seconds in by_role.items()
    }
    result["cpu_seconds_per_1000_devices"] = round(window_cpu / devices * 1000, 2)
    result["cpu_seconds_with_startup"] = round(sampler.cpu_seconds, 1)
    result["peak_memory_mb"] = round(sampler.peak_rss / 2**20, 1)
    result["simulator_host_full_collections"] = host_pauses.figures()
    memory = peak_memory_of(sampler)
    result["peak_memory_mb_by_process"] = memory.by_kind_mb
    result["peak_memory_mb_per_run_worker"] = memory.run_workers_mb
    if "postgres" in result:
        result["postgres"]["server_cpu_seconds_per_1000_devices"] = round(
            result["postgres"]["server_cpu_seconds"] / devices * 1000, 2
        )
    png = out_dir / f"{scenario.name}.png"
    plot(png, f"{scenario.name} (scale {scale:g})", result.pop("_series"))
    result["plot"] = str(png)
    return result


def collect(stack, scenario, scale, sent, first, finished, calls_before, root) -> dict[str, Any]:
    from dagster import DagsterInstance, RunsFilter

    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    repo = stack.repo
    run_records = wait_runs_ended(instance, list(sent))
    bulk_rows = []
    for bulk_id, (send, sent_at) in sent.items():
        bulk = repo.get_bulk_change(bulk_id)
        records = instance.get_run_records(
            RunsFilter(tags={"bulk_changes/bulk_change_id": str(bulk_id)})
        )
        starts = [r.start_time for r in records if r.start_time]
        bulk_rows.append(
            {
                "bulk_change_id": bulk_id,
                "label": send.label or f"{send.tenant} {send.change_type}/{send.integration}",
                "devices": send.devices,
                "status": bulk.status,
                "counts": repo.counts(bulk_id),
                "makespan_s": round(bulk.finished_at.timestamp() - sent_at, 1)
                if bulk.finished_at
                else None,
                "message_to_run_start_s": round(min(starts) - sent_at, 1) if starts else None,
                "retries": sum(o.get("retry", 0) for o in repo.audit_summary(bulk_id).values()),
                "runs": [r.dagster_run.status.value for r in records],
            }
        )
    # Until the last bulk change's own final moment, not until this poller noticed it
    ends = [b.finished_at.timestamp() for b in map(repo.get_bulk_change, sent) if b.finished_at]
    makespan = (max(ends) if len(ends) == len(sent) else finished) - first
    devices = sum(s.devices for s, _ in sent.values())
    accounts: dict[str, Any] = {}
    series: dict[str, tuple[dict[int, int], float]] = {}
    per_device: dict[str, float] = {}
    for system, sim in zip(SYSTEMS, stack.sims.all(), strict=True):
        calls = sim.calls(calls_before[system])
        dump = os.environ.get("BENCH_DUMP_CALLS")  # a directory: each system's call log
        if dump:
            Path(dump).mkdir(parents=True, exist_ok=True)
            (Path(dump) / f"{scenario.name}-{system}.json").write_text(
                json.dumps([{k: v for k, v in c.items() if k != "body"} for c in calls])
            )
        per_device[system] = round(len(calls) / devices, 3)
        by_account: dict[str, list[dict[str, Any]]] = {}
        for call in calls:
            by_account.setdefault(call.get("account") or "?", []).append(call)
        for account, account_calls in by_account.items():
            calls_limit, window, _ = limits(system, scale, scenario)
            limit = calls_limit / window
            accounts[f"{system}:{account}"] = account_figures(account_calls, limit, makespan)
            # a rate violation's shape (the first few), to tell late arrivals from turns
            # handed out too close together
            crowded = crowded_windows(
                [c["t"] for c in account_calls], Limits(int(calls_limit), window, None)
            )
            if crowded:
                accounts[f"{system}:{account}"]["crowded_windows"] = crowded[:5]
            series[f"{system}:{account}"] = (per_second_series(account_calls, first), limit)
    violations = {
        s: sim.stats()["violations"] for s, sim in zip(SYSTEMS, stack.sims.all(), strict=True)
    }
    carriers = [
        a["utilization_while_calling"] for name, a in accounts.items() if name.startswith("jasper")
    ]
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "scale": scale,
        "devices": devices,
        "makespan_s": round(makespan, 1),
        "all_final": all(b["status"] in FINAL for b in bulk_rows),
        "runs_by_status": dict(Counter(r.dagster_run.status.value for r in run_records)),
        "most_runs_at_once": most_at_once(run_records),
        "least_jasper_utilization_while_calling": min(
            (u for u in carriers if u is not None), default=None
        ),
        "bulk_changes": bulk_rows,
        "accounts": accounts,
        "calls_per_device": per_device,
        "throttled": sum(a["throttled"] for a in accounts.values()),
        "violations": violations,
        "_series": series,
    }


FINAL = {"PROCESSED", "PROCESSED_WITH_ERRORS", "CANCELLED"}


def wait_runs_ended(instance: Any, bulk_ids: list[int], timeout: float = 180.0) -> list[Any]:
    """The runs of the bulk changes, once each has ended (a bulk change is final before its
    run's notifications and end)."""
    from dagster import RunsFilter

    deadline = time.time() + timeout
    while True:
        records = [
            r
            for bulk_id in bulk_ids
            for r in instance.get_run_records(
                RunsFilter(tags={"bulk_changes/bulk_change_id": str(bulk_id)})
            )
        ]
        if all(r.dagster_run.is_finished for r in records) or time.time() > deadline:
            return records
        time.sleep(1)


def most_at_once(records: list[Any]) -> int:
    """The most runs that were running at the same moment (start to end)."""
    edges = []
    for r in records:
        if r.start_time:
            edges.append((r.start_time, 1))
            edges.append((r.end_time or time.time(), -1))
    running = most = 0
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most


BASELINE_SCENARIOS = {"jasper_ucc", "jasper_status", "telegence_rate_plan", "unconstrained"}


def run_baseline(
    scenario: Scenario, scale: float, most: int | None = None
) -> dict[str, Any] | None:
    """The prior system's strategy against the same simulators, budgets and devices."""
    import resource
    import subprocess

    from bulk_changes.simulators import seed_from_inventory_rows, start_simulators

    if scenario.name not in BASELINE_SCENARIOS:
        return None
    (send,) = scenario.sends
    sims = start_simulators(credentials=credentials(scenario))
    try:
        configure(scenario, scale)(sims)
        # the prior strategy is one device at a time: --baseline-devices caps it, and its
        # figures are compared per device
        devices = min(send.devices, most) if most else send.devices
        rows = inventory(1, send.integration, devices, 0)
        seed_from_inventory_rows(sims, rows)
        config = tenants_file(scenario, scale)(sims)
        request = request_rows(send.change_type, send.integration, rows[:1])[0]
        spec = {
            "accounts": config["accounts"],
            "carrier_account": account_name(send.integration, send.tenant, scenario),
            "revio_account": account_name("revio", send.tenant, scenario),
            "change_type": send.change_type,
            "request": {k: v for k, v in request.items() if k not in ("iccid", "msisdn")},
            "devices": rows,
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [sys.executable, "-m", "bench.baseline_prior"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=6 * 3600,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            return {"error": done.stderr[-2000:]}
        figures = json.loads(done.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        makespan = figures["makespan_s"] or 1e-9
        accounts = {}
        for system, sim in zip(SYSTEMS, sims.all(), strict=True):
            calls = sim.calls()
            if calls:
                calls_limit, window, _ = limits(system, scale, scenario)
                accounts[system] = account_figures(calls, calls_limit / window, makespan)
        figures.update(
            devices=devices,
            cpu_seconds_per_1000_devices=round(cpu / devices * 1000, 2),
            calls_per_device={s: round(a["calls"] / devices, 3) for s, a in accounts.items()},
            accounts=accounts,
            violations={
                s: sim.stats()["violations"] for s, sim in zip(SYSTEMS, sims.all(), strict=True)
            },
        )
        return figures
    finally:
        sims.stop()


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n== {result['scenario']}: {result['description']} (scale {result['scale']:g};"
        f" code server: {result.get('code_server', '?')})"
    )
    print(f"   loops: {result.get('loops', '?')}")
    print(
        f"   makespan {result['makespan_s']} s, {result['devices']} devices, throttled {result['throttled']},"
        f" CPU {result['cpu_seconds_per_1000_devices']} s/1000 devices, peak memory {result['peak_memory_mb']} MB"
    )
    print(
        f"   {'account':<28}{'calls':>8}{'limit/s':>9}{'util':>7}{'latency':>9}{'1-in-flight bound':>19}"
        f"{'idle gaps':>17}"
    )
    for name, a in sorted(result["accounts"].items()):
        print(
            f"   {name:<28}{a['calls']:>8}{a['limit_per_second']:>9}{a['utilization']:>7}"
            f"{a['mean_latency_ms']:>8}ms{a['one_in_flight_bound_s']:>18}s"
            f"{a['idle_gaps']:>7} / {a['idle_gap_seconds']:>6}s"
        )
        for w in a.get("crowded_windows", []):
            print(
                f"   {'':<28}crowded: call {w['call']} ({w['seconds_in']} s in) {w['span_s']} s"
                f" after the call a limit's worth before it; gaps ms {w['gaps_ms']}"
            )
        if a.get("answer_to_next_call_ms"):
            h = a["answer_to_next_call_ms"]
            print(
                f"   {'':<28}utilization first call -> last: {a['utilization_while_calling']};"
                f" late answer -> next call start: p50 {h['p50']} ms, p90 {h['p90']} ms"
            )
    print(f"   CPU seconds by process (message -> final): {result['cpu_seconds_by_process']}")
    print(
        "   CPU seconds per 1,000 devices by process:"
        f" {result.get('cpu_seconds_per_1000_devices_by_process')}"
    )
    if "backend" in result:
        print(
            f"   backend {result['backend']}; load average (1, 5, 15 min) at the first message"
            f" {result['load_average']['at_first_message']}, at the last final"
            f" {result['load_average']['at_last_final']} ({os.cpu_count()} cores)"
        )
        print(
            f"   all final: {result['all_final']}; runs {result['runs_by_status']}, at most"
            f" {result['most_runs_at_once']} at once; least Jasper utilization first call -> last:"
            f" {result['least_jasper_utilization_while_calling']}"
        )
    if "postgres" in result:
        pg = result["postgres"]
        print(
            f"   PostgreSQL: {pg['peak_connections']} connections at peak"
            f" {pg['peak_connections_by_application']}, idle in transaction at most"
            f" {pg['peak_idle_in_transaction']}, longest transaction seen"
            f" {pg['longest_transaction_seen_s']} s; server CPU {pg['server_cpu_seconds']} s"
            f" ({pg['server_cpu_seconds_per_1000_devices']} s/1000 devices, whole server)"
        )
        for name, figures in pg["databases"].items():
            print(f"     {name}: {figures}")
    print(f"   peak memory MB of one process, by kind: {result['peak_memory_mb_by_process']}")
    print(f"   peak memory MB of each run worker: {result.get('peak_memory_mb_per_run_worker')}")
    print(f"   calls per device: {result['calls_per_device']}")
    if "simulator_host_full_collections" in result:
        print(
            "   the simulators' host, full collections while calls came in:"
            f" {result['simulator_host_full_collections']}"
        )
    for b in result["bulk_changes"]:
        print(
            f"   bulk {b['bulk_change_id']} {b['label']}: {b['status']} {b['counts']} makespan {b['makespan_s']} s,"
            f" message->run start {b['message_to_run_start_s']} s, retries {b['retries']}"
            f" (made before its message in {b.get('intake_before_message_s')} s)"
        )
    base = result.get("baseline")
    if base and "error" not in base:
        # seconds per device, theirs over ours (the baseline may have run fewer devices)
        ours = result["makespan_s"] / result["devices"]
        theirs = base["makespan_s"] / base.get("devices", result["devices"])
        ratio = theirs / ours if ours else 0
        print(
            f"   prior system's strategy on {base.get('devices', result['devices'])} devices:"
            f" makespan {base['makespan_s']} s ({ratio:.2f}x our time per device),"
            f" processed {base['processed']}, failed {base['failed']}, throttled answers {base['throttled']},"
            f" calls/device {base['calls_per_device']}, CPU {base['cpu_seconds_per_1000_devices']} s/1000"
        )
    elif base:
        print(f"   prior system's strategy failed to run: {base['error'][-300:]}")
    if "py_spy" in result:
        profile = result["py_spy"]
        print(f"   py-spy, run workers ({profile['samples']} busy samples), inclusive share:")
        for name, share in list(profile["inclusive"].items())[:25]:
            print(f"     {share:>6.1%}  {name}")
    print(f"   plot: {result['plot']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--memory-devices", type=int, default=20000)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--quick-loops",
        action="store_true",
        help="the tests' loops (QUICK_LOOPS, sensor every 5 s) and the tests' instance, as"
        " this benchmark ran before 2026-12-06 09:00 UTC; by default the code's own loops and"
        " the instance file as it is (what the demo, the embedded default and production run)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=60,
        help="how many tenants, each with its own accounts, the many_accounts scenario has",
    )
    parser.add_argument("--smoke", action="store_true", help="a few hundred devices, two scenarios")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the prior system's strategy"
    )
    parser.add_argument(
        "--baseline-devices",
        type=int,
        default=0,
        help="run the prior system's strategy on at most this many devices (0: all)",
    )
    parser.add_argument(
        "--daemon-code-servers",
        dest="code_server",
        action="store_false",
        help="load the code location the way a bare `dagster-daemon run -w workspace.yaml`"
        " with a python_module location does: code servers of the daemon's own, replaced"
        " every minute (each new one imports the project again). By default the code is"
        " served by one long-lived `dagster api grpc` process, as in production and under"
        " `dagster dev`",
    )
    # the default since 2026-11-30; kept so that earlier commands still run
    parser.add_argument(
        "--code-server", dest="code_server", action="store_true", help=argparse.SUPPRESS
    )
    parser.set_defaults(code_server=True)
    parser.add_argument(
        "--py-spy", action="store_true", help="sample the run workers with py-spy (installed)"
    )
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the AMOP database and Dagster's storage: SQLite files (the embedded default) or"
        " new databases on the local PostgreSQL (deploy/dagster.yaml's storage)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="connections per process to the AMOP database (0: the default, AmopDatabase.pool_size)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.devices, args.scale = 200, 20.0
        args.scenarios = args.scenarios or "jasper_ucc"
    chosen = scenarios(args.devices, args.memory_devices, args.accounts)
    # every scenario but the two largest host-ceiling ones (name them to run them)
    names = [n for n in args.scenarios.split(",") if n] or [
        n for n in chosen if n not in ("eighty_accounts", "many_accounts")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    # before the stack starts: how much dearer this host makes work that follows a wait
    caches = host_caches.after_wait()
    print(
        f"bench.run_bench: loops {loops_label(args.quick_loops)}; --db {args.db};"
        f" --scale {args.scale:g}; load average {[round(x, 2) for x in os.getloadavg()]}"
        f" ({os.cpu_count()} cores); host caches: {host_caches.label(caches)}",
        flush=True,
    )
    results = []
    for name in names:
        result = run_scenario(
            chosen[name],
            args.scale,
            args.out,
            args.batch_size,
            args.py_spy,
            args.code_server,
            backend=args.db,
            pool_size=args.pool_size or None,
            quick_loops=args.quick_loops,
        )
        result["host_caches"] = caches
        result["code_server"] = (
            "long-lived" if args.code_server else "the daemon's, replaced every minute"
        )
        if not args.no_baseline:
            result["baseline"] = run_baseline(chosen[name], args.scale, args.baseline_devices)
        print_table(result)
        results.append(result)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
