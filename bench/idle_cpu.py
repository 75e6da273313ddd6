"""What the stack costs while no message comes: CPU % of one core by process and thread.

    flock /work/bench.lock python -m bench.idle_cpu --seconds 120
    flock /work/bench.lock python -m bench.idle_cpu --seconds 120 --py-spy /tmp/idle-spy
    flock /work/bench.lock python -m bench.idle_cpu --backend postgresql

Starts the stack as production runs it on one host (the long-lived code server, the
embedded instance or, with ``--backend postgresql``, deploy/dagster.yaml; the sensors'
intervals as the code sets them: no test loops), waits until the queue sensor has ticked
once and the stack has settled, then measures ``--seconds`` with nothing on the queue:
CPU seconds of the daemon, the code server (with its fork server) as % of one core, and of
each of their threads (``/proc/PID/task``). Python 3.11 does not name its threads for the
kernel: a ``py-spy dump`` at the end names each thread by its Python name (the daemon's
loops are threads named SENSOR, BACKFILL, QUEUED_RUN_COORDINATOR, ...).

``--py-spy DIR`` also records both processes with py-spy for the window and prints the
functions that took most of the samples (py-spy: ``pip install py-spy``).

Prints the load average at the start and the end: on a shared machine, say it beside the
figures. It never fails on a figure: it measures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure import TICKS, TreeSampler, stop_cleanly_on_sigterm
from bench.run_bench import wait_for_sensor

SETTLE_SECONDS = 10.0


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by kernel thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by kernel thread id (``py-spy dump``), {} without py-spy."""
    if shutil.which("py-spy") is None:
        return {}
    try:
        dump = subprocess.run(
            ["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    # Thread 12345 (idle): "SENSOR"   (py-spy prints the OS thread id where it knows it)
    for match in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]*)"', dump, re.M):
        ident, name = match.groups()
        if not ident.startswith("0x"):
            names[int(ident)] = name
    return names


def top_functions(raw_file: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Inclusive share of the samples of each function in a py-spy raw recording."""
    total = 0
    inclusive: Counter[str] = Counter()
    if not raw_file.exists():
        return []
    for line in raw_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    if not total:
        return []
    return [(frame, round(n / total, 3)) for frame, n in inclusive.most_common(limit)]


def main(argv: list[str] | None = None) -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--daemon-code-servers",
        dest="code_server",
        action="store_false",
        help="the daemon's own code servers instead of one long-lived code server",
    )
    parser.add_argument("--py-spy", type=Path, default=None, help="record both into this folder")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from bulk_changes.launcher import start_stack, stop_stack
    from bulk_changes.launcher.instance import DEPLOY
    from bulk_changes.paths import default_instance_yaml

    root = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    # loops={}: the sensors' intervals and the retries as the code sets them; the instance
    # file as it is (not the tests' shorter run monitoring)
    instance_file = default_instance_yaml() if args.backend == "sqlite" else DEPLOY / "dagster.yaml"
    stack = start_stack(
        root,
        code_server=args.code_server,
        backend=args.backend,
        loops={},
        dagster_yaml=instance_file.read_text(),
    )
    sampler = TreeSampler([p.pid for p in stack.processes[1:]]).start()
    result: dict[str, Any] = {"seconds": args.seconds, "backend": args.backend}
    recorders: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_sensor(stack)
        time.sleep(SETTLE_SECONDS)
        sampler.sample()
        pids = {
            role: [pid for pid, r in sampler.role_by_pid.items() if r == role]
            for role in ("daemon", "code server", "fork server")
        }
        watched = [pid for group in pids.values() for pid in group]
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            for role in ("daemon", "code server"):
                for pid in pids[role]:
                    recorders.append(
                        subprocess.Popen(
                            [
                                "py-spy",
                                "record",
                                "--pid",
                                str(pid),
                                "--format",
                                "raw",
                                "--rate",
                                "100",
                                "--threads",
                                "--nonblocking",
                                "--duration",
                                str(int(args.seconds)),
                                "-o",
                                str(args.py_spy / f"{role.replace(' ', '_')}-{pid}.txt"),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
        result["load_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
        threads_before = {pid: thread_cpu(pid) for pid in watched}
        before = sampler.snapshot()
        time.sleep(args.seconds)
        after = sampler.snapshot()
        threads_after = {pid: thread_cpu(pid) for pid in watched}
        result["load_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        for recorder in recorders:
            recorder.wait(60)
        idle = sampler.cpu_by_role(before, after)
        result["cpu_percent_of_a_core"] = {
            role: round(100 * seconds / args.seconds, 2) for role, seconds in idle.items()
        }
        by_thread: dict[str, dict[str, float]] = {}
        for role, group in pids.items():
            for pid in group:
                names = thread_names(pid)
                rows: dict[str, float] = {}
                for tid, cpu in threads_after[pid].items():
                    used = cpu - threads_before[pid].get(tid, 0.0)
                    if used <= 0:
                        continue
                    name = f"{names.get(tid, 'thread')} ({tid})"
                    rows[name] = round(100 * used / args.seconds, 2)
                by_thread[f"{role} {pid}"] = dict(sorted(rows.items(), key=lambda kv: -kv[1]))
        result["threads_percent_of_a_core"] = by_thread
    finally:
        for recorder in recorders:
            if recorder.poll() is None:
                recorder.terminate()
        stop_stack(stack)
        sampler.stop()
    print(
        f"idle stack ({args.backend}, {'long-lived code server' if args.code_server else 'daemon code servers'}),"
        f" {args.seconds:g} s with no message; load {' '.join(result['load_at_start'])}"
        f" -> {' '.join(result['load_at_end'])}"
    )
    print("CPU % of one core by process:")
    for role, percent in result["cpu_percent_of_a_core"].items():
        print(f"   {role:<14} {percent:6.2f} %")
    total = sum(
        v for k, v in result["cpu_percent_of_a_core"].items() if k in ("daemon", "code server")
    )
    print(f"   {'daemon + code server':<14} {total:6.2f} %")
    for process, rows in result["threads_percent_of_a_core"].items():
        print(f"{process}, by thread:")
        for name, percent in rows.items():
            print(f"   {name:<50} {percent:6.2f} %")
    if args.py_spy:
        for raw in sorted(args.py_spy.glob("*.txt")):
            print(f"py-spy {raw.name}: inclusive share of samples (non-idle)")
            for frame, share in top_functions(raw):
                print(f"   {share:6.1%}  {frame[:140]}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
