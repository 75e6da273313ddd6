"""Tables of the AMOP database and the upgrades that bring any copy to the newest."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)

from bulk_changes.db.utc_datetime import UtcDateTime
from bulk_changes.domain.clock import utc_now

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", UtcDateTime(), nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("integration", String(16), nullable=False),
    # iccid for jasper, msisdn for telegence: how requests name the device
    Column("device_key", String(32), nullable=False),
    Column("iccid", String(20)),
    Column("msisdn", String(15)),
    Column("imei", String(15)),
    Column("status", String(32)),
    Column("rate_plan", String(128)),
    Column("communication_plan", String(128)),
    Column("username", String(255)),
    Column("cost_center_1", String(255)),
    Column("cost_center_2", String(255)),
    Column("cost_center_3", String(255)),
    Column("revio_service_id", Integer),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "integration", "device_key", name="uq_devices_key"),
)

bulk_changes = Table(
    "bulk_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("change_type", String(32), nullable=False),
    Column("integration", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("idempotency_key", String(255)),
    Column("notify", Text, nullable=False, default="[]"),  # JSON list
    Column("requested_by", String(255)),
    Column("source", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("last_run_id", String(64)),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_bulk_changes_idempotency"),
)

device_changes = Table(
    "device_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bulk_change_id", Integer, ForeignKey("bulk_changes.id"), nullable=False),
    Column("row_number", Integer, nullable=False),
    Column("device_key", String(64)),
    Column("device_id", Integer, ForeignKey("devices.id")),
    Column("request", Text, nullable=False),  # JSON: the requested change
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("error_field", String(64)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Index("ix_device_changes_bulk_status", "bulk_change_id", "status"),
)

# One row per step that succeeded: the record that makes re-execution skip it.
completed_steps = Table(
    "completed_steps",
    metadata,
    Column("device_change_id", Integer, ForeignKey("device_changes.id"), primary_key=True),
    Column("step", String(64), primary_key=True),
    Column("completed_at", UtcDateTime(), nullable=False),
    Column("result", Text),  # JSON
)

# Progress inside a step that spans calls (an activation request id to poll).
step_progress = Table(
    "step_progress",
    metadata,
    Column("device_change_id", Integer, ForeignKey("device_changes.id"), primary_key=True),
    Column("step", String(64), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bulk_change_id", Integer, nullable=False),
    Column("device_change_id", Integer),
    Column("step", String(64)),
    Column("system", String(16), nullable=False),
    Column("account", String(64)),
    Column("description", String(255)),
    Column("method", String(8)),
    Column("url", Text),
    Column("request", Text),
    Column("response_status", Integer),
    Column("response", Text),
    Column("duration_ms", Float),
    Column("outcome", String(16), nullable=False),  # ok, retry, throttled, error
    Column("error", Text),
    Column("attempt", Integer),
    Column("run_id", String(64)),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_audit_bulk", "bulk_change_id", "device_change_id"),
)

# The shared call budget of each external account (see db.limiter).
rate_limit_clock = Table(
    "rate_limit_clock",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("next_free_at", Float, nullable=False),
)

rate_limit_slots = Table(
    "rate_limit_slots",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("holder", String(128)),
    Column("expires_at", Float),
)

runs_seen = Table(
    "run_attempts",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("bulk_change_id", Integer, nullable=False),
    Column("retry_failed_only", Boolean, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
)


def _v1_create(conn: Connection) -> None:
    metadata.create_all(conn)


# ---- version 2: the notification outbox ---------------------------------------------------
# Its own MetaData: version 1 creates everything in ``metadata``, and must stay as it was.
outbox_metadata = MetaData()

# One row per notification, written in the transaction of the state change that causes it.
outbox_events = Table(
    "outbox_events",
    outbox_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # order of the events
    Column("event_id", String(64), nullable=False, unique=True),  # webhook-id / Message-ID
    Column("type", String(64), nullable=False),
    Column("bulk_change_id", Integer),
    Column("tenant_id", String(64)),
    Column("payload", Text, nullable=False),  # webhooks: the exact body sent
    Column("dedupe_key", String(255), unique=True),  # e.g. one alert per failed run
    Column("created_at", UtcDateTime(), nullable=False),
    Column("planned_at", UtcDateTime()),  # deliveries created
    Index("ix_outbox_events_bulk", "bulk_change_id", "id"),
    Index("ix_outbox_events_planned", "planned_at"),
)

# One row per event and destination (a webhook endpoint, the mail recipients).
outbox_deliveries = Table(
    "outbox_deliveries",
    outbox_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_row_id", Integer, ForeignKey("outbox_events.id"), nullable=False),
    Column("channel", String(16), nullable=False),  # webhook, email
    Column("target", String(1000), nullable=False),  # endpoint URL, or the addresses
    Column("status", String(16), nullable=False),  # PENDING, DELIVERED, FAILED
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_until", UtcDateTime()),
    Column("last_error", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime()),
    Column("failed_at", UtcDateTime()),
    UniqueConstraint("event_row_id", "channel", "target", name="uq_outbox_delivery"),
    Index("ix_outbox_deliveries_status", "status", "next_attempt_at"),
)

# Every attempt: started before the send, finished after (an attempt left 'sending' was
# interrupted: the receiver may have it, and the retry carries the same event id).
outbox_attempts = Table(
    "outbox_attempts",
    outbox_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, ForeignKey("outbox_deliveries.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("holder", String(128)),  # run id or sensor tick that made it
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("outcome", String(16), nullable=False),  # sending, delivered, failed, interrupted
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float),
    Index("ix_outbox_attempts_delivery", "delivery_id"),
)

# Which device results went out in a device_changes.completed event: each device once.
outbox_device_reports = Table(
    "outbox_device_reports",
    outbox_metadata,
    Column("device_change_id", Integer, primary_key=True),
    Column("event_row_id", Integer, ForeignKey("outbox_events.id"), nullable=False),
)


def _v2_outbox(conn: Connection) -> None:
    outbox_metadata.create_all(conn)


# ---- version 3: waiting callers of the limiter, served oldest first ----------------------
limiter_metadata = MetaData()

# A caller that found no free slot of an account waits here, so that slots go to whoever
# has waited longest across every run and process; otherwise the process that just freed
# a slot takes it again at once, and a small run beside a large one starves.
rate_limit_waiters = Table(
    "rate_limit_waiters",
    limiter_metadata,
    Column("account", String(64), primary_key=True),
    Column("holder", String(128), primary_key=True),
    Column("since", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


def _v3_limiter_waiters(conn: Connection) -> None:
    limiter_metadata.create_all(conn)


# ---- version 4: device changes in row order, a page at a time -----------------------------
# The emails' attachments list every device of a bulk change in row order; they are read
# a page at a time (keyset on row number), not all at once.
ix_device_changes_bulk_row = Index(
    "ix_device_changes_bulk_row", device_changes.c.bulk_change_id, device_changes.c.row_number
)


def _v4_device_changes_row_order(conn: Connection) -> None:
    ix_device_changes_bulk_row.create(conn, checkfirst=True)


# ---- version 5: an idempotency key is bound to the request it was first used with ---------
request_metadata = MetaData()

# A digest of the request's devices (domain.idempotency.request_digest): the same key sent
# again with other devices is refused, not answered with the first bulk change. Bulk
# changes stored before version 5 have no row here, and any repeat of their key matches.
request_digests = Table(
    "request_digests",
    request_metadata,
    Column("bulk_change_id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
)


def _v5_request_digests(conn: Connection) -> None:
    request_metadata.create_all(conn)


# ---- version 6: the database's identity, the queue outbox, device history -----------------
cli_metadata = MetaData()

# One row: this database's own id. Run keys carry it, so that two AMOP databases (the
# demo's and an operator's, a test's) never share a key on one Dagster instance.
amop_identity = Table(
    "amop_identity",
    cli_metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# A bulk change to send to the queue: written in the transaction that stores it, marked
# sent once the queue took it; the queue sensor sends what is left (the queue was down).
queue_outbox = Table(
    "queue_outbox",
    cli_metadata,
    Column("bulk_change_id", Integer, primary_key=True),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    Column("message_id", String(128)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Index("ix_queue_outbox_unsent", "sent_at"),
)

# A device change's earlier outcomes: a retry reopens it, and what the earlier run ended
# with (status, attempts, reason) stays here instead of being overwritten.
device_change_history = Table(
    "device_change_history",
    cli_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_change_id", Integer, nullable=False),
    Column("run_id", String(64)),
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text),
    Column("finished_at", UtcDateTime()),
    Column("reopened_at", UtcDateTime(), nullable=False),
    Index("ix_device_change_history_change", "device_change_id"),
)


def _v6_identity_outbox_history(conn: Connection) -> None:
    import uuid

    cli_metadata.create_all(conn)
    conn.execute(amop_identity.insert().values(id=uuid.uuid4().hex[:12], created_at=utc_now()))


# Each upgrade runs once, in order, and is recorded in schema_version. New versions
# append here (add a column, an index...); never edit an applied one.
UPGRADES: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1_create),
    (2, _v2_outbox),
    (3, _v3_limiter_waiters),
    (4, _v4_device_changes_row_order),
    (5, _v5_request_digests),
    (6, _v6_identity_outbox_history),
]

# the last of these, kept apart for the CLI, which reads it without SQLAlchemy
from bulk_changes.db.schema_version import LATEST as LATEST  # noqa: E402


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(
        select(schema_version.c.version).order_by(schema_version.c.version.desc())
    ).first()
    return int(value[0]) if value else 0


def upgrade(engine: Engine) -> int:
    """Bring the database to the newest schema; safe to call from many processes."""

    # Every process's first use of the database comes here: a database already at the
    # newest schema is only read, so that twenty run workers starting together do not
    # queue on the upgraders' lock, each holding a transaction open while it waits.
    with engine.connect() as conn:
        found = current_version(conn)
    if found >= UPGRADES[-1][0]:
        return found
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # One upgrader at a time across processes.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74210001)")
        version = current_version(conn)
        for number, apply in UPGRADES:
            if number > version:
                apply(conn)
                conn.execute(schema_version.insert().values(version=number, applied_at=utc_now()))
                version = number
    return version
