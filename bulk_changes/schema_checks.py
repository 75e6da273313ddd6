"""Dagster's schedule storage asks once whether a table or an index it needs exists.

Dagster's schedule storage (sensor states and ticks, on SQLite or PostgreSQL) asks the
database whether its ``instigators`` and ``secondary_indexes`` tables exist, and whether
a data migration was recorded, before nearly every statement: several times in every
sensor tick and in every sensor loop (every 5 s), each time on a connection of its own
(a new SQLite connection, or a new PostgreSQL one: dagster-postgres keeps no pool).
Once a table or a migration is there it stays (``dagster instance migrate`` adds them;
nothing removes them while a process lives), so ``remember_schema_checks()`` keeps a
storage object's *yes* for the life of the object. A *no* is asked again every time, as
before, so a migration run meanwhile is seen at once.

Used by ``bulk_changes.daemon`` (its instance lives as long as the daemon) and
``bulk_changes.code_server``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

# the schedule storage's checks that take no argument but the storage, and the one that
# takes the migration's name
CHECKS = ("has_instigators_table", "has_secondary_index_table")
NAMED_CHECK = "has_built_index"
KNOWN_ATTR = "_bulk_changes_known_schema"


def remember_yes(check: Callable[..., bool]) -> Callable[..., bool]:
    """``check(storage, *args)``, asked again only until it has answered True."""
    if getattr(check, "_bulk_changes_remembers", False):
        return check

    @functools.wraps(check)
    def remembered(storage: Any, *args: Any) -> bool:
        key = (check.__name__, *args)
        known: set[Any] | None = getattr(storage, KNOWN_ATTR, None)
        if known is not None and key in known:
            return True
        answer = bool(check(storage, *args))
        if answer:
            if known is None:
                known = set()
                try:
                    setattr(storage, KNOWN_ATTR, known)
                except AttributeError:  # an object that takes no attributes: ask each time
                    return answer
            known.add(key)
        return answer

    remembered._bulk_changes_remembers = True  # type: ignore[attr-defined]
    return remembered


def remember_schema_checks() -> None:
    """Make Dagster's SQL schedule storage remember each schema check that said yes."""
    from bulk_changes.dagster_private import SqlScheduleStorage

    for name in (*CHECKS, NAMED_CHECK):
        setattr(SqlScheduleStorage, name, remember_yes(getattr(SqlScheduleStorage, name)))
