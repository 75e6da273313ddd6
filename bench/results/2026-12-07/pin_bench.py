"""bench.run_bench with every run worker's threads pinned to CPU given by PIN_CPU (or not, if unset)."""
import os, sys, threading
import bench.pyspy as P

CPU = os.environ.get("PIN_CPU")

class Pinner:
    def __init__(self, sampler, out_dir, rate=250):
        self.sampler = sampler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.pinned = {}
    def start(self):
        self._thread.start(); return self
    def _watch(self):
        while not self._stop.wait(0.05):
            for pid, role in list(self.sampler.role_by_pid.items()):
                if role != "run worker" or CPU is None:
                    continue
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for tid in tids:
                    if tid in self.pinned.setdefault(pid, set()):
                        continue
                    try:
                        os.sched_setaffinity(int(tid), {int(CPU)})
                        self.pinned[pid].add(tid)
                    except OSError:
                        pass
    def stop(self):
        self._stop.set(); self._thread.join(5)
        print("pinned threads:", {p: len(t) for p, t in self.pinned.items()}, "cpu", CPU)
        return []

P.RunWorkerProfiler = Pinner
from bench import run_bench
run_bench.print_table.__globals__  # noqa
orig = run_bench.print_table
def print_table(result):
    result.pop("py_spy", None)
    return orig(result)
run_bench.print_table = print_table
P.summarize = lambda files, **kw: {}
sys.argv = ["run_bench", *sys.argv[1:], "--py-spy"]
run_bench.main()
