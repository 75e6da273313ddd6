"""bench.measure.process_tree_peak_rss: the peak resident memory of a process tree."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.measure import process_tree_peak_rss

# a child that holds 80 MB (touched, so resident) for a moment, then exits
_HOLD = "b = bytearray(80 * 2**20)\nimport time\ntime.sleep(1.5)\n"


def test_peak_leaves_out_processes_outside_the_tree() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with process_tree_peak_rss([parent.pid], interval=0.05) as memory:
            # started by this process, not below the root: not counted
            subprocess.run([sys.executable, "-c", _HOLD], check=True)
            time.sleep(0.2)
        assert memory.total_mb < 60
    finally:
        parent.kill()
        parent.wait()


def test_peak_includes_the_memory_a_tree_process_held() -> None:
    child = subprocess.Popen([sys.executable, "-c", _HOLD])
    try:
        with process_tree_peak_rss([child.pid], interval=0.05) as memory:
            child.wait(10)
        assert memory.total_mb >= 80
        assert memory.by_kind_mb["other"] >= 80
    finally:
        child.kill()
        child.wait()
