"""Profile one bulk change in process against unconstrained simulators (no latency, no
limits): where the project's own time goes.

    python -m bench.profile_inprocess --devices 2000 [--change-type device_status] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--change-type", default="device_status")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    from bulk_changes.demo import make_inventory
    from bulk_changes.launcher.tenants import simulator_tenants
    from bulk_changes.simulators import seed_from_inventory_rows, start_simulators

    sims = start_simulators()
    for sim in sims.all():
        sim.configure(enforce_limits=False, latency_ms=0)
    root = Path(tempfile.mkdtemp(prefix="profile-"))
    config = simulator_tenants(sims)
    for account in config["accounts"].values():
        account.pop("calls_per_minute", None)
        account.update(calls_per_second=100_000, max_in_flight=args.in_flight)
    (root / "tenants.yaml").write_text(yaml.safe_dump(config))
    os.environ["BULK_CHANGES_TENANTS"] = str(root / "tenants.yaml")

    from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
    from bulk_changes.jobs import process_bulk_change
    from bulk_changes.resources.amop_db import AmopDatabase
    from bulk_changes.resources.tenant_config import TenantConfig, load_settings

    db = AmopDatabase(url=f"sqlite:///{root / 'amop.sqlite'}")
    rows = [r for r in make_inventory(1, args.devices * 2) if r["integration"] == "jasper"]
    repo = db.repository()
    repo.upsert_devices("acme", inventory_rows(rows, "profile"))
    seed_from_inventory_rows(sims, rows)
    change = {
        "device_status": {"status": "DEACTIVATED"},
        "username_cost_center": {"username": "p", "cost_center_1": "C"},
    }
    result = submit_bulk_change(
        repo,
        load_settings(),
        SubmitRequest(
            "acme",
            args.change_type,
            "jasper",
            [{"iccid": r["iccid"], **change[args.change_type]} for r in rows],
        ),
    )
    from dagster import EnvVar

    from bulk_changes.environments import instance, local_leaves, wire

    leaves = {**local_leaves(instance, EnvVar), "amop_db": db, "tenant_config": TenantConfig()}
    resources = wire(leaves)
    run_config = {"ops": {"load_device_changes": {"config": {"bulk_change_id": result.id}}}}
    profiler = cProfile.Profile()
    started, cpu = time.perf_counter(), time.process_time()
    profiler.enable()
    outcome = process_bulk_change.execute_in_process(run_config=run_config, resources=resources)
    profiler.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    sims.stop()
    print(
        f"success={outcome.success} devices={len(rows)} wall={wall:.1f}s cpu={cpu:.1f}s "
        f"({cpu / len(rows) * 1000:.2f} CPU-s per 1000 devices, simulators included)"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
