"""bench.run_bench with strace -f on the fork server (children included), timestamps."""
import subprocess, sys, threading
import bench.pyspy as P

class ForkTrace:
    def __init__(self, sampler, out_dir, rate=250):
        self.sampler, self.out_dir = sampler, out_dir
        self.proc = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
    def start(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start(); return self
    def _watch(self):
        while not self._stop.wait(0.1):
            for pid, role in list(self.sampler.role_by_pid.items()):
                if role == "fork server" and self.proc is None:
                    self.proc = subprocess.Popen(["strace", "-f", "-tt", "-T", "-e", "trace=%file,%network,%desc,fork,clone,clone3",
                        "-o", str(self.out_dir / "fork.strace"), "-p", str(pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def stop(self):
        self._stop.set(); self._thread.join(5)
        if self.proc:
            self.proc.terminate()
            try: self.proc.wait(30)
            except Exception: self.proc.kill()
        return []

P.RunWorkerProfiler = ForkTrace
P.summarize = lambda files, **kw: {"samples": 0, "inclusive": {}}
from bench import run_bench
sys.argv = ["run_bench", *sys.argv[1:], "--py-spy"]
run_bench.main()
