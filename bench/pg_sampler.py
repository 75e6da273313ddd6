"""PostgreSQL seen from the benchmark: the connections to the benchmark's databases at
peak (pg_stat_activity, sampled), how long their transactions stay open, and the CPU the
server spends.

The server is shared (other tests may use it at the same time), so two CPU figures: the
whole server's (every postgres process, exited backends included: the postmaster reaps
them into its children's CPU), and the statement time PostgreSQL counts for the
benchmark's own databases (pg_stat_database.active_time, wall-clock milliseconds spent
executing statements), with the sessions opened on them (each one a backend started).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

TICKS = os.sysconf("SC_CLK_TCK")

_ACTIVITY = text(
    """
    SELECT datname, coalesce(application_name, '') AS app, coalesce(state, '') AS state,
           count(*) AS n,
           coalesce(max(extract(epoch FROM now() - xact_start)), 0) AS longest_xact
    FROM pg_stat_activity
    WHERE datname = ANY(:names) AND pid <> pg_backend_pid()
    GROUP BY 1, 2, 3
    """
)
_DATABASES = text(
    """
    SELECT datname, sessions, active_time, idle_in_transaction_time, xact_commit
    FROM pg_stat_database WHERE datname = ANY(:names)
    """
)


def _postgres_cpu_seconds() -> float:
    """CPU of every postgres process now, plus that of the backends already gone (the
    postmaster's reaped children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid, own = int(fields[1]), int(fields[11]) + int(fields[12])
        try:
            parent_is_postgres = Path(f"/proc/{ppid}/comm").read_text().strip() == "postgres"
        except OSError:
            parent_is_postgres = False
        if not parent_is_postgres:  # the postmaster: its reaped children count too
            own += int(fields[13]) + int(fields[14])
        total += own / TICKS
    return total


class PgSampler:
    """Samples pg_stat_activity for ``databases`` every ``interval`` seconds."""

    def __init__(self, admin_url: str, databases: list[str], interval: float = 0.25) -> None:
        self.databases = list(databases)
        self.interval = interval
        self._engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.peak_total = 0
        self.peak_by_database: dict[str, int] = defaultdict(int)
        self.peak_by_app: dict[str, int] = defaultdict(int)
        self.peak_idle_in_transaction = 0
        self.longest_transaction_s = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start: dict[str, Any] = {}

    def start(self) -> PgSampler:
        self._start = self._counters()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        end = self._counters()
        self._engine.dispose()
        start = self._start
        by_db = {}
        for name in self.databases:
            before, after = start["db"].get(name), end["db"].get(name)
            if not before or not after:
                continue
            by_db[name] = {
                "sessions_opened": int(after["sessions"] - before["sessions"]),
                "statement_seconds": round(
                    (after["active_time"] - before["active_time"]) / 1000, 1
                ),
                "idle_in_transaction_seconds": round(
                    (after["idle_in_transaction_time"] - before["idle_in_transaction_time"]) / 1000,
                    1,
                ),
                "commits": int(after["xact_commit"] - before["xact_commit"]),
            }
        return {
            "peak_connections": self.peak_total,
            "peak_connections_by_database": dict(self.peak_by_database),
            "peak_connections_by_application": dict(self.peak_by_app),
            "peak_idle_in_transaction": self.peak_idle_in_transaction,
            "longest_transaction_seen_s": round(self.longest_transaction_s, 2),
            "server_cpu_seconds": round(end["cpu"] - start["cpu"], 1),
            "databases": by_db,
            "samples": self.samples,
        }

    def _counters(self) -> dict[str, Any]:
        with self._engine.connect() as conn:
            rows = conn.execute(_DATABASES, {"names": self.databases}).mappings().all()
        return {"db": {r["datname"]: dict(r) for r in rows}, "cpu": _postgres_cpu_seconds()}

    def sample(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(_ACTIVITY, {"names": self.databases}).mappings().all()
        total = 0
        by_db: dict[str, int] = defaultdict(int)
        by_app: dict[str, int] = defaultdict(int)
        idle_in_tx = 0
        for r in rows:
            total += r["n"]
            by_db[r["datname"]] += r["n"]
            by_app[r["app"] or "?"] += r["n"]
            if r["state"].startswith("idle in transaction"):
                idle_in_tx += r["n"]
            self.longest_transaction_s = max(self.longest_transaction_s, float(r["longest_xact"]))
        self.peak_total = max(self.peak_total, total)
        for name, n in by_db.items():
            self.peak_by_database[name] = max(self.peak_by_database[name], n)
        for name, n in by_app.items():
            self.peak_by_app[name] = max(self.peak_by_app[name], n)
        self.peak_idle_in_transaction = max(self.peak_idle_in_transaction, idle_in_tx)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sample missed is not a benchmark failed
                continue
