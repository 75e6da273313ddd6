"""What the ops of ``process_bulk_change`` hand each other: small, typed, immutable.

Each is pickled by the step output store (``resources.step_outputs``) between steps, and
read back when a re-execution skips the step that wrote it, so it carries identifiers and
the bulk change's own row, never a secret (no tenant, no account: those are read from the
tenants file where they are used).
"""

from __future__ import annotations

from dataclasses import dataclass

from bulk_changes.domain.model import BulkChange


@dataclass(frozen=True)
class LoadedBulkChange:
    """The bulk change as this run opened it, and its device changes still to do.

    ``bulk`` is read once, by ``load_device_changes``: its id, tenant, type and integration
    never change; its status moves on in the AMOP database, which the ops read for it."""

    bulk: BulkChange
    device_change_ids: tuple[int, ...]

    @property
    def bulk_change_id(self) -> int:
        return self.bulk.id


@dataclass(frozen=True)
class DeviceBatch:
    """Device changes of one bulk change that one mapped step works on."""

    bulk: BulkChange
    device_change_ids: tuple[int, ...]

    @property
    def bulk_change_id(self) -> int:
        return self.bulk.id


def batches_of(loaded: LoadedBulkChange, size: int) -> list[DeviceBatch]:
    """Batches of at most ``size`` in order; one empty batch when there is nothing to do,
    so the run always reaches finalize."""
    ids = loaded.device_change_ids
    size = max(1, size)
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [()]
    return [DeviceBatch(loaded.bulk, chunk) for chunk in chunks]
