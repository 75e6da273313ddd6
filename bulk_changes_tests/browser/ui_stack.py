"""The stack an operator's browser looks at: ``dagster dev`` on the embedded default (SQLite
storage, the AMOP SQLite file), the simulators and a local SQS server, with bulk changes
an operator has to deal with: a clean one and one with failed devices."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bulk_changes.demo import make_inventory
from bulk_changes.launcher import Stack, start_stack
from bulk_changes.resources.local_sqs import free_port

ARTIFACTS = (
    Path(
        os.environ.get("BULK_CHANGES_TEST_ARTIFACTS")
        or Path(__file__).resolve().parents[2] / "test-artifacts"
    )
    / "browser"
)

LOCKED = "Device is locked by the operator"


@dataclass
class Scenario:
    stack: Stack
    url: str
    jasper: list[dict[str, str]]  # the inventory's Jasper devices, in order
    clean: int  # a bulk change whose devices were all processed
    failed: int  # 2 devices API_FAILED (the carrier was down), 1 ERROR (locked), 1 refused
    api_failed: list[str]  # the ICCIDs that ended API_FAILED
    locked: str  # the ICCID the carrier refused for good

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        answer.raise_for_status()
        return answer.json()["data"]

    def runs_of(self, bulk_id: int) -> list[dict[str, Any]]:
        """The bulk change's runs, newest first: id, status, tags."""
        data = self.graphql(
            "query($f: RunsFilter){runsOrError(filter:$f){... on Runs{results{"
            "runId status tags{key value}}}}}",
            f={"tags": [{"key": "bulk_changes/bulk_change_id", "value": str(bulk_id)}]},
        )
        return [
            {**r, "tags": {t["key"]: t["value"] for t in r["tags"]}}
            for r in data["runsOrError"]["results"]
        ]

    def wait_for_run(self, bulk_id: int, count: int, status: str, timeout: float = 120) -> dict:
        """The newest run of the bulk change once it has ``count`` runs and the newest
        has ``status``."""
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs_of(bulk_id)
            if len(runs) >= count and runs[0]["status"] == status:
                return runs[0]
            self.stack.check_alive()
            time.sleep(0.5)
        raise AssertionError(f"bulk change {bulk_id}: runs {runs}; logs: {self.stack.root}")


def start_scenario(root: Path) -> Scenario:
    port = free_port()
    stack = start_stack(
        root,
        dagster_dev_port=port,
        env_overrides={
            # two attempts: a carrier that is down fails a device in a fraction of a second
            "BULK_CHANGES_MAX_ATTEMPTS": "2",
            "BULK_CHANGES_UI_URL": f"http://127.0.0.1:{port}",
            "BULK_CHANGES_RESULTS_DIR": str(root / "results"),
        },
    )
    inventory = make_inventory(1, 400)
    stack.import_devices("acme", inventory)
    jasper = [r for r in inventory if r["integration"] == "jasper"]
    clean = stack.submit(
        "acme",
        "device_status",
        "jasper",
        [{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in jasper[:3]],
    )
    stack.wait_final([clean])
    down, locked = [r["iccid"] for r in jasper[3:5]], jasper[5]["iccid"]
    # the carrier answers 500 to everything, and refuses one device for good
    stack.sims.jasper.configure(error_rate=1.0, fail_keys={locked: LOCKED})
    try:
        failed = stack.submit(
            "acme",
            "device_status",
            "jasper",
            [{"iccid": i, "status": "DEACTIVATED"} for i in [*down, locked]]
            + [{"iccid": "123", "status": "DEACTIVATED"}],
        )
        stack.wait_final([failed])
    finally:
        stack.sims.jasper.configure(error_rate=0.0)
    return Scenario(
        stack=stack,
        url=f"http://127.0.0.1:{port}",
        jasper=jasper,
        clean=clean,
        failed=failed,
        api_failed=down,
        locked=locked,
    )
