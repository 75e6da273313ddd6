"""Who a process is, so that another process on the same host can tell it is dead.

A pid alone is not enough: the kernel gives pids out again. A process is its host, its
pid, its start time (clock ticks after boot, from /proc) and the host's boot id; a
process with the same pid but another start time, or a boot id that changed, is another
process. Used by the run workers' tag (``sensors.run_workers``) and by the account
limiter's slot holders (``db.limiter``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of ``pid``; None when there is none.
    Raises OSError when /proc cannot tell."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # the command name may hold spaces and parentheses: fields resume after the last ')'
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)


def gone_by_signal(pid: int) -> bool | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    except OSError:
        return None
    return False


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    started: int | None  # clock ticks after boot (Linux); None elsewhere
    boot: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        return _current(os.getpid())

    def gone(self) -> bool | None:
        """True: the process no longer exists (or is a zombie, or its pid now belongs to
        another process, or the host restarted). False: it runs. None: this host cannot
        tell (the process is on another host)."""
        if self.host != socket.gethostname():
            return None
        boot = boot_id()
        if self.boot and boot and self.boot != boot:
            return True
        try:
            stat = proc_stat(self.pid)
        except OSError:
            return gone_by_signal(self.pid)
        if stat is None:
            return True
        state, started = stat
        if state in ("Z", "X"):
            return True  # killed, not yet reaped by its parent
        return self.started is not None and started != self.started


@cache
def _current(pid: int) -> ProcessIdentity:
    # keyed by pid: a forked child is another process
    try:
        stat = proc_stat(pid)
    except OSError:
        stat = None
    return ProcessIdentity(socket.gethostname(), pid, stat[1] if stat else None, boot_id())
