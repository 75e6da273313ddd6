"""Telling the tests of an engine's transactions: SQLAlchemy's (its events) and those on
the driver (db/driver_transactions.py), alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from bulk_changes.db.driver_transactions import listen


def tell_transactions(
    engine: Engine, what: str, listener: Callable[..., Any]
) -> Callable[[], None]:
    """``listener`` called at every ``what`` ("begin", "commit" or "rollback") of
    ``engine``'s transactions (with SQLAlchemy's Connection, or None for a transaction on
    the driver) until the function returned is called."""
    event.listen(engine, what, listener)
    stop_listening = listen(engine, lambda told: listener(None) if told == what else None)

    def stop() -> None:
        stop_listening()
        event.remove(engine, what, listener)

    return stop
