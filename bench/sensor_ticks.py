"""What one sensor tick costs the code server, sensor by sensor, with nothing to do.

    python -m bench.sensor_ticks [--ticks 20] [--shared]

Starts the stack without Dagster's processes (simulators, the local queue, the AMOP
database, the embedded instance), then calls each sensor of the definitions as the code
server does for a tick (``get_external_sensor_execution``: resources and instance built,
the sensor's function, the result), ``--ticks`` times each after three warm-up ticks, and
prints the CPU milliseconds per tick. The queue sensor does not long-poll here (its
receive returns at once). ``--shared``: with the code server's
``reuse_sensor_instance_and_resources`` (the instance and resources built once), as
``python -m bulk_changes.code_server`` runs; without it, Dagster's own way. gRPC's
serialization and the daemon's side of a tick are not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--shared", action="store_true")
    args = parser.parse_args(argv)

    from bulk_changes.launcher import start_stack, stop_stack
    from bulk_changes.paths import default_instance_yaml

    root = Path(tempfile.mkdtemp(prefix="bench-ticks-"))
    stack = start_stack(
        root,
        code_server=True,
        loops={},
        dagster_yaml=default_instance_yaml().read_text(),
        start_dagster=False,
    )
    try:
        os.environ.update(stack.env)
        os.environ["BULK_CHANGES_SENSOR_LONG_POLL"] = "0"
        from bulk_changes import code_server
        from bulk_changes.schema_checks import remember_schema_checks
        from bulk_changes.sqlite_engines import reuse_sqlite_engines

        code_server.read_migrations_once()
        remember_schema_checks()
        reuse_sqlite_engines()
        if args.shared:
            code_server.reuse_sensor_instance_and_resources()
        from dagster import DagsterInstance

        import bulk_changes.definitions as definitions
        from bulk_changes.dagster_private import (
            GrpcServerCodeLocationOrigin,
            get_external_sensor_execution,
        )

        repo = definitions.defs.get_repository_def()
        ref = DagsterInstance.get().get_ref()
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=1, location_name="x")

        def tick(name: str) -> object:
            return get_external_sensor_execution(
                repo, origin, ref, name, None, None, None, None, None
            )

        way = "shared instance and resources" if args.shared else "Dagster's way"
        print(f"code server CPU per sensor tick ({way}), {args.ticks} ticks each:")
        for sensor in repo.sensor_defs:
            for _ in range(3):
                tick(sensor.name)
            began = time.process_time()
            for _ in range(args.ticks):
                result = tick(sensor.name)
            spent = (time.process_time() - began) / args.ticks
            print(f"   {sensor.name:<32} {1000 * spent:6.1f} ms  ({type(result).__name__})")
    finally:
        stop_stack(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
