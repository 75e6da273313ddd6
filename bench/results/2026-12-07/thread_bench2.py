"""Run bench.run_bench with a per-thread CPU / context-switch sampler on every run worker."""
import json, os, subprocess, sys, threading, time
from pathlib import Path
import bench.pyspy as P

TICK = os.sysconf("SC_CLK_TCK")

def task_stats(pid):
    out = {}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    for tid in tids:
        try:
            stat = open(f"{base}/{tid}/stat").read()
            st = open(f"{base}/{tid}/status").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ut, stt = int(fields[11]), int(fields[12])
        vol = nv = 0
        for line in st.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                nv = int(line.split()[1])
        out[tid] = (ut / TICK, stt / TICK, vol, nv)
    return out

class ThreadProfiler:
    def __init__(self, sampler, out_dir, rate=250):
        self.sampler, self.out_dir = sampler, out_dir
        self.series = {}
        self.names = {}
        self.roles = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
    def start(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self
    def _watch(self):
        dumped = {}
        while not self._stop.wait(0.25):
            now = time.time()
            for pid, role in list(self.sampler.role_by_pid.items()):
                if role not in ("run worker", "daemon", "code server"):
                    continue
                s = task_stats(pid)
                if s is None:
                    continue
                try:
                    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    s["process"] = (int(f[11]) / TICK, int(f[12]) / TICK, 0, 0)
                except OSError:
                    pass
                self.series.setdefault(pid, []).append((now, s))
                self.roles[pid] = role
                n = len(self.series[pid])
                if n in (60, 240) :
                    try:
                        d = subprocess.run(["py-spy", "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=20).stdout
                        self.names.setdefault(pid, []).append(d)
                    except Exception as e:
                        self.names.setdefault(pid, []).append(repr(e))
    def stop(self):
        self._stop.set()
        self._thread.join(5)
        path = self.out_dir / "threads.json"
        path.write_text(json.dumps({"series": {str(k): v for k, v in self.series.items()}, "dumps": {str(k): v for k, v in self.names.items()}, "roles": {str(k): v for k, v in self.roles.items()}}))
        return [path]

P.RunWorkerProfiler = ThreadProfiler
P.summarize = lambda files, **kw: {"files": [str(f) for f in files]}
from bench import run_bench
sys.argv = ["run_bench", *sys.argv[1:], "--py-spy"]
run_bench.main()
