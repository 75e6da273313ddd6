"""Local HTTP servers that behave like Cisco Jasper, AT&T Telegence and Rev.io.

Stdlib only. See docs/CONTRACTS.md ("Simulators") and the module docstrings for the
choices made where the vendors' documentation is silent.
"""

from bulk_changes.simulators.common import SimConfig, Simulator
from bulk_changes.simulators.jasper import JasperSimulator
from bulk_changes.simulators.revio import RevioSimulator
from bulk_changes.simulators.runner import (
    SimulatorSet,
    add_arguments,
    freeze_host_objects,
    serve_forever,
    start_simulators,
)
from bulk_changes.simulators.seeding import load_inventory_csv, seed_from_inventory_rows
from bulk_changes.simulators.telegence import TelegenceSimulator

__all__ = [
    "JasperSimulator",
    "RevioSimulator",
    "SimConfig",
    "Simulator",
    "SimulatorSet",
    "TelegenceSimulator",
    "add_arguments",
    "freeze_host_objects",
    "load_inventory_csv",
    "seed_from_inventory_rows",
    "serve_forever",
    "start_simulators",
]
