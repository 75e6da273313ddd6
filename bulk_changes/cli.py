"""`bulk-changes`: intake, status, simulators, queue and the demo."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from bulk_changes.domain.errors import BulkChangeError


def _resources() -> dict[str, Any]:
    from bulk_changes.environments import resources_for_cli

    return resources_for_cli()


def cmd_devices_import(args: argparse.Namespace) -> int:
    from bulk_changes.intake import import_inventory

    res = _resources()
    settings = res["tenant_config"].settings()
    settings.tenant(args.tenant)
    inserted, updated = import_inventory(
        res["amop_db"].repository(), args.tenant, args.file, settings
    )
    print(
        f"imported {inserted + updated} devices for tenant {args.tenant}: {inserted} new, {updated} updated"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from bulk_changes.domain.change_types import parse_change_type, parse_integration
    from bulk_changes.intake import SubmitRequest, read_request_file, submit_bulk_change

    res = _resources()
    change_type = parse_change_type(args.type)
    integration = parse_integration(args.integration)
    rows = read_request_file(args.file, change_type, integration)
    result = submit_bulk_change(
        res["amop_db"].repository(),
        res["tenant_config"].settings(),
        SubmitRequest(
            tenant=args.tenant,
            change_type=change_type.value,
            integration=integration.value,
            rows=rows,
            notify=args.notify or [],
            idempotency_key=args.idempotency_key,
            requested_by=args.requested_by or getpass.getuser(),
            source="cli",
        ),
    )
    if not args.no_send:
        # Sent even when the idempotency key found an existing bulk change: the run key
        # makes a repeated message start no second run, and a lost first send is repaired.
        res["queue"].send({"bulk_change_id": result.id})
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        state = "stored" if result.created else "already stored (same idempotency key)"
        print(
            f"bulk change {result.id} {state}: {result.accepted} accepted, {len(result.rejected)} rejected"
        )
        for item in result.rejected:
            line = f" (line {item['line']})" if "line" in item else ""
            print(f"  row {item['row']}{line}: {item['field']}: {item['reason']}")
        if not args.no_send:
            print("sent to the queue; follow it with: bulk-changes status", result.id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bulk_changes.domain.messages import MAX_BULK_CHANGE_ID
    from bulk_changes.status_report import format_text, status_of

    # An id no database column holds (SQLite raised OverflowError past 2**63 - 1).
    in_range = 1 <= args.id <= MAX_BULK_CHANGE_ID
    report = (
        status_of(_resources()["amop_db"].repository(), args.id, args.devices) if in_range else None
    )
    if report is None:
        print(f"no bulk change {args.id}", file=sys.stderr)
        return 1
    print(
        json.dumps(report, default=str, indent=None if args.json else 2)
        if args.json
        else format_text(report)
    )
    return 0


def _dispatcher(res: dict[str, Any]) -> Any:
    import os

    from bulk_changes.notify.dispatcher import build_dispatcher

    return build_dispatcher(
        amop_db=res["amop_db"],
        tenant_config=res["tenant_config"],
        mail=res["mail"],
        webhooks=res["webhooks"],
        notifications=res["notifications"],
        holder=f"cli:{os.getpid()}",
    )


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


def cmd_webhooks_failed(args: argparse.Namespace) -> int:
    from bulk_changes.db.outbox import Outbox

    failed = Outbox(_resources()["amop_db"].engine()).failed("webhook")
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
    imp = devices_sub.add_parser("import", help="import or update devices from a CSV")
    imp.add_argument("file", type=Path)
    imp.add_argument("--tenant", required=True)
    imp.set_defaults(func=cmd_devices_import)

    submit = sub.add_parser(
        "submit", help="store a bulk change from a CSV or JSON file and queue it"
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
        "--no-send", action="store_true", help="store only; do not send the queue message"
    )
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="a bulk change's status, counts and devices")
    status.add_argument("id", type=int)
    status.add_argument("--json", action="store_true")
    status.add_argument("--devices", action="store_true")
    status.set_defaults(func=cmd_status)

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
    simulate.add_argument("--seed-csv", type=Path)
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
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (BulkChangeError, ValueError, OSError) as exc:
        print(f"bulk-changes: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
