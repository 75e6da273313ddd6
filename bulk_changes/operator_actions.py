"""`bulk-changes retry ID` and `bulk-changes cancel ID`: the operator's two actions on one
bulk change from the command line, through the same mechanisms as the Dagster UI.

- retry: a retry request on the queue, as any producer sends one; the queue sensor starts a
  run of the bulk change's partition with its tags (tenant, bulk change, type,
  integration), so the run is found and limited like every other run of the tenant.
- cancel: the bulk change's active runs are terminated as the UI's "Terminate" does (their
  device threads stop before the next call, the run records the stop); then, whether or
  not a run was found, the bulk change is made CANCELLED in the AMOP database, which also
  stops a run this command could not reach (each device checks before each call).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulk_changes.paths import home
from bulk_changes.processing.stopping import OPERATOR_STOP_REASON

ACTIVE = ("NEW", "PROCESSING")


def dagster_home() -> Path | None:
    """$DAGSTER_HOME, else the demo's instance if there is one."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    for candidate in (home() / "demo" / "dagster_home", home() / "dagster_home"):
        if (candidate / "dagster.yaml").exists():
            return candidate
    return None


def retry(repo: Any, send: Callable[[dict[str, Any]], Any], bulk_change_id: int) -> tuple[int, str]:
    """``send``: puts one message body on the bulk-change queue. -> (exit status, what to
    print)."""
    bulk = repo.get_bulk_change(bulk_change_id)
    if bulk is None:
        return 1, f"no bulk change {bulk_change_id} in {repo.engine.url!r}"
    counts = repo.counts(bulk_change_id)
    if bulk.status in ACTIVE:
        return 1, (
            f"bulk change {bulk_change_id} is {bulk.status}: its run retries its failed devices "
            f"itself; retry once it is final (bulk-changes status {bulk_change_id})"
        )
    if bulk.status == "CANCELLED":
        return 1, (
            f"bulk change {bulk_change_id} was stopped (CANCELLED): its devices are not "
            "retried; submit the devices still wanted as a new bulk change"
        )
    api_failed = int(counts.get("API_FAILED", 0))
    if not api_failed:
        refused = int(counts.get("ERROR", 0))
        return 0, f"bulk change {bulk_change_id} has no API_FAILED device to retry" + (
            f" ({refused} ERROR device(s) were refused for good: correct them and submit "
            "them as a new bulk change)"
            if refused
            else ""
        )
    request_id = f"cli-{uuid.uuid4().hex[:12]}"
    send({"bulk_change_id": bulk_change_id, "retry_failed": True, "request_id": request_id})
    return 0, (
        f"retry of bulk change {bulk_change_id} sent ({api_failed} API_FAILED device(s), "
        f"request {request_id}); its run is tagged bulk_changes/bulk_change_id="
        f"{bulk_change_id}. Follow it with: bulk-changes status {bulk_change_id}"
    )


def _terminate_runs(bulk_change_id: int, instance_home: Path) -> list[str]:
    """Terminate (or, queued, cancel) the bulk change's active runs, as the UI does."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    from bulk_changes.run_tags import TAG_BULK_CHANGE_ID

    with DagsterInstance.from_config(str(instance_home)) as instance:
        runs = instance.get_runs(
            filters=RunsFilter(
                tags={TAG_BULK_CHANGE_ID: str(bulk_change_id)},
                statuses=[
                    DagsterRunStatus.QUEUED,
                    DagsterRunStatus.NOT_STARTED,
                    DagsterRunStatus.STARTING,
                    DagsterRunStatus.STARTED,
                ],
            )
        )
        for run in runs:
            instance.run_coordinator.cancel_run(run.run_id)
        return [run.run_id for run in runs]


def cancel(repo: Any, bulk_change_id: int, wait_seconds: float = 30.0) -> tuple[int, str]:
    """-> (exit status, what to print)."""
    bulk = repo.get_bulk_change(bulk_change_id)
    if bulk is None:
        return 1, f"no bulk change {bulk_change_id} in {repo.engine.url!r}"
    if bulk.status == "CANCELLED":
        return 0, f"bulk change {bulk_change_id} is already CANCELLED"
    if bulk.status not in ACTIVE:
        return 1, f"bulk change {bulk_change_id} is already {bulk.status}: nothing to stop"
    lines = []
    instance_home = dagster_home()
    terminated: list[str] = []
    if instance_home is None:
        lines.append(
            "no Dagster instance found (set DAGSTER_HOME): stopping through the AMOP database"
        )
    else:
        terminated = _terminate_runs(bulk_change_id, instance_home)
        if terminated:
            lines.append(f"terminating run(s) {', '.join(terminated)}")
            # the run records the stop itself once its devices have stopped
            deadline = time.monotonic() + wait_seconds
            while time.monotonic() < deadline:
                current = repo.get_bulk_change(bulk_change_id)
                if current is not None and current.status not in ACTIVE:
                    break
                time.sleep(0.5)
    changed, counts = repo.cancel_bulk_change(bulk_change_id, OPERATOR_STOP_REASON)
    final = repo.get_bulk_change(bulk_change_id)
    status = final.status if final is not None else "?"
    lines.append(
        f"bulk change {bulk_change_id} is {status}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    return (0 if status == "CANCELLED" else 1), "\n".join(lines)
