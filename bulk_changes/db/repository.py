"""The AMOP database as one handle, for the callers that use several of its concerns at
once (the CLI, the ops, intake, the notifications). Each concern lives in a module of its
own; a caller that needs only one takes that class (the stage runner sees only the
``DeviceChangeStore`` port of domain/ports.py)."""

from __future__ import annotations

from bulk_changes.db.audit import AuditTrail
from bulk_changes.db.bulk_changes import BulkChanges
from bulk_changes.db.device_changes import DeviceChanges
from bulk_changes.db.inventory import Inventory
from bulk_changes.db.journal import StepJournal
from bulk_changes.db.reporting import Reports


class Repository(Inventory, BulkChanges, DeviceChanges, StepJournal, AuditTrail, Reports):
    """Reads and writes of the AMOP database. Every state change is one short transaction."""
