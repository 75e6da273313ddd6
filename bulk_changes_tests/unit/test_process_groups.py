"""The launcher's wait for a killed process group (the e2e tests' host crash)."""

from __future__ import annotations

import os
import signal
import subprocess

from bulk_changes.launcher.stack import group_members, wait_group_gone


def test_a_killed_group_is_waited_for_until_none_of_its_processes_is_left() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"], start_new_session=True)
    try:
        assert leader.pid in group_members(leader.pid)
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)
        wait_group_gone(leader.pid, timeout=10)
        assert group_members(leader.pid) == []
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, signal.SIGKILL)
