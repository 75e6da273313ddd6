"""Sample the run workers with py-spy while a scenario runs, and sum where they spend
their time (``python -m bench.run_bench --py-spy``; py-spy: ``pip install py-spy``).

py-spy's raw format is one line per distinct stack, ``frame;frame;...;frame count``,
outermost first; a function's inclusive share is the samples of the stacks it is on.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any


class RunWorkerProfiler:
    """Starts ``py-spy record`` on every run worker the sampler discovers."""

    def __init__(self, sampler: Any, out_dir: Path, rate: int = 250) -> None:
        if shutil.which("py-spy") is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        self.sampler, self.out_dir, self.rate = sampler, out_dir, rate
        self.recorders: dict[int, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> RunWorkerProfiler:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for pid, role in list(self.sampler.role_by_pid.items()):
                if role == "run worker" and pid not in self.recorders:
                    self.recorders[pid] = subprocess.Popen(
                        [
                            "py-spy", "record", "--pid", str(pid), "--format", "raw",
                            "--rate", str(self.rate), "--nonblocking", "--gil",
                            "-o", str(self.out_dir / f"run-worker-{pid}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip

    def stop(self) -> list[Path]:
        self._stop.set()
        self._thread.join(5)
        for proc in self.recorders.values():
            try:
                proc.wait(30)  # py-spy writes its file when the process it samples exits
            except subprocess.TimeoutExpired:
                proc.terminate()
        return sorted(self.out_dir.glob("run-worker-*.txt"))


def summarize(files: list[Path], top: int = 25, idle: tuple[str, ...] = ()) -> dict[str, Any]:
    """Inclusive sample shares of the functions on the busy stacks (idle threads, waiting
    in a lock, a sleep or a socket read, are dropped: --gil samples only the thread that
    holds the interpreter lock, so the shares are of CPU time)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                      if " (" in f else f for f in stack.split(";")]  # fmt: skip
            if any(marker in stack for marker in idle):
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    share = {k: round(v / total, 3) for k, v in inclusive.most_common(top)} if total else {}
    self_share = {k: round(v / total, 3) for k, v in own.most_common(top)} if total else {}
    return {"samples": total, "inclusive": share, "self": self_share}
