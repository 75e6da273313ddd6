"""A run killed after a webhook was sent and before the send was recorded, then
re-executed from failure (as an operator does in the UI): the event goes again with the
same ``webhook-id``, and nothing is lost. Real run processes on a persistent Dagster
instance, the simulators, a real receiver verifying with ``standardwebhooks``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bulk_changes.db.engine import make_engine
from bulk_changes.db.outbox import Outbox
from bulk_changes.db.repository import Repository
from bulk_changes.db.schema import upgrade
from bulk_changes.demo import make_inventory
from bulk_changes.domain import notifications as n
from bulk_changes.intake import SubmitRequest, inventory_rows, submit_bulk_change
from bulk_changes.resources.tenant_config import load_settings
from bulk_changes.simulators import seed_from_inventory_rows, start_simulators
from bulk_changes_tests.notify_helpers import tenants_file
from bulk_changes_tests.notify_servers import Receiver

SECRET = "whsec_" + "a2lsbGVkLXJ1bi13ZWJob29rLXNlY3JldC0zMmJ5dGVz"

# The first run: its process dies the moment a delivery would be recorded as delivered,
# that is after the receiver has the webhook and before the outbox knows it.
KILLED_RUN = """
import json, os, sys
from dagster import DagsterInstance, execute_job, reconstructable
from bulk_changes.db.outbox import Outbox
from bulk_changes.definitions import process_bulk_change_job

def die_before_recording(*args, **kwargs):
    os._exit(17)

Outbox.record_delivered = die_before_recording
execute_job(
    reconstructable(process_bulk_change_job),
    instance=DagsterInstance.get(),
    run_config=json.loads(sys.argv[1]),
)
"""

REEXECUTION = """
import json, sys
from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable
from bulk_changes.definitions import process_bulk_change_job

instance = DagsterInstance.get()
run_id = sys.argv[1]
instance.report_run_failed(instance.get_run_by_id(run_id))  # its worker is gone
result = execute_job(
    reconstructable(process_bulk_change_job),
    instance=instance,
    reexecution_options=ReexecutionOptions.from_failure(run_id, instance),
)
print(json.dumps({"success": result.success}))
"""


def test_killed_after_sending_before_recording_then_reexecuted_same_webhook_id(tmp_path: Path):
    sims = start_simulators()
    receiver = Receiver(SECRET).start()
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        db_url = f"sqlite:///{tmp_path / 'amop.sqlite'}"
        tenants = tenants_file(tmp_path, {"acme": [{"url": receiver.url, "secret": SECRET}]})
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "DAGSTER_HOME": str(home),
            "BULK_CHANGES_ENV": "local",
            "BULK_CHANGES_HOME": str(tmp_path),
            "BULK_CHANGES_DB_URL": db_url,
            "BULK_CHANGES_TENANTS": str(tenants),
            "BULK_CHANGES_MAIL_DIR": str(tmp_path / "mail"),
            "BULK_CHANGES_NOTIFY_LEASE": "1",
            "BULK_CHANGES_JASPER_URL": sims.jasper_url,
            "BULK_CHANGES_TELEGENCE_URL": sims.telegence_url,
            "BULK_CHANGES_REVIO_URL": sims.revio_url,
            "BULK_CHANGES_BASE_DELAY": "0.05",
        }
        engine = make_engine(db_url)
        upgrade(engine)
        repo = Repository(engine)
        rows = [r for r in make_inventory(1, 8) if r["integration"] == "jasper"][:3]
        repo.upsert_devices("acme", inventory_rows(rows, "test"))
        seed_from_inventory_rows(sims, rows)
        bulk_id = submit_bulk_change(
            repo,
            load_settings(str(tenants)),
            SubmitRequest(
                tenant="acme",
                change_type="device_status",
                integration="jasper",
                rows=[{"iccid": r["iccid"], "status": "DEACTIVATED"} for r in rows],
                requested_by="ops",
            ),
        ).id
        run_config = {"ops": {"load_device_changes": {"config": {"bulk_change_id": bulk_id}}}}

        killed = subprocess.run(
            [sys.executable, "-c", KILLED_RUN, json.dumps(run_config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert killed.returncode == 17, killed.stderr[-3000:]
        assert repo.get_bulk_change(bulk_id).status == "PROCESSED"
        (sent_before_kill,) = receiver.hits
        assert sent_before_kill.verified
        assert sent_before_kill.json["type"] == n.BULK_CHANGE_PROCESSING
        outbox = Outbox(engine)
        unrecorded = outbox.by_event_id(sent_before_kill.webhook_id)[0]
        assert unrecorded.status == "PENDING"  # the outbox never learnt it went

        time.sleep(1.1)  # the dead run's lease on the delivery runs out
        again = subprocess.run(
            [sys.executable, "-c", REEXECUTION, repo.get_bulk_change(bulk_id).last_run_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout.strip().splitlines()[-1]) == {"success": True}

        hits = receiver.hits
        assert all(h.verified for h in hits)
        ids = [h.webhook_id for h in hits]
        # the same id again, never a new one; then the rest, each once, in order
        assert ids[0] == ids[1] == sent_before_kill.webhook_id
        assert len(set(ids[1:])) == len(ids) - 1
        events = [e for e in outbox.events(bulk_id) if e.type in n.WEBHOOK_EVENTS]
        assert ids[1:] == [e.event_id for e in events]
        assert [h.json["type"] for h in hits[1:]] == [
            n.BULK_CHANGE_PROCESSING,
            n.DEVICE_CHANGES_COMPLETED,
            n.BULK_CHANGE_COMPLETED,
        ]
        # never lost: every delivery recorded, the interrupted attempt kept as such
        notes = outbox.notifications_of(bulk_id)
        assert all(d["status"] == "DELIVERED" for e in notes for d in e["deliveries"])
        attempts = outbox.attempts(unrecorded.id)
        assert [a["outcome"] for a in attempts] == ["interrupted", "delivered"]
        mails = list((tmp_path / "mail").glob("*.eml"))
        completion = next(e for e in outbox.events(bulk_id) if e.type == n.EMAIL_COMPLETION)
        assert [m.name for m in mails] == [f"{completion.event_id}@bulk-changes.eml"]
    finally:
        receiver.stop()
        sims.stop()
