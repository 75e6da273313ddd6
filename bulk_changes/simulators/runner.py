"""Starting the three simulators together, in process or from the command line."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

from bulk_changes.simulators.jasper import JasperSimulator
from bulk_changes.simulators.revio import RevioSimulator
from bulk_changes.simulators.telegence import TelegenceSimulator

DEFAULT_PORTS = {"jasper": 8101, "telegence": 8102, "revio": 8103}


@dataclass
class SimulatorSet:
    jasper: JasperSimulator
    telegence: TelegenceSimulator
    revio: RevioSimulator

    @property
    def jasper_url(self) -> str:
        return self.jasper.url

    @property
    def telegence_url(self) -> str:
        return self.telegence.url

    @property
    def revio_url(self) -> str:
        return self.revio.url

    def all(self) -> tuple[JasperSimulator, TelegenceSimulator, RevioSimulator]:
        return (self.jasper, self.telegence, self.revio)

    def reset(self, settings: bool = False) -> None:
        for sim in self.all():
            sim.reset(settings=settings)

    def stop(self) -> None:
        for sim in self.all():
            sim.stop()

    def __enter__(self) -> SimulatorSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulators(
    host: str = "127.0.0.1",
    jasper_port: int = 0,
    telegence_port: int = 0,
    revio_port: int = 0,
    credentials: dict[str, dict[str, Any]] | None = None,
) -> SimulatorSet:
    """Start the three simulators (port 0: any free port).

    ``credentials`` adds accounts to the defaults, per system:
    ``{"jasper": {username: api_key}, "telegence": {app_id: app_secret},
    "revio": {"login@clientcode": (password, subscription_key)}}``.
    """
    credentials = credentials or {}
    sims = SimulatorSet(
        jasper=JasperSimulator(credentials.get("jasper")),
        telegence=TelegenceSimulator(credentials.get("telegence")),
        revio=RevioSimulator(credentials.get("revio")),
    )
    started: list[Any] = []
    try:
        for sim, port in zip(sims.all(), (jasper_port, telegence_port, revio_port), strict=True):
            sim.start(host, port)
            started.append(sim)
    except BaseException:
        for sim in started:
            sim.stop()
        raise
    return sims


def freeze_host_objects() -> int:
    """Take every object the simulators' host holds now out of the cyclic collector's
    reach. A full collection stops every thread of the host: the calls in flight are
    answered that much later, and where the kernel does not time-stamp arrivals (see
    transport.arrival_time) a call that arrives meanwhile is counted late, crowding the
    window of the calls after it. Measured in the test process (Dagster, the tests and the
    stack loaded): full collections of 77-175 ms before, 5-9 ms after. Call it once the
    host's long-lived objects exist (again after new ones, a new stack say); the call log
    keeps its entries out of the collector's reach itself. -> objects frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``simulate`` options (shared by ``python -m bulk_changes.simulators`` and the CLI)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--jasper-port", type=int, default=DEFAULT_PORTS["jasper"])
    parser.add_argument("--telegence-port", type=int, default=DEFAULT_PORTS["telegence"])
    parser.add_argument("--revio-port", type=int, default=DEFAULT_PORTS["revio"])
    parser.add_argument("--seed-csv", default=None, help="inventory CSV to seed the systems with")
    return parser


def serve_forever(
    args: argparse.Namespace,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the simulators until SIGINT/SIGTERM (or ``stop`` is set). Returns an exit code."""
    from bulk_changes.simulators.seeding import load_inventory_csv, seed_from_inventory_rows

    out = out or sys.stdout
    stop = stop or threading.Event()
    sims = start_simulators(
        host=getattr(args, "host", "127.0.0.1"),
        jasper_port=getattr(args, "jasper_port", DEFAULT_PORTS["jasper"]),
        telegence_port=getattr(args, "telegence_port", DEFAULT_PORTS["telegence"]),
        revio_port=getattr(args, "revio_port", DEFAULT_PORTS["revio"]),
    )
    try:
        seed_csv = getattr(args, "seed_csv", None)
        if seed_csv:
            counts = seed_from_inventory_rows(sims, load_inventory_csv(seed_csv))
            print(f"seeded from {seed_csv}: {counts}", file=out)
        print(f"jasper     {sims.jasper_url}", file=out)
        print(f"telegence  {sims.telegence_url}", file=out)
        print(f"revio      {sims.revio_url}", file=out, flush=True)
        freeze_host_objects()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    finally:
        sims.stop()
    return 0
