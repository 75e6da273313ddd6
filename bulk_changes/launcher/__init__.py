"""One way to start the whole system on this machine: the simulators, a local
SQS-compatible server, the AMOP database, a tenants file and Dagster (the daemon, or
``dagster dev``). The demo, the end-to-end and browser tests and the benchmark all start
it through ``start_stack``; each only chooses ports, settings and what data to send."""

from bulk_changes.launcher.stack import Stack, run_worker_pids, start_stack, stop_stack

__all__ = ["Stack", "run_worker_pids", "start_stack", "stop_stack"]
