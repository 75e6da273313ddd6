"""Process-tree sampling (CPU seconds, peak memory) and per-account call figures."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds, rss bytes) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = int(fields[21]) * PAGE
    return ppid, cpu, rss


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    for marker, role in (
        # multiprocessing's helpers in the code server (not run workers): the resource
        # tracker, and the fork server whose children are the run workers
        ("resource_tracker", "code server"),
        ("bulk_changes.code_server", "code server"),
        ("forkserver", "fork server"),
        ("execute_run", "run worker"),
        ("execute_step", "step process"),
        ("grpc", "code server"),
        ("dagster-daemon", "daemon"),
        ("daemon run", "daemon"),
        ("dagster-webserver", "webserver"),
        ("dagster dev", "dagster dev"),
        ("multiprocessing", "step process"),
    ):
        if marker in cmd:
            return role
    return "other"


class TreeSampler:
    """Samples the processes below the given roots: CPU used (by every process ever seen)
    and the peak of their summed resident memory."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        self.roots = set(roots)
        self.interval = interval
        self.cpu_by_pid: dict[int, float] = {}
        self.role_by_pid: dict[int, str] = {}
        self.peak_rss = 0
        self.peak_rss_by_role: dict[str, int] = defaultdict(int)
        self.peak_rss_by_pid: dict[int, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_pid.values())

    def snapshot(self) -> dict[int, float]:
        """CPU seconds used so far by each process seen (sampled now)."""
        self.sample()
        with self._lock:
            return dict(self.cpu_by_pid)

    def cpu_by_role(self, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
        """CPU seconds used between two snapshots, by what each process is."""
        used: dict[str, float] = defaultdict(float)
        for pid, cpu in after.items():
            used[self.role_by_pid.get(pid, "other")] += cpu - before.get(pid, 0.0)
        return {role: round(seconds, 2) for role, seconds in sorted(used.items())}

    def sample(self) -> None:
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                found = _stat(int(entry.name))
                if found:
                    stats[int(entry.name)] = found
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _, _) in stats.items():
            children[ppid].append(pid)
        # parents before children, so a child's role can follow its parent's
        tree: list[int] = []
        todo = [r for r in self.roots if r in stats]
        while todo:
            pid = todo.pop(0)
            if pid not in tree:
                tree.append(pid)
                todo.extend(children.get(pid, []))
        rss = 0
        with self._lock:
            for pid in tree:
                _, cpu, mem = stats[pid]
                self.cpu_by_pid[pid] = max(cpu, self.cpu_by_pid.get(pid, 0.0))
                if pid not in self.role_by_pid:
                    role = _role(pid)
                    # the default run launcher starts run workers as multiprocessing
                    # children of the code server; the multiprocess executor's step
                    # processes are children of a run worker
                    parent = self.role_by_pid.get(stats[pid][0])
                    if parent == "fork server":
                        role = "run worker"  # bulk_changes.code_server's run workers
                    elif role in ("step process", "other") and parent == "code server":
                        role = "run worker"
                    elif role == "other" and parent == "run worker":
                        role = "step process"
                    self.role_by_pid[pid] = role
                rss += mem
                role = self.role_by_pid[pid]
                self.peak_rss_by_role[role] = max(self.peak_rss_by_role[role], mem)
                self.peak_rss_by_pid[pid] = max(self.peak_rss_by_pid[pid], mem)
            self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def peak_rss_of(self, role: str) -> list[int]:
        """The peak resident memory (bytes) of each process of this kind seen, largest
        first (one entry per run worker, for instance)."""
        with self._lock:
            return sorted(
                (peak for pid, peak in self.peak_rss_by_pid.items()
                 if self.role_by_pid.get(pid) == role),
                reverse=True,
            )  # fmt: skip


MB = 2**20


@dataclass
class PeakMemory:
    """Peak resident memory of a process tree, filled in when the measuring ends (MB).

    ``total_mb``: the peak of the sum over every process alive at one sample; ``by_kind_mb``:
    the largest single process of each kind (run worker, daemon, code server...);
    ``run_workers_mb``: each run worker's own peak, largest first."""

    total_mb: float = 0.0
    by_kind_mb: dict[str, float] = field(default_factory=dict)
    run_workers_mb: list[float] = field(default_factory=list)

    def summary(self) -> str:
        workers = self.run_workers_mb
        per_worker = (
            f"run workers: {len(workers)}, largest {workers[0]:.0f} MB,"
            f" median {workers[len(workers) // 2]:.0f} MB"
            if workers
            else "no run worker"
        )
        return f"peak memory {self.total_mb:.0f} MB in all; {per_worker}"


def peak_memory_of(sampler: TreeSampler) -> PeakMemory:
    """What ``sampler`` saw so far, as a ``PeakMemory``."""
    return PeakMemory(
        total_mb=round(sampler.peak_rss / MB, 1),
        by_kind_mb={
            role: round(peak / MB, 1) for role, peak in sorted(sampler.peak_rss_by_role.items())
        },
        run_workers_mb=[round(p / MB, 1) for p in sampler.peak_rss_of("run worker")],
    )


@contextmanager
def process_tree_peak_rss(roots: list[int], interval: float = 0.25) -> Iterator[PeakMemory]:
    """Peak resident memory of the processes below ``roots`` (and of every process they
    start meanwhile: run workers are children of the code server or the daemon) while the
    block runs; the yielded ``PeakMemory`` is filled in when the block ends.

        with process_tree_peak_rss([p.pid for p in stack.processes[1:]]) as memory:
            ...  # send the messages, wait for the bulk changes
        print(memory.summary(), memory.run_workers_mb)
    """
    sampler = TreeSampler(roots, interval).start()
    memory = PeakMemory()
    try:
        yield memory
    finally:
        sampler.stop()
        found = peak_memory_of(sampler)
        memory.total_mb, memory.by_kind_mb = found.total_mb, found.by_kind_mb
        memory.run_workers_mb = found.run_workers_mb


def account_figures(
    calls: list[dict[str, Any]], limit_per_second: float, makespan: float
) -> dict[str, Any]:
    durations = [c.get("duration_ms") or 0.0 for c in calls]
    mean_latency = sum(durations) / len(durations) / 1000.0 if durations else 0.0
    # Where the budget went unused: gaps between call starts longer than two turns, less
    # the one turn each would have used anyway.
    turn = 1.0 / limit_per_second if limit_per_second else 0.0
    starts = sorted(c["t"] for c in calls)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b - a > 2 * turn]
    # One call in flight: a call whose answer came after its successor's turn holds that
    # successor up; the time from such an answer to the next call's start is our own
    # hand-off (plus the transport), the one-in-flight cost per call.
    ordered = sorted(calls, key=lambda c: c["t"])
    hand_offs = sorted(
        b["t"] - (a["t"] + (a.get("duration_ms") or 0.0) / 1000.0)
        for a, b in zip(ordered, ordered[1:], strict=False)
        if b["t"] - a["t"] > turn * 1.03
    )
    hand_offs = [h for h in hand_offs if 0 <= h <= 2 * turn] if turn else []
    return {
        "answer_to_next_call_ms": {
            "p50": round(hand_offs[len(hand_offs) // 2] * 1000, 2),
            "p90": round(hand_offs[int(len(hand_offs) * 0.9)] * 1000, 2),
        }
        if hand_offs
        else None,
        "calls": len(calls),
        "limit_per_second": round(limit_per_second, 3),
        "utilization": round(len(calls) / (limit_per_second * makespan), 3) if makespan else 0.0,
        # from the account's first call to its last: the pace once work has reached it
        "utilization_while_calling": round(
            (len(starts) - 1) / (limit_per_second * (starts[-1] - starts[0])), 3
        )
        if len(starts) > 1 and starts[-1] > starts[0]
        else None,
        "mean_latency_ms": round(mean_latency * 1000, 1),
        "one_in_flight_bound_s": round(len(calls) * mean_latency, 1),
        "throttled": sum(1 for c in calls if c.get("throttled")),
        "idle_gaps": len(gaps),
        "idle_gap_seconds": round(sum(g - turn for g in gaps), 2),
    }


def per_second_series(calls: list[dict[str, Any]], start: float) -> dict[int, int]:
    series: dict[int, int] = defaultdict(int)
    for call in calls:
        series[int(call["t"] - start)] += 1
    return dict(series)


def plot(path: Path, title: str, accounts: dict[str, tuple[dict[int, int], float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, (series, limit) in accounts.items():
        if not series:
            continue
        xs = list(range(0, max(series) + 1))
        line = ax.plot(xs, [series.get(x, 0) for x in xs], label=f"{name} calls/s")[0]
        ax.axhline(
            limit, color=line.get_color(), linestyle="--", linewidth=1, label=f"{name} limit"
        )
    ax.set_xlabel("seconds since the message was sent")
    ax.set_ylabel("calls per second")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def wall() -> float:
    return time.time()


class HostPauses:
    """Full collections of this process while it hosts the simulators: each one holds
    back the answers of the calls in flight (and, without the kernel's arrival stamps,
    the count of the calls arriving). Figures: how many, the longest, and how many lasted
    longer than the 20 ms a window the limiter leaves."""

    def __init__(self, tolerance_ms: float = 20.0) -> None:
        self.tolerance_ms = tolerance_ms
        self.pauses_ms: list[float] = []
        self._started = 0.0

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._started) * 1000.0)

    def start(self) -> None:
        gc.callbacks.append(self._observe)

    def stop(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)

    def figures(self) -> dict[str, Any]:
        return {
            "full_collections": len(self.pauses_ms),
            "longest_ms": round(max(self.pauses_ms, default=0.0), 1),
            "over_tolerance": sum(p > self.tolerance_ms for p in self.pauses_ms),
        }


def stop_cleanly_on_sigterm() -> None:
    """A SIGTERM (``timeout``, ``kill``) ends a benchmark as Ctrl+C would: its ``finally``
    blocks stop the stack it started (daemon, code server, the SQS server, the
    simulators) instead of leaving them running."""

    def _exit(signum: int, _frame: Any) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
