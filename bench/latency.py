"""From a message's send to the first vendor call: where the seconds go.

    python -m bench.latency --repeat 10
    python -m bench.latency --repeat 10 --sensor-interval 5 --long-poll 4

The real path with the production settings of the sensor (its interval and long poll, as
``bulk_changes/definitions.py`` reads them) and the embedded instance: a one-device bulk
change is made, then its message sent; the clock starts when the sender sends it and
stops at the first call the simulator sees for that device (the kernel's arrival stamp).
Repeats one after the other, each sent at a random moment of the sensor's interval (a
message does not choose when it comes). Prints the median and p95 and, per repeat, the
moments of the run's events (Dagster's event log) from the send: the run made (the
sensor's tick), dequeued (the run queue), the run worker's process up, ``RUN_START``,
the first batch step.

Also prints the CPU the idle stack used (daemon, code server) over ``--idle-seconds``
before the first message: nothing to do, what does waiting cost?

It never fails on time: it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import TreeSampler, stop_cleanly_on_sigterm
from bench.run_bench import wait_for_sensor
from bulk_changes.defs.settings import default_long_poll
from bulk_changes.demo import demo_iccid

TENANT = "acme"


def _events_since(root: Path, run_id: str, sent_at: float) -> dict[str, float]:
    """Seconds from the send to each of the run's first milestones."""
    from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

    wanted = {
        DagsterEventType.RUN_ENQUEUED: "enqueued (sensor tick made the run)",
        DagsterEventType.RUN_STARTING: "dequeued, launch asked",
        DagsterEventType.RUN_START: "RUN_START (run worker up, code loaded)",
    }
    out: dict[str, float] = {}
    with DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        run = instance.get_run_record_by_id(run_id)
        if run is not None:
            out["run record made"] = round(run.create_timestamp.timestamp() - sent_at, 3)
        for event_type, name in wanted.items():
            records = instance.fetch_run_status_changes(
                EventRecordsFilter(event_type=event_type), limit=50
            ).records
            for record in records:
                if record.run_id == run_id:
                    out[name] = round(record.timestamp - sent_at, 3)
        for entry in instance.all_logs(run_id):
            if entry.dagster_event is None:
                continue
            kind = entry.dagster_event.event_type
            step = entry.dagster_event.step_key or ""
            if kind == DagsterEventType.STEP_START and step.startswith("apply_device_changes"):
                out.setdefault("first batch step started", round(entry.timestamp - sent_at, 3))
            elif kind == DagsterEventType.ENGINE_EVENT and "process" in (entry.message or ""):
                out.setdefault("run worker process says hello", round(entry.timestamp - sent_at, 3))
    return out


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--sensor-interval", default="", help="BULK_CHANGES_SENSOR_INTERVAL (default: the code's)"
    )
    parser.add_argument(
        "--long-poll", default="", help="BULK_CHANGES_SENSOR_LONG_POLL (default: the code's)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--daemon-code-servers",
        dest="code_server",
        action="store_false",
        help="the daemon's own code servers instead of one long-lived `dagster api grpc`",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from bulk_changes.launcher import start_stack, stop_stack
    from bulk_changes.paths import default_instance_yaml

    # the code's own defaults unless asked (loops={}: not the stack's test loops, whose
    # sensor ticks every second and dead run worker check every 2 s)
    overrides = {"BULK_CHANGES_SENSOR_INTERVAL": args.sensor_interval or "5"}
    if args.long_poll:
        overrides["BULK_CHANGES_SENSOR_LONG_POLL"] = args.long_poll
    root = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    stack = start_stack(
        root,
        env_overrides=overrides,
        code_server=args.code_server,
        loops={},
        # the embedded instance as it is (not the tests' shorter run monitoring)
        dagster_yaml=default_instance_yaml().read_text(),
    )
    long_poll = float(
        args.long_poll or default_long_poll(int(stack.env["DAGSTER_GRPC_TIMEOUT_SECONDS"]))
    )
    # a tick listens until long_poll after it began, the next begins at the sensor loop after
    cycle = 5 * math.ceil(long_poll / 5)
    sampler = TreeSampler([p.pid for p in stack.processes[1:]]).start()
    result: dict[str, Any] = {"settings": overrides, "repeats": []}
    try:
        wait_for_sensor(stack)
        time.sleep(5)  # the readiness probe's run-less tick settled
        before = sampler.snapshot()
        time.sleep(args.idle_seconds)
        after = sampler.snapshot()
        idle = sampler.cpu_by_role(before, after)
        result["idle_cpu_percent_of_a_core"] = {
            role: round(100 * seconds / args.idle_seconds, 2) for role, seconds in idle.items()
        }
        rows = [
            {"integration": "jasper", "iccid": demo_iccid(1, n), "status": "ACTIVATED"}
            for n in range(args.repeat)
        ]
        stack.import_devices(TENANT, rows)
        calls_seen = len(stack.sims.jasper.calls())
        rng = random.Random(19)
        for device in rows:
            bulk_id = stack.create(
                TENANT,
                "device_status",
                "jasper",
                [{"iccid": device["iccid"], "status": "DEACTIVATED"}],
            )
            # a random moment of the queue sensor's cycle
            time.sleep(rng.uniform(0, cycle))
            sent_at = time.time()
            stack.queue.send({"bulk_change_id": bulk_id})
            stack.wait_final([bulk_id], timeout=120)
            calls = stack.sims.jasper.calls(calls_seen)
            calls_seen += len(calls)
            mine = [c for c in calls if device["iccid"] in (c.get("path") or "")]
            first_call = min(c["t"] for c in mine) - sent_at if mine else None
            run_ids = [r.dagster_run.run_id for r in _runs_of(root, bulk_id)]
            milestones = _events_since(root, run_ids[0], sent_at) if run_ids else {}
            row = {
                "bulk_change_id": bulk_id,
                "first_vendor_call_s": round(first_call, 3) if first_call is not None else None,
                **milestones,
            }
            result["repeats"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop_stack(stack)
        sampler.stop()
    firsts = [r["first_vendor_call_s"] for r in result["repeats"] if r["first_vendor_call_s"]]
    if firsts:
        result["median_s"] = round(statistics.median(firsts), 3)
        result["p95_s"] = round(_percentile(firsts, 0.95), 3)
        result["max_s"] = round(max(firsts), 3)
    print(
        f"\nmessage sent -> first vendor call, {len(firsts)} repeats"
        f" (sensor interval {overrides['BULK_CHANGES_SENSOR_INTERVAL']} s,"
        f" long poll {long_poll:g} s):"
        f" median {result.get('median_s')} s, p95 {result.get('p95_s')} s, max {result.get('max_s')} s"
    )
    names = [
        k
        for k in (result["repeats"][0] if result["repeats"] else {})
        if k not in ("bulk_change_id", "first_vendor_call_s")
    ]
    for name in names:
        values = [r[name] for r in result["repeats"] if name in r]
        if values:
            print(
                f"   {name:<45} median {statistics.median(values):6.2f} s, max {max(values):6.2f} s"
            )
    print(
        f"idle stack, {args.idle_seconds:g} s, CPU % of one core by process:"
        f" {result['idle_cpu_percent_of_a_core']}"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def _runs_of(root: Path, bulk_id: int) -> list[Any]:
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        return list(
            instance.get_run_records(RunsFilter(tags={"bulk_changes/bulk_change_id": str(bulk_id)}))
        )


if __name__ == "__main__":
    sys.exit(main())
