"""run_bench with py-spy on the run workers at a higher rate (1000 Hz)."""
import sys
import bench.pyspy as P
_orig = P.RunWorkerProfiler.__init__
def _init(self, sampler, out_dir, rate=1000):
    _orig(self, sampler, out_dir, rate=int(__import__("os").environ.get("PYSPY_RATE", "1000")))
P.RunWorkerProfiler.__init__ = _init
from bench.run_bench import main
sys.exit(main(sys.argv[1:]))
