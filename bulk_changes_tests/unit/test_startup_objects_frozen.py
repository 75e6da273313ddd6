"""A run worker's start-up objects (imports, definitions) are kept out of the cyclic garbage
collector's walks once its device threads are made: full collections over them were
80-150 ms pauses of every device thread."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import gc
import bulk_changes.definitions
from bulk_changes.processing.runner import device_pool
from bulk_changes.processing.memory import freeze_startup_objects
before = gc.get_freeze_count()
device_pool(2)
after_first = gc.get_freeze_count()
device_pool(2)
print(before, after_first, gc.get_freeze_count(), freeze_startup_objects())
"""


def _run(probe: str) -> str:
    """What a fresh interpreter running ``probe`` prints (the freeze is once per process)."""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


def test_the_first_device_pool_of_a_process_freezes_what_the_process_holds_once() -> None:
    before, after_first, after_second, frozen_again = (int(n) for n in _run(_PROBE).split())
    assert before == 0
    assert after_first > 50_000  # the imports alone: about 150,000 objects (Dagster, ours)
    assert after_second == after_first
    assert frozen_again == 0


_GARBAGE_PROBE = """
import gc, weakref
from bulk_changes.processing.memory import freeze_startup_objects

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
gone = weakref.ref(a)
del a, b
freeze_startup_objects()
print(gone() is None)
"""


def test_garbage_waiting_in_a_cycle_is_collected_not_frozen() -> None:
    assert _run(_GARBAGE_PROBE) == "True"
