"""README's "Your own CSV in five minutes", followed command by command: its first block
started as the user's first terminal, its CSV blocks saved under the names the text gives,
each line of its last block run in a shell in the same folder."""

from __future__ import annotations

import os
import queue
import random
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bulk_changes_tests.cli_helpers import CLEARED

README = Path(__file__).resolve().parents[2] / "README.md"
TITLE = "## Your own CSV in five minutes"

pytestmark = pytest.mark.e2e


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(TITLE)
    end = text.index("\n## ", start + len(TITLE))
    return text[start:end]


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, body, the prose before it) of each fenced block."""
    found = []
    position = 0
    for match in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        found.append((match.group(1), match.group(2), text[position : match.start()]))
        position = match.end()
    return found


def commands(body: str) -> list[str]:
    return [line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_own_csv_in_five_minutes(tmp_path: Path) -> None:
    parts = blocks(section())
    shells = [b for b in parts if b[0] == "bash"]
    assert len(shells) == 2, "the section has two terminals' commands"
    for language, body, prose in parts:
        if language == "csv":
            # the file name the text gives just before the block
            name = re.findall(r"`([\w.-]+\.csv)`", prose)[-1]
            (tmp_path / name).write_text(body, encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if k not in CLEARED and k != "BULK_CHANGES_HOME"}
    # ports of its own: a demo or another test may hold the default ones
    env["BULK_CHANGES_DEMO_PORT_OFFSET"] = str(20000 + random.randrange(0, 2000, 10))
    [first] = commands(shells[0][1])
    demo = subprocess.Popen(
        shlex.split(first),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in demo.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 180
        while not any("ready" in x for x in seen):
            assert demo.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        for command in commands(shells[1][1]):
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    frame = pd.read_excel(tmp_path / "bulk-change-1.xlsx", dtype=str)
    assert frame[
        ["status", "previous_username", "new_username", "new_cost_center_1"]
    ].values.tolist() == [
        ["PROCESSED", "alice", "alice-fleet", "0042"],
        ["PROCESSED", "bob", "bob-fleet", "0042"],
    ]
