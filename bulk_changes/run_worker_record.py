"""A run worker records itself on its run (host, pid, start time, boot id), so
``dead_run_worker_sensor`` (sensors/run_workers.py) can tell when it dies.

Below the resources and the sensors alike: the AMOP database resource records the worker
when a run sets it up, the sensor reads the record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from dagster import DagsterEventType

from bulk_changes.processes import ProcessIdentity

RUN_WORKER_TAG = "bulk_changes/run_worker"
# Dagster's own engine events naming the process that executes a run's steps.
_PID_EVENT_PREFIXES = ("Executing steps in process", "Started process for run")

_registered: set[tuple[str, int]] = set()


# -- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerProcess:
    run_id: str
    host: str
    pid: int
    started: int | None  # clock ticks after boot (Linux); None elsewhere
    boot: str

    def tag_value(self) -> str:
        return json.dumps(
            {
                "run": self.run_id,
                "host": self.host,
                "pid": self.pid,
                "start": self.started,
                "boot": self.boot,
            },
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, value: str | None) -> WorkerProcess | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            return cls(
                run_id=str(data["run"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                started=None if data.get("start") is None else int(data["start"]),
                boot=str(data.get("boot") or ""),
            )
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def this_process(cls, run_id: str) -> WorkerProcess:
        me = ProcessIdentity.current()
        return cls(run_id, me.host, me.pid, me.started, me.boot)

    def gone(self) -> bool | None:
        """True: the process no longer exists (or is a zombie, or its pid now belongs to
        another process). False: it runs. None: this host cannot tell (another host)."""
        return ProcessIdentity(self.host, self.pid, self.started, self.boot).gone()


def register_run_worker(instance: Any, run: Any, log: Any = None) -> None:
    """Record this process on ``run`` as its worker, once per run and process, if it is
    the process Dagster runs the run's steps in (the in-process executor's run worker; not
    a step subprocess of the multiprocess executor, whose run worker the code server
    watches). Never fails the run: a worker that could not record itself is not watched."""
    if instance is None or run is None or not getattr(run, "run_id", None):
        return
    key = (run.run_id, os.getpid())
    if key in _registered:
        return
    try:
        _registered.add(key)
        if os.getpid() not in dagster_step_pids(instance, run.run_id):
            return
        worker = WorkerProcess.this_process(run.run_id)
        instance.add_run_tags(run.run_id, {RUN_WORKER_TAG: worker.tag_value()})
    except Exception as exc:  # pragma: no cover - storage hiccup
        if log is not None:
            log.warning(f"could not record the run worker on run {run.run_id}: {exc!r}")


def dagster_step_pids(instance: Any, run_id: str) -> set[int]:
    """The pids Dagster itself recorded as executing the run's steps."""
    pids: set[int] = set()
    connection = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=200
    )
    for record in connection.records:
        entry = record.event_log_entry
        event = entry.dagster_event
        message = (event.message if event else None) or entry.user_message or ""
        if not message.startswith(_PID_EVENT_PREFIXES):
            continue
        data = event.event_specific_data if event else None
        metadata = getattr(data, "metadata", None) or {}
        pid = metadata.get("pid")
        value = getattr(pid, "value", pid)
        try:
            pids.add(int(str(value)))
        except (TypeError, ValueError):
            continue
    return pids
