"""`bulk-changes`: intake, status, simulators, queue and the demo.

Every command finds the AMOP database and the queue the same way: the environment, else
the home's settings file (the demo writes it), else the home's own SQLite file (see
``bulk_changes.paths``). Only ``devices import``, ``submit`` and ``demo`` create a database.
The reading commands (``list``, ``status``, ``wait``, ``export``, ``send``) import neither
dagster nor pandas, and ``send`` not even SQLAlchemy (``db.dbapi``): each answers in a
fraction of a second.

Exit status: 0 done; 1 not found, or (``wait``) a bulk change ended with errors or was
cancelled; 2 the request or the command is wrong; 3 stored but the queue did not take it
yet, or (``wait``) not final before the timeout; 4 the AMOP database or the queue is
missing or unreachable.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bulk_changes.domain.errors import BulkChangeError

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_NOT_YET = 3
EXIT_UNAVAILABLE = 4


class CliError(Exception):
    """A refusal the user can act on: the message says what to do next."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _resources() -> dict[str, Any]:
    from bulk_changes.environments import resources_for_cli

    return resources_for_cli()


def _tenant_settings() -> Any:
    """The tenants and accounts, from the file the resources read (without importing
    dagster, which the resources need: a second of start-up for `submit`)."""
    from bulk_changes.tenant_file import load_settings

    path = os.environ.get("BULK_CHANGES_TENANTS") or None
    if path is None and os.environ.get("BULK_CHANGES_ENV", "local") == "production":
        raise CliError(
            "BULK_CHANGES_TENANTS is not set: in production it names the tenants-and-accounts "
            "file; set it (see docs/production.md)"
        )
    return load_settings(path)


# ---- the AMOP database --------------------------------------------------------------------

_ENGINES: dict[str, Any] = {}


def _refuse_missing_file(url: str) -> None:
    """A taken-away SQLite file is refused with its path, never replaced by an empty one."""
    from bulk_changes.paths import sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise CliError(
            f"no AMOP database at {path}. Create one with `bulk-changes devices import FILE "
            "--tenant T` or `bulk-changes submit`, start `bulk-changes demo`, or point "
            "BULK_CHANGES_DB_URL (or BULK_CHANGES_HOME) at an existing one",
            EXIT_UNAVAILABLE,
        )


def _engine(create: bool = False) -> Any:
    """The AMOP database's engine. Without ``create`` a missing database is refused with
    its path (a taken-away SQLite file is never silently replaced by an empty one)."""
    from bulk_changes.paths import default_database_url, redacted_url

    url = default_database_url()
    if url in _ENGINES:
        return _ENGINES[url]
    if not create:
        _refuse_missing_file(url)
    from sqlalchemy.exc import SQLAlchemyError

    from bulk_changes.db.engine import make_short_lived_engine
    from bulk_changes.db.schema import LATEST, current_version, upgrade

    engine = make_short_lived_engine(url)
    try:
        with engine.connect() as conn:
            version = current_version(conn)
        if version == 0 and not create:
            raise CliError(
                f"{redacted_url(url)} holds no AMOP tables. Create them with `bulk-changes "
                "devices import FILE --tenant T` or `bulk-changes submit`, or point "
                "BULK_CHANGES_DB_URL at the right database",
                EXIT_UNAVAILABLE,
            )
        if version < LATEST:
            upgrade(engine)
    except SQLAlchemyError as exc:
        raise CliError(
            f"cannot open the AMOP database {redacted_url(url)}: {_first_line(exc)}. "
            "Check that it is running and that BULK_CHANGES_DB_URL is right",
            EXIT_UNAVAILABLE,
        ) from exc
    _ENGINES[url] = engine
    return engine


def _connector() -> Any:
    """A connection factory for the AMOP database through the driver alone (no SQLAlchemy:
    a fifth of a second of start-up), after the same refusals as ``_engine``: a missing
    SQLite file, a database without the AMOP tables, an unreachable server. A database
    whose schema is older than this version's goes through ``_engine``, which upgrades it."""
    from bulk_changes.db.dbapi import connector, opened, schema_version
    from bulk_changes.db.schema_version import LATEST
    from bulk_changes.paths import default_database_url, redacted_url

    url = default_database_url()
    _refuse_missing_file(url)
    connect = connector(url)
    try:
        with opened(connect) as conn:
            version = schema_version(conn)
    except Exception as exc:
        raise CliError(
            f"cannot open the AMOP database {redacted_url(url)}: {_first_line(exc)}. "
            "Check that it is running and that BULK_CHANGES_DB_URL is right",
            EXIT_UNAVAILABLE,
        ) from exc
    if version < LATEST:
        _engine()  # refuses a database without tables; upgrades an older one
    return connect


def _repository(create: bool = False) -> Any:
    from bulk_changes.db.repository import Repository

    return Repository(_engine(create))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- the queue ----------------------------------------------------------------------------


def _queue_sender() -> Any:
    """A function sending one message body to the bulk-change queue, set up as the
    resources set up ``SqsQueue`` but with botocore alone: dagster costs a second to import,
    and boto3 adds a tenth of one for nothing a client needs. A local queue that does not
    exist yet is created through ``SqsQueue``."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    production = os.environ.get("BULK_CHANGES_ENV", "local") == "production"
    endpoint = (
        None
        if production
        else os.environ.get("BULK_CHANGES_SQS_ENDPOINT") or "http://127.0.0.1:9324"
    )
    name = os.environ.get("BULK_CHANGES_QUEUE") or "bulk-changes"
    client_args: dict[str, Any] = {
        "region_name": os.environ.get("AWS_REGION" if production else "AWS_DEFAULT_REGION")
        or "us-east-1"
    }
    if not production:
        # the local server accepts any credentials; these are not secrets
        client_args.update(aws_access_key_id="testing", aws_secret_access_key="testing")
    client = botocore.session.get_session().create_client(
        "sqs",
        endpoint_url=endpoint,
        # Two tries in all (botocore's "max_attempts" counts the retries: it made three,
        # with 2.5 s of back-off), 1 s to connect: a queue that is down is said in about a
        # second. The message is not lost meanwhile: the outbox row waits for the sensor.
        config=Config(
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=1,
        ),
        **client_args,
    )
    where = endpoint or f"Amazon SQS ({client_args['region_name']})"
    urls: dict[str, str] = {}

    def send(body: dict[str, Any]) -> str:
        text = json.dumps(body, separators=(",", ":"))
        try:
            if "url" not in urls:
                try:
                    urls["url"] = client.get_queue_url(QueueName=name)["QueueUrl"]
                except ClientError as exc:
                    if production or "NonExistentQueue" not in str(exc):
                        raise
                    return str(_resources()["queue"].send(body))  # creates the local queue
            return str(client.send_message(QueueUrl=urls["url"], MessageBody=text)["MessageId"])
        except (BotoCoreError, ClientError) as exc:
            raise CliError(
                f"the queue {name!r} at {where} did not take the message: {_first_line(exc)}. "
                "Start it (`bulk-changes queue serve-local`, or `bulk-changes demo`) or set "
                "BULK_CHANGES_SQS_ENDPOINT",
                EXIT_UNAVAILABLE,
            ) from exc

    return send


def cmd_devices_import(args: argparse.Namespace) -> int:
    from bulk_changes.intake import import_inventory, read_inventory_file

    settings = _tenant_settings()
    settings.tenant(args.tenant)
    inserted, updated = import_inventory(_repository(create=True), args.tenant, args.file, settings)
    print(
        f"imported {inserted + updated} devices for tenant {args.tenant}: {inserted} new, {updated} updated"
    )
    if args.simulators:
        from bulk_changes.simulators.seeding import seed_running_simulators

        rows = read_inventory_file(args.file)  # checked by the import above
        counts = seed_running_simulators(
            [{**r, "tenant": args.tenant} for r in rows], _simulator_urls()
        )
        print(
            "told the running simulators: "
            + ", ".join(f"{system} {n}" for system, n in counts.items())
        )
    return 0


def _simulator_urls() -> dict[str, str]:
    """The simulators' base addresses, as the API resources find them."""
    return {
        "jasper": os.environ.get("BULK_CHANGES_JASPER_URL") or "http://127.0.0.1:8101/rws/api/v1",
        "telegence": os.environ.get("BULK_CHANGES_TELEGENCE_URL") or "http://127.0.0.1:8102",
        "revio": os.environ.get("BULK_CHANGES_REVIO_URL") or "http://127.0.0.1:8103/v1",
    }


def cmd_submit(args: argparse.Namespace) -> int:
    from bulk_changes.db.queue_outbox import send_one
    from bulk_changes.domain.change_types import parse_change_type, parse_integration
    from bulk_changes.intake import (
        NoValidRows,
        SubmitRequest,
        plan_bulk_change,
        read_request_file,
        submit_bulk_change,
    )

    change_type = parse_change_type(args.type)
    integration = parse_integration(args.integration)
    rows = read_request_file(args.file, change_type, integration)
    settings = _tenant_settings()
    request = SubmitRequest(
        tenant=args.tenant,
        change_type=change_type.value,
        integration=integration.value,
        rows=rows,
        notify=args.notify or [],
        idempotency_key=args.idempotency_key,
        requested_by=args.requested_by or getpass.getuser(),
        source="cli",
    )
    if args.dry_run:
        # reads the database if there is one; creates nothing
        return _dry_run(plan_bulk_change(_dry_run_repository(), settings, request), args)
    repo = _repository(create=True)
    try:
        result = submit_bulk_change(repo, settings, request, enqueue=not args.no_send)
    except NoValidRows as exc:
        if args.json:
            print(json.dumps({"id": None, "accepted": 0, "rejected": exc.rejected}))
        raise
    sent_error = None
    if not args.no_send:
        # Sent even when the idempotency key found an existing bulk change: the run key
        # makes a repeated message start no second run, and a lost first send is repaired.
        # The quick sender (two tries, 3 s to connect): a queue that is down is said in
        # seconds, not after the resource's five tries with back-off (12 s measured).
        try:
            send_one(repo.engine.raw_connection, result.id, _queue_sender())
        except (BulkChangeError, CliError) as exc:
            sent_error = str(exc)
    if args.json:
        print(json.dumps({**result.as_json(), "queued": not args.no_send and sent_error is None}))
    else:
        state = "stored" if result.created else "already stored (same idempotency key)"
        print(
            f"bulk change {result.id} {state}: {result.accepted} accepted, {len(result.rejected)} rejected"
        )
        for item in result.rejected:
            line = f" (line {item['line']})" if "line" in item else ""
            print(f"  row {item['row']}{line}: {item['field']}: {item['reason']}")
        if not args.no_send and sent_error is None:
            print(f"sent to the queue; follow it with: bulk-changes wait {result.id}")
        elif args.no_send:
            print(f"not sent (--no-send); send it with: bulk-changes send {result.id}")
    if sent_error is not None:
        print(
            f"bulk-changes: bulk change {result.id} is stored but the queue did not take it "
            f"({sent_error}). It is not lost: the queue sensor sends it once the queue is back, "
            f"or send it yourself with: bulk-changes send {result.id}",
            file=sys.stderr,
        )
        return EXIT_NOT_YET
    return 0


def _dry_run_repository() -> Any:
    """The database for a dry run: the existing one, else an empty one in memory (every
    device then shows as not in the inventory). A dry run never creates a file."""
    from bulk_changes.paths import default_database_url, sqlite_path

    path = sqlite_path(default_database_url())
    if path is not None and not path.exists():
        from bulk_changes.db.engine import make_engine
        from bulk_changes.db.repository import Repository
        from bulk_changes.db.schema import upgrade

        engine = make_engine("sqlite://")
        upgrade(engine)
        return Repository(engine)
    return _repository()


def _dry_run(planned: Any, args: argparse.Namespace) -> int:
    from bulk_changes.domain.outcomes import inventory_changes, previous_values
    from bulk_changes.domain.state_machine import DeviceStatus
    from bulk_changes.domain.step_plans import plan_for
    from bulk_changes.intake import SubmitResult

    if isinstance(planned, SubmitResult):
        print(
            f"dry run: the idempotency key names bulk change {planned.id}, stored already; "
            f"submitting would only send it again. See it with: bulk-changes status {planned.id}"
        )
        return 0
    devices = []
    for change in planned.changes:
        if change.status is DeviceStatus.ERROR:
            devices.append(
                {
                    "row": change.row_number,
                    "device": change.device_key,
                    "valid": False,
                    "reason": f"{change.error_field}: {change.error}",
                }
            )
            continue
        new = inventory_changes(planned.change_type, change.request)
        current = previous_values(new, planned.inventory[change.device_key])
        devices.append(
            {
                "row": change.row_number,
                "device": change.device_key,
                "valid": True,
                "steps": [
                    step.description
                    for step in plan_for(planned.change_type, planned.integration, change.request)
                ],
                "current": {k: v for k, v in current.items()},
                "new": new,
            }
        )
    valid = sum(d["valid"] for d in devices)
    if args.json:
        print(json.dumps({"dry_run": True, "valid": valid, "devices": devices}, default=str))
    else:
        print(
            f"dry run: {planned.change_type.value} on {planned.integration.value} for tenant "
            f"{planned.tenant_id}: {valid} device(s) would change, {len(devices) - valid} refused;"
            " nothing stored or sent"
        )
        for d in devices:
            if not d["valid"]:
                print(f"  row {d['row']:>5}  {d['device'] or '-':<20}  refused: {d['reason']}")
                continue
            change = ", ".join(
                f"{field} {_shown(d['current'].get(field))} -> {_shown(value)}"
                for field, value in d["new"].items()
            )
            print(f"  row {d['row']:>5}  {d['device']:<20}  {change}")
            print(f"  {'':>9}  steps: {'; '.join(d['steps'])}")
    return 0 if valid else EXIT_USAGE


def _shown(value: Any) -> str:
    return "(empty)" if value in (None, "") else str(value)


def cmd_status(args: argparse.Namespace) -> int:
    from bulk_changes.domain.messages import MAX_BULK_CHANGE_ID
    from bulk_changes.status_report import format_text, status_of

    # An id no database column holds (SQLite raised OverflowError past 2**63 - 1).
    in_range = 1 <= args.id <= MAX_BULK_CHANGE_ID
    report = status_of(_repository(), args.id, args.devices) if in_range else None
    if report is None:
        raise CliError(_not_found(args.id), EXIT_NOT_FOUND)
    print(
        json.dumps(report, default=str, indent=None if args.json else 2)
        if args.json
        else format_text(report)
    )
    return 0


def _bulk_change(repo: Any, bulk_change_id: int) -> Any:
    """The bulk change, or None (also for an id no database column holds)."""
    from bulk_changes.domain.messages import MAX_BULK_CHANGE_ID

    if not 1 <= bulk_change_id <= MAX_BULK_CHANGE_ID:
        return None
    return repo.get_bulk_change(bulk_change_id)


def _not_found(bulk_change_id: int) -> str:
    return f"no bulk change {bulk_change_id} in this AMOP database; see the ones there with: bulk-changes list"


def cmd_list(args: argparse.Namespace) -> int:
    from bulk_changes.status_report import format_list, list_bulk_changes

    since = None
    if args.since:
        from datetime import UTC, datetime

        try:
            since = datetime.fromisoformat(args.since)
        except ValueError as exc:
            raise CliError(
                f"--since {args.since!r}: not a date; give one like 2026-12-01 or 2026-12-01T08:00"
            ) from exc
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    rows = list_bulk_changes(
        _engine(), tenant=args.tenant, status=args.status, since=since, limit=args.limit
    )
    print(json.dumps(rows) if args.json else format_list(rows))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from bulk_changes.domain.state_machine import FINAL_BULK

    final = {s.value for s in FINAL_BULK}
    repo = _repository()
    missing = [i for i in args.ids if _bulk_change(repo, i) is None]
    if missing:
        raise CliError(
            f"no bulk change {', '.join(map(str, missing))} in this AMOP database; "
            "see the ones there with: bulk-changes list",
            EXIT_NOT_FOUND,
        )
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    outcome: dict[int, str] = {}
    while True:
        for bulk_id in args.ids:
            if bulk_id in outcome:
                continue
            bulk = repo.get_bulk_change(bulk_id)
            if bulk.status in final:
                outcome[bulk_id] = bulk.status
                counts = ", ".join(f"{k} {v}" for k, v in sorted(repo.counts(bulk_id).items()))
                if args.json:
                    print(json.dumps({"id": bulk_id, "status": bulk.status}), flush=True)
                else:
                    print(f"bulk change {bulk_id}: {bulk.status} ({counts})", flush=True)
        if len(outcome) == len(args.ids):
            break
        if deadline is not None and time.monotonic() >= deadline:
            waiting = [i for i in args.ids if i not in outcome]
            print(
                f"bulk-changes: not final after {args.timeout:g} s: {', '.join(map(str, waiting))}; "
                "wait again, or look with: bulk-changes status ID --devices",
                file=sys.stderr,
            )
            return EXIT_NOT_YET
        time.sleep(args.interval)
    return 0 if all(s == "PROCESSED" for s in outcome.values()) else 1


def cmd_send(args: argparse.Namespace) -> int:
    from bulk_changes.db.dbapi import fetch, opened
    from bulk_changes.db.queue_outbox import send_one

    connect = _connector()
    with opened(connect) as conn:
        rows = fetch(conn, "SELECT status FROM bulk_changes WHERE id = :id", {"id": args.id})
    if not rows:
        raise CliError(_not_found(args.id), EXIT_NOT_FOUND)
    message_id = send_one(connect, args.id, _queue_sender())
    print(f"bulk change {args.id} ({rows[0][0]}) sent to the queue as message {message_id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bulk_changes.status_report import export_table, write_export

    engine = _engine()
    from bulk_changes.db.repository import Repository

    if _bulk_change(Repository(engine), args.id) is None:
        raise CliError(_not_found(args.id), EXIT_NOT_FOUND)
    target = args.output or Path(f"bulk-change-{args.id}.{args.format}")
    table = export_table(engine, args.id)
    write_export(table, target, args.format)
    print(f"exported {len(table.rows)} device(s) of bulk change {args.id} to {target}")
    return 0


def _dispatcher(res: dict[str, Any]) -> Any:
    import os

    return res["notifier"].dispatcher(holder=f"cli:{os.getpid()}")


def _delivery_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event.event_id,
        "type": d.event.type,
        "bulk_change_id": d.event.bulk_change_id,
        "tenant": d.event.tenant_id,
        "channel": d.channel,
        "target": d.target.split("?", 1)[0] if d.channel == "webhook" else d.target,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "failed_at": d.failed_at.isoformat() if d.failed_at else None,
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
    }


def cmd_retry(args: argparse.Namespace) -> int:
    from bulk_changes.operator_actions import retry

    code, text = retry(_repository(), _queue_sender(), args.id)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    from bulk_changes.operator_actions import cancel

    code, text = cancel(_repository(), args.id, args.wait)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def cmd_webhooks_failed(args: argparse.Namespace) -> int:
    from bulk_changes.db.outbox import Outbox

    failed = Outbox(_engine()).failed("webhook")
    rows = [_delivery_json(d) for d in failed]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no failed webhook deliveries")
        return 0
    for r in rows:
        print(
            f"{r['id']:>6}  {r['event_id']}  {r['type']:<26} bulk change {r['bulk_change_id']} "
            f"({r['tenant']})  {r['target']}  {r['attempts']} attempt(s), failed {r['failed_at']}"
            f"\n        last error: {r['last_error']}"
        )
    print(f"{len(rows)} failed; send one again with: bulk-changes webhooks redeliver ID")
    return 0


def cmd_webhooks_redeliver(args: argparse.Namespace) -> int:
    _engine()  # refuses a missing database before the resources would create one
    res = _resources()
    dispatcher = _dispatcher(res)
    # ASCII digits within a database integer: '³'.isdigit() is true and int('³') fails,
    # and SQLite raised OverflowError past 2**63 - 1.
    if args.id.isascii() and args.id.isdigit() and int(args.id) < 2**63:
        found = dispatcher.outbox.get(int(args.id))
        deliveries = [found] if found else []
    else:
        deliveries = dispatcher.outbox.by_event_id(args.id)
    deliveries = [d for d in deliveries if d.channel == "webhook"]
    if not deliveries:
        print(f"no webhook delivery {args.id}", file=sys.stderr)
        return 1
    code = 0
    for delivery in deliveries:
        outcome, after = dispatcher.redeliver(delivery)
        row = _delivery_json(after)
        if args.json:
            print(json.dumps({"outcome": outcome, **row}))
        else:
            print(
                f"delivery {row['id']} ({row['event_id']}, {row['type']}) to {row['target']}: "
                f"{outcome}, now {row['status']}"
                + (f"; error: {row['last_error']}" if outcome != "delivered" else "")
            )
        code = code or (0 if outcome == "delivered" else 1)
    return code


def cmd_webhooks_secret(args: argparse.Namespace) -> int:
    from bulk_changes.domain.webhook_signing import generate_secret

    print(generate_secret())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from bulk_changes.simulators import serve_forever

    serve_forever(args)
    return 0


def cmd_queue_create(args: argparse.Namespace) -> int:
    urls = _resources()["queue"].ensure_queues()
    print(json.dumps(urls, indent=2))
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from bulk_changes.resources.dead_letters import list_dead_letters

    queue = _resources()["queue"]
    letters = list_dead_letters(queue, args.limit)
    if args.json:
        print(json.dumps([letter.as_json() for letter in letters]))
        return 0
    print(f"{len(letters)} message(s) in the dead-letter queue {queue.dead_letter_queue_name}")
    for letter in letters:
        received = "?" if letter.receive_count is None else str(letter.receive_count)
        print(
            f"\n{letter.message_id}  original {letter.original_message_id}  "
            f"received {received} time(s)  dead-lettered by {letter.dead_lettered_by}"
            + (f" at {letter.sent_at}" if letter.sent_at else "")
        )
        print(f"  reason: {letter.reason}")
        if letter.attributes:
            print(f"  attributes: {json.dumps(letter.attributes, sort_keys=True)}")
        body = letter.body if len(letter.body) <= 300 else letter.body[:299] + "\u2026"
        print(f"  body: {body}")
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from bulk_changes.resources.dead_letters import redrive

    if args.all == bool(args.message_ids):
        print("bulk-changes: give --all or message ids (not both)", file=sys.stderr)
        return 2
    queue = _resources()["queue"]
    result = redrive(queue, None if args.all else list(args.message_ids))
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        for letter, new_id in result.redriven:
            print(f"redriven {letter.message_id} -> {queue.queue_name} as {new_id}")
        print(f"{len(result.redriven)} message(s) sent back to {queue.queue_name}")
        for missing in result.not_found:
            print(f"not in the dead-letter queue: {missing}", file=sys.stderr)
    return 1 if result.not_found else 0


def cmd_local_sqs(args: argparse.Namespace) -> int:
    import os

    # moto's own server command: the same SQS protocol the tests speak.
    os.execv(
        sys.executable, [sys.executable, "-m", "moto.server", "-H", args.host, "-p", str(args.port)]
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bulk_changes.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulk-changes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    devices = sub.add_parser("devices", help="the AMOP inventory")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    imp = devices_sub.add_parser("import", help="import or update devices from a CSV or .xlsx file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--tenant", required=True)
    imp.add_argument(
        "--simulators",
        action="store_true",
        help="also load the devices into the running simulators (POST /_sim/seed)",
    )
    imp.set_defaults(func=cmd_devices_import)

    submit = sub.add_parser(
        "submit", help="store a bulk change from a CSV, .xlsx or JSON file and queue it"
    )
    submit.add_argument("file", type=Path)
    submit.add_argument("--tenant", required=True)
    submit.add_argument(
        "--type",
        required=True,
        help="username_cost_center, device_status, carrier_rate_plan, equipment",
    )
    submit.add_argument("--integration", required=True, help="jasper or telegence")
    submit.add_argument(
        "--notify", action="append", help="an address to tell when it is final (repeatable)"
    )
    submit.add_argument("--idempotency-key")
    submit.add_argument("--requested-by")
    submit.add_argument("--json", action="store_true")
    submit.add_argument(
        "--no-send", action="store_true", help="store only; send it later with `send ID`"
    )
    submit.add_argument(
        "--dry-run",
        action="store_true",
        help="check it and show per device the steps, current and new values; store nothing",
    )
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="a bulk change's status, counts, runs and devices")
    status.add_argument("id", type=int)
    status.add_argument("--json", action="store_true")
    status.add_argument("--devices", action="store_true")
    status.set_defaults(func=cmd_status)

    listing = sub.add_parser("list", help="bulk changes, newest first, with their counts")
    listing.add_argument("--tenant")
    listing.add_argument("--status", help="NEW, PROCESSING, PROCESSED, PROCESSED_WITH_ERRORS...")
    listing.add_argument("--since", help="created on or after this date (2026-12-01[T08:00])")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    wait = sub.add_parser(
        "wait",
        help="wait until the bulk changes are final; exit 0 all PROCESSED, 1 some not, 3 timeout",
    )
    wait.add_argument("ids", type=int, nargs="+", metavar="ID")
    wait.add_argument("--timeout", type=float, help="seconds (default: no limit)")
    wait.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    wait.add_argument("--json", action="store_true")
    wait.set_defaults(func=cmd_wait)

    send = sub.add_parser("send", help="send a stored bulk change to the queue (again)")
    send.add_argument("id", type=int)
    send.set_defaults(func=cmd_send)

    export = sub.add_parser(
        "export", help="every device's result with previous and new values, as CSV or .xlsx"
    )
    export.add_argument("id", type=int)
    export.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    export.add_argument("--output", type=Path, help="default: bulk-change-ID.FORMAT here")
    export.set_defaults(func=cmd_export)

    retry = sub.add_parser(
        "retry", help="retry a final bulk change's API_FAILED devices (a run with its tags)"
    )
    retry.add_argument("id", type=int)
    retry.set_defaults(func=cmd_retry)

    cancel = sub.add_parser(
        "cancel", help="stop a bulk change: terminate its runs, the rest of its devices CANCELLED"
    )
    cancel.add_argument("id", type=int)
    cancel.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for its run to record the stop"
    )
    cancel.set_defaults(func=cmd_cancel)

    webhooks = sub.add_parser("webhooks", help="webhook deliveries")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    failed = webhooks_sub.add_parser(
        "failed", help="webhook deliveries that failed for good (after 24 hours of retries)"
    )
    failed.add_argument("--json", action="store_true")
    failed.set_defaults(func=cmd_webhooks_failed)
    redeliver = webhooks_sub.add_parser(
        "redeliver", help="send a webhook delivery again now (same webhook-id)"
    )
    redeliver.add_argument("id", help="a delivery id (from 'failed' or 'status'), or an event id")
    redeliver.add_argument("--json", action="store_true")
    redeliver.set_defaults(func=cmd_webhooks_redeliver)
    secret = webhooks_sub.add_parser("new-secret", help="print a new whsec_ secret")
    secret.set_defaults(func=cmd_webhooks_secret)

    simulate = sub.add_parser("simulate", help="serve the Jasper, Telegence and Rev.io simulators")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--jasper-port", type=int, default=8101)
    simulate.add_argument("--telegence-port", type=int, default=8102)
    simulate.add_argument("--revio-port", type=int, default=8103)
    simulate.add_argument(
        "--inventory",
        "--seed-csv",
        dest="seed_csv",
        type=Path,
        help="an inventory CSV (as for `devices import`) to load the simulators with",
    )
    simulate.set_defaults(func=cmd_simulate)

    queue = sub.add_parser("queue", help="the SQS queue")
    queue_sub = queue.add_subparsers(dest="queue_command", required=True)
    create = queue_sub.add_parser("create", help="create the queue and its dead-letter queue")
    create.set_defaults(func=cmd_queue_create)
    local = queue_sub.add_parser("serve-local", help="serve a local SQS-compatible endpoint")
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument("--port", type=int, default=9324)
    local.set_defaults(func=cmd_local_sqs)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: what is there and why; send it back")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser(
        "list",
        help="messages in the dead-letter queue with their reason, original id and receive count",
    )
    dlq_list.add_argument("--json", action="store_true")
    dlq_list.add_argument("--limit", type=int, default=1000)
    dlq_list.set_defaults(func=cmd_dlq_list)
    dlq_redrive = dlq_sub.add_parser(
        "redrive",
        help="send dead letters back to the queue (once their cause is fixed) and delete them",
    )
    dlq_redrive.add_argument(
        "message_ids", nargs="*", metavar="MESSAGE_ID", help="dead-letter or original message id"
    )
    dlq_redrive.add_argument("--all", action="store_true", help="every message in the queue")
    dlq_redrive.add_argument("--json", action="store_true")
    dlq_redrive.set_defaults(func=cmd_dlq_redrive)

    demo = sub.add_parser("demo", help="simulators, local queue, Dagster and sample bulk changes")
    demo.add_argument(
        "--headless", action="store_true", help="no web server; exit when all are final"
    )
    demo.add_argument("--devices", type=int, default=1500, help="devices per tenant")
    demo.add_argument("--timeout", type=float, default=1800.0)
    demo.add_argument(
        "--no-samples",
        action="store_true",
        help="start the stack only (no sample devices or bulk changes) and keep it running",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bulk_changes.paths import load_home_settings

        load_home_settings()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        return _refuse(str(exc), exc.code)
    except (BulkChangeError, ValueError, OSError) as exc:
        return _refuse(str(exc), EXIT_USAGE)
    except Exception as exc:  # no traceback reaches a user: the error and where it happened
        return _refuse(
            f"unexpected {type(exc).__name__}: {_first_line(exc)}. Run again with "
            "BULK_CHANGES_DEBUG=1 for the traceback, and report it",
            EXIT_USAGE,
            debug=True,
        )


def _refuse(message: str, code: int, debug: bool = False) -> int:
    from bulk_changes.paths import describe_home

    if debug and os.environ.get("BULK_CHANGES_DEBUG"):
        import traceback

        traceback.print_exc()
    print(f"bulk-changes: {message}\n  ({describe_home()})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
