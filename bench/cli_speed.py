"""How fast the operator's reading commands answer, on a database of 100,000 devices.

    python -m bench.cli_speed [--devices 100000] [--bulk 10] [--repeat 5] [--keep DIR]

Builds a SQLite AMOP database (``--devices`` devices of one tenant, ``--bulk`` bulk changes
sharing them, half of them final) and a local SQS server, then runs each command as a user
does (a new process: start-up and imports included) ``--repeat`` times and prints the
median and best wall-clock time and the median CPU time. Then the commands that write:
``submit`` of 10 devices (queue up, then down: how soon it says so) and ``devices
import`` of 100. Prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bulk_changes.demo import demo_iccid
from bulk_changes.launcher.cli_process import CLEARED, cli_command

SMALL = 100


def iccid(n: int) -> str:
    """A valid ICCID numbered n (890141..., as the tests number theirs)."""
    return demo_iccid(41, n)


def build_database(url: str, devices: int, bulk: int) -> list[int]:
    """-> ids of the bulk changes: ``bulk`` sharing the devices (the first half made
    final), then a final one of ``SMALL`` devices."""
    from bulk_changes.db.engine import make_engine
    from bulk_changes.db.repository import Repository
    from bulk_changes.db.schema import upgrade
    from bulk_changes.domain.model import NewDeviceChange
    from bulk_changes.domain.state_machine import DeviceStatus

    engine = make_engine(url)
    upgrade(engine)
    repo = Repository(engine)
    rows = [
        {
            "integration": "jasper",
            "device_key": iccid(i),
            "iccid": iccid(i),
            "status": "ACTIVATED",
            "rate_plan": "IOT_1GB",
            "username": f"user-{i}",
            "revio_service_id": 10_000 + i,
        }
        for i in range(devices)
    ]
    repo.upsert_devices("acme", rows)
    ids_by_key = repo.devices_by_key("acme", "jasper", [r["device_key"] for r in rows])

    def store(keys: list[str], username: str, final: bool) -> int:
        """One bulk change of the devices ``keys``, made final if asked."""
        status = DeviceStatus.PROCESSED if final else DeviceStatus.NEW
        changes = [
            NewDeviceChange(
                row_number=n + 1,
                device_key=key,
                device_id=ids_by_key[key]["id"],
                request={"username": f"{username}-{n}", "cost_center_1": "CC"},
                status=status,
            )
            for n, key in enumerate(keys)
        ]
        bulk_id, _ = repo.create_bulk_change(
            tenant_id="acme",
            change_type="username_cost_center",
            integration="jasper",
            notify=[],
            idempotency_key=None,
            requested_by="bench",
            source="bench",
            changes=changes,
        )
        if final:
            repo.finalize(bulk_id)
        return bulk_id

    keys = [r["device_key"] for r in rows]
    per_bulk = devices // bulk
    made = [
        store(keys[b * per_bulk : (b + 1) * per_bulk], f"new-{b}", final=b < bulk // 2)
        for b in range(bulk)
    ]
    # and a small one (the usual request), made final: the exports' second figure
    made.append(store(keys[:SMALL], "small", final=True))
    engine.dispose()
    return made


def timed(
    command: list[str], env: dict[str, str], cwd: Path, repeat: int, ok: tuple[int, ...] = (0, 3)
) -> tuple[list[float], list[float]]:
    """-> (wall-clock seconds, CPU seconds of the process) of each run. On a busy machine
    the CPU time is the closer estimate of the wall-clock time on an idle one."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode not in ok:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr}")
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--bulk", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the database here and keep it")
    args = parser.parse_args()

    from bulk_changes.resources.local_sqs import LocalSqsServer

    folder = args.keep or Path(tempfile.mkdtemp(prefix="cli-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "amop.sqlite"
    started = time.perf_counter()
    ids = (
        build_database(f"sqlite:///{database}", args.devices, args.bulk)
        if not database.exists()
        else list(range(1, args.bulk + 2))
    )
    print(
        f"database: {args.devices:,} devices, {args.bulk} bulk changes of "
        f"{args.devices // args.bulk:,} ({time.perf_counter() - started:.1f} s to build)"
    )
    server = LocalSqsServer(port=0)
    endpoint = server.start()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(
        BULK_CHANGES_HOME=str(folder / "home"),
        BULK_CHANGES_DB_URL=f"sqlite:///{database}",
        BULK_CHANGES_SQS_ENDPOINT=endpoint,
    )
    final, open_one, small = ids[0], ids[-2], ids[-1]
    # a usual request (10 devices) and inventory (100): the commands that write
    request = folder / "request.csv"
    request.write_text("iccid,username\n" + "".join(f"{iccid(n)},bench-{n}\n" for n in range(10)))
    inventory = folder / "inventory.csv"
    inventory.write_text(
        "iccid,integration\n" + "".join(f"{iccid(n)},jasper\n" for n in range(100))
    )
    submit = [*cli_command(), "submit", str(request), "--tenant", "acme"]
    submit += ["--type", "username_cost_center", "--integration", "jasper"]
    # nothing listens on port 9 (discard): connection refused, as for a stopped queue
    queue_down = {"BULK_CHANGES_SQS_ENDPOINT": "http://127.0.0.1:9"}
    per = f"{args.devices // args.bulk:,} devices"
    cli = cli_command()
    out = str(folder / "export")
    runs: list[tuple[Any, ...]] = [
        ("python -c pass (interpreter alone)", [sys.executable, "-c", "pass"], {}),
        ("list", [*cli, "list"]),
        ("list --json", [*cli, "list", "--json"]),
        (
            "list --status PROCESSED --since 2000-01-01",
            [*cli, "list", "--status", "PROCESSED", "--since", "2000-01-01"],
        ),
        (f"status {final} --json ({per})", [*cli, "status", str(final), "--json"]),
        (f"wait {final} (final)", [*cli, "wait", str(final)]),
        (f"send {open_one}", [*cli, "send", str(open_one)]),
        (
            f"export {small} --format csv ({SMALL} devices)",
            [*cli, "export", str(small), "--format", "csv", "--output", out + ".csv"],
        ),
        (
            f"export {small} --format xlsx ({SMALL} devices)",
            [*cli, "export", str(small), "--format", "xlsx", "--output", out + ".xlsx"],
        ),
        (
            f"export {final} --format csv ({per})",
            [*cli, "export", str(final), "--format", "csv", "--output", out + ".csv"],
        ),
        (
            f"export {final} --format xlsx ({per})",
            [*cli, "export", str(final), "--format", "xlsx", "--output", out + ".xlsx"],
        ),
        (
            f"status {final} --devices --json ({per})",
            [*cli, "status", str(final), "--devices", "--json"],
        ),
        ("submit (10 devices)", submit),
        ("submit (10 devices), the queue down: exit 3", submit, queue_down),
        (
            "devices import (100 devices)",
            [*cli, "devices", "import", str(inventory), "--tenant", "acme"],
        ),
    ]
    try:
        timed([*cli, "send", str(open_one)], env, folder, 1)  # the queue exists before timing
        print(
            f"{'command':<52} {'wall median':>11} {'wall best':>10} {'CPU median':>11}"
            f"   (s, {args.repeat} runs each)"
        )
        for label, command, *extra in runs:
            walls, cpus = timed(
                command, {**env, **(extra[0] if extra else {})}, folder, args.repeat
            )
            print(
                f"{label:<52} {statistics.median(walls):11.3f} {min(walls):10.3f}"
                f" {statistics.median(cpus):11.3f}"
            )
    finally:
        server.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print(f"database kept in {folder}" if args.keep else "")


if __name__ == "__main__":
    main()
