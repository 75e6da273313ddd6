"""Keeping a long-lived run worker's resident memory flat (glibc's allocator).

glibc gives threads that allocate at the same moment arenas of their own, up to eight per
core, and keeps what they free for reuse instead of giving it back. A run worker's pool of
device threads allocating and freeing per device then grows the process batch after batch
even though nothing stays referenced. Fewer arenas, and handing free memory back after each
batch, keep it near what one batch needs. Elsewhere (not glibc) both are no-ops.

And Python's cyclic garbage collector: a full collection walks every tracked object, and
a run worker holds some hundreds of thousands from its imports (Dagster, the definitions)
that live as long as it does. Each full collection held the interpreter lock 80-150 ms
(measured), two to four turns of a one-in-flight account; frozen, they are not walked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from functools import cache

_M_ARENA_MAX = -8  # mallopt parameter, <malloc.h>
ARENAS = 2

_limited = False
_frozen = False
_lock = threading.Lock()


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas in this process from now on (once per process,
    before the device threads are made). -> whether the allocator took it."""
    global _limited
    with _lock:
        if _limited:
            return True
        libc = _glibc()
        _limited = bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1)
        return _limited


def give_back_free_memory() -> bool:
    """Return the allocator's free memory to the system (after a batch). -> whether any
    was returned."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def freeze_startup_objects() -> int:
    """Move every object the process holds now (its imports, definitions and resources)
    out of the cyclic collector's reach, once per process, before the first batch: they
    live as long as the process, and walking them made each full collection an 80-150 ms
    pause. Objects made later are collected as before. -> objects frozen (0 if already).

    One full collection first: garbage still waiting in a cycle (what loading and
    partitioning the bulk change left) would otherwise be frozen with the rest, for good."""
    global _frozen
    with _lock:
        if _frozen:
            return 0
        _frozen = True
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()
