"""How fast a request file of 100,000 rows is read and validated.

    python -m bench.intake_speed [--rows 100000] [--repeat 3]

Writes a CSV request (``username_cost_center`` on Jasper: every row's ICCID in the
inventory, one row in a hundred with a quoted comma, one in a thousand with a quoted
newline, one in five hundred refused for an over-long username) and the same rows as an
inventory file, then times in this process, median of ``--repeat`` runs, wall and CPU:

- reading the request (``read_request_file``: the file's bytes to rows of text);
- reading and validating it (``plan_bulk_change`` against a SQLite inventory of the rows);
- naming the file line of every refused row (``line_of``), what a refusal prints;
- reading the inventory (``read_inventory_file``).

Prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    from bulk_changes.demo import demo_iccid

    def iccid(n: int) -> str:
        return demo_iccid(41, n)  # 890141..., as the tests number theirs

    request = ["iccid,username,cost_center_1"]
    inventory = ["iccid,integration,status,username"]
    for n in range(rows):
        key = iccid(n)
        if n % 500 == 499:
            username = "u" * 300  # over the field's limit: a refused row
        elif n % 1000 == 0:
            username = f'"two\nlines {n}"'  # refused too, one line further on
        elif n % 100 == 0:
            username = f'"user, {n}"'
        else:
            username = f"user-{n}"
        request.append(f"{key},{username},CC-{n % 7:03d}")
        inventory.append(f"{key},jasper,ACTIVATED,old-{n}")
    request_path, inventory_path = folder / "request.csv", folder / "inventory.csv"
    request_path.write_text("\n".join(request) + "\n", encoding="utf-8")
    inventory_path.write_text("\n".join(inventory) + "\n", encoding="utf-8")
    return request_path, inventory_path


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """-> (median wall seconds, median CPU seconds, the last result)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from bulk_changes.db.engine import make_engine
    from bulk_changes.db.repository import Repository
    from bulk_changes.db.schema import upgrade
    from bulk_changes.domain.change_types import ChangeType, Integration
    from bulk_changes.intake import (
        SubmitRequest,
        inventory_rows,
        line_of,
        plan_bulk_change,
        read_inventory_file,
        read_request_file,
    )
    from bulk_changes.tenant_file import load_settings

    folder = Path(tempfile.mkdtemp(prefix="intake-speed-"))
    request_path, inventory_path = write_files(folder, args.rows)
    engine = make_engine(f"sqlite:///{folder / 'amop.sqlite'}")
    upgrade(engine)
    repo = Repository(engine)
    repo.upsert_devices("acme", inventory_rows(read_inventory_file(inventory_path), "inventory"))
    settings = load_settings()

    def read() -> Any:
        return read_request_file(request_path, ChangeType.USERNAME_COST_CENTER, Integration.JASPER)

    def read_and_validate() -> Any:
        request = SubmitRequest("acme", "username_cost_center", "jasper", read())
        return request.rows, plan_bulk_change(repo, settings, request)

    def refused_lines() -> list[int | None]:
        rows, planned = read_and_validate()
        return [line_of(rows, r["row"] - 1) for r in planned.rejected]

    size = request_path.stat().st_size / 1e6
    print(
        f"{args.rows:,} rows, {size:.1f} MB; median of {args.repeat} runs; load {os.getloadavg()}"
    )
    print(f"{'step':<44} {'wall s':>8} {'CPU s':>8}")
    wall, cpu, rows = timed(read, args.repeat)
    print(f"{'read the request file':<44} {wall:8.3f} {cpu:8.3f}   ({len(rows):,} rows)")
    wall, cpu, _ = timed(read_and_validate, args.repeat)
    print(f"{'read and validate':<44} {wall:8.3f} {cpu:8.3f}")
    wall, cpu, lines = timed(refused_lines, args.repeat)
    print(
        f"{'read, validate, the refused rows lines':<44} {wall:8.3f} {cpu:8.3f}"
        f"   ({len(lines):,} refused, first lines {lines[:3]})"
    )
    wall, cpu, rows = timed(lambda: read_inventory_file(inventory_path), args.repeat)
    print(f"{'read the inventory file':<44} {wall:8.3f} {cpu:8.3f}   ({len(rows):,} rows)")
    engine.dispose()


if __name__ == "__main__":
    main()
