"""dead_run_worker_sensor's pieces with real processes, a real Dagster instance and the
AMOP limiter tables (the whole path, with the daemon and kill -9: e2e/test_postgres.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    build_sensor_context,
    job,
    op,
)
from dagster._core.events import DagsterEvent, EngineEventData
from sqlalchemy import insert, select

from bulk_changes.db import schema as t
from bulk_changes.db.engine import make_engine
from bulk_changes.db.limiter import holder_prefix, release_slots_of_process
from bulk_changes.db.schema import upgrade
from bulk_changes.processes import ProcessIdentity
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.run_worker_record import RUN_WORKER_TAG, WorkerProcess, register_run_worker
from bulk_changes.sensors.run_workers import build_dead_run_worker_sensor, find_dead_runs


@op
def noop() -> None:
    pass


@job
def stand_in() -> None:
    noop()


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def started_run(instance: DagsterInstance, worker_pid: int | None):
    """A STARTED run whose steps Dagster says run in ``worker_pid``."""
    run = instance.create_run_for_job(job_def=stand_in)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name="stand_in"),
        run_id=run.run_id,
    )
    if worker_pid is not None:
        instance.report_engine_event(
            f"Executing steps in process (pid: {worker_pid})",
            run,
            EngineEventData.in_process(worker_pid),
        )
    run = instance.get_run_by_id(run.run_id)
    assert run.status == DagsterRunStatus.STARTED
    return run


def worker_of(proc: subprocess.Popen[bytes], run_id: str) -> WorkerProcess:
    me = WorkerProcess.this_process(run_id)
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    started = int(stat[stat.rindex(")") + 2 :].split()[19])
    return WorkerProcess(run_id, me.host, proc.pid, started, me.boot)


def test_a_process_is_gone_when_killed_a_zombie_or_its_pid_reused():
    proc = sleeper()
    try:
        worker = worker_of(proc, "r1")
        assert worker.gone() is False
        assert WorkerProcess.this_process("r1").gone() is False
        # the same pid with another start time: another process now
        assert WorkerProcess("r1", worker.host, proc.pid, worker.started + 1, worker.boot).gone()
        assert WorkerProcess("r1", "elsewhere", proc.pid, None, "").gone() is None
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
        state = Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0]
        assert state == "Z"  # killed, not reaped yet
        assert worker.gone() is True
    finally:
        proc.kill()
        proc.wait()
    assert worker.gone() is True  # reaped: no such process


def test_only_the_process_dagster_runs_the_steps_in_registers():
    instance = DagsterInstance.ephemeral()
    run = started_run(instance, worker_pid=None)
    register_run_worker(instance, run)  # e.g. a step subprocess: Dagster names no such pid
    assert RUN_WORKER_TAG not in instance.get_run_by_id(run.run_id).tags

    run = started_run(instance, worker_pid=os.getpid())
    register_run_worker(instance, run)
    register_run_worker(instance, run)
    worker = WorkerProcess.parse(instance.get_run_by_id(run.run_id).tags[RUN_WORKER_TAG])
    assert worker == WorkerProcess.this_process(run.run_id)
    assert worker.host == socket.gethostname() and worker.pid == os.getpid()
    assert WorkerProcess.parse("not json") is None and WorkerProcess.parse(None) is None


def test_only_a_started_run_whose_recorded_worker_is_gone_is_marked(tmp_path):
    instance = DagsterInstance.ephemeral()
    amop_db = AmopDatabase(url=f"sqlite:///{tmp_path / 'amop.sqlite'}")
    host = socket.gethostname()
    alive, killed, child, ended = sleeper(), sleeper(), sleeper(), sleeper()
    try:
        runs = {
            # (the process Dagster runs its steps in, the process its tag names)
            "alive": started_run(instance, alive.pid),
            "killed": started_run(instance, killed.pid),
            # a re-execution still carrying its parent's tag (its worker not set up yet)
            "copied": started_run(instance, child.pid),
            # the tag names a process that is not where Dagster runs the steps (a step
            # subprocess that ended normally): no verdict
            "step_process": started_run(instance, alive.pid),
        }
        tags = {
            "alive": worker_of(alive, runs["alive"].run_id),
            "killed": worker_of(killed, runs["killed"].run_id),
            "copied": worker_of(killed, runs["killed"].run_id),
            "step_process": worker_of(ended, runs["step_process"].run_id),
        }
        for name, worker in tags.items():
            instance.add_run_tags(runs[name].run_id, {RUN_WORKER_TAG: worker.tag_value()})
        engine = make_engine(amop_db.resolved_url())
        upgrade(engine)
        with engine.begin() as conn:  # the killed worker held Jasper's only in-flight slot
            conn.execute(
                insert(t.rate_limit_slots),
                [
                    {
                        "account": "jasper",
                        "slot": 0,
                        "holder": f"{host}:{killed.pid}:ab:7",
                        "expires_at": 9e9,
                    },
                    {
                        "account": "revio",
                        "slot": 0,
                        "holder": f"{host}:{alive.pid}:cd:7",
                        "expires_at": 9e9,
                    },
                ],
            )
        for proc in (killed, ended):
            proc.kill()
            proc.wait()

        looked_at, dead = find_dead_runs(instance)
        assert looked_at == 4
        assert [d.run_id for d in dead] == [runs["killed"].run_id]

        sensor_def = build_dead_run_worker_sensor(minimum_interval_seconds=1)
        context = build_sensor_context(instance=instance, resources={"amop_db": amop_db})
        assert runs["killed"].run_id in sensor_def.evaluate_tick(context).skip_message
        failed = instance.get_run_by_id(runs["killed"].run_id)
        assert failed.status == DagsterRunStatus.FAILURE
        assert failed.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
        [failure] = instance.get_records_for_run(
            runs["killed"].run_id, of_type=DagsterEventType.RUN_FAILURE
        ).records
        message = failure.event_log_entry.dagster_event.message
        assert f"Run worker process {killed.pid} on {host} is gone" in message
        for name in ("alive", "copied", "step_process"):
            assert instance.get_run_by_id(runs[name].run_id).status == DagsterRunStatus.STARTED
        with engine.connect() as conn:
            holders = dict(
                conn.execute(
                    select(t.rate_limit_slots.c.account, t.rate_limit_slots.c.holder)
                ).all()
            )
        assert holders == {"jasper": None, "revio": f"{host}:{alive.pid}:cd:7"}
        # marked once: the next tick has nothing to do
        again = sensor_def.evaluate_tick(
            build_sensor_context(instance=instance, resources={"amop_db": amop_db})
        )
        assert "all alive" in again.skip_message
        engine.dispose()
    finally:
        for proc in (alive, killed, child, ended):
            proc.kill()
            proc.wait()


def test_the_sensor_gives_back_a_dead_processs_slots_whatever_its_runs_status(tmp_path):
    """The code server had marked the run failed already: no STARTED run is left to look
    at, and the dead worker's account slot comes back all the same."""
    instance = DagsterInstance.ephemeral()
    amop_db = AmopDatabase(url=f"sqlite:///{tmp_path / 'amop.sqlite'}")
    engine = make_engine(amop_db.resolved_url())
    upgrade(engine)
    killed = sleeper()
    try:
        me = ProcessIdentity.current()
        stat = Path(f"/proc/{killed.pid}/stat").read_text()
        started = int(stat[stat.rindex(")") + 2 :].split()[19])
        dead = ProcessIdentity(me.host, killed.pid, started, me.boot)
        with engine.begin() as conn:
            conn.execute(
                insert(t.rate_limit_slots).values(
                    account="jasper", slot=0, holder=f"{holder_prefix(dead)}ab:7", expires_at=9e9
                )
            )
        killed.kill()
        killed.wait()
        sensor_def = build_dead_run_worker_sensor(minimum_interval_seconds=1)
        context = build_sensor_context(instance=instance, resources={"amop_db": amop_db})
        assert "1 account slot(s) of dead processes given back" in (
            sensor_def.evaluate_tick(context).skip_message
        )
        with engine.connect() as conn:
            assert conn.execute(select(t.rate_limit_slots.c.holder)).scalar_one() is None
    finally:
        killed.kill()
        killed.wait()
        engine.dispose()


def test_release_slots_of_process_frees_only_that_process(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'amop.sqlite'}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(t.rate_limit_slots),
            [
                {"account": "a", "slot": 0, "holder": "h:12:x:1", "expires_at": 9e9},
                {"account": "a", "slot": 1, "holder": "h:123:x:1", "expires_at": 9e9},
                {"account": "b", "slot": 0, "holder": "h:12:y:2", "expires_at": 9e9},
            ],
        )
    assert release_slots_of_process(engine, "h", 12) == 2
    with engine.connect() as conn:
        assert conn.execute(
            select(t.rate_limit_slots.c.holder).where(t.rate_limit_slots.c.holder.is_not(None))
        ).scalars().all() == ["h:123:x:1"]
    engine.dispose()


def test_stands_aside_when_the_launcher_checks_workers(monkeypatch, tmp_path):
    instance = DagsterInstance.ephemeral()
    monkeypatch.setattr(
        type(instance.run_launcher), "supports_check_run_worker_health", property(lambda _: True)
    )
    context = build_sensor_context(
        instance=instance,
        resources={"amop_db": AmopDatabase(url=f"sqlite:///{tmp_path / 'a.db'}")},
    )
    skip = build_dead_run_worker_sensor().evaluate_tick(context).skip_message
    assert "checks run workers itself" in skip
