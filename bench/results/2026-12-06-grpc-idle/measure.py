"""measure.py NAME PORT SECONDS [ENV=VAL ...]: start pair with env, settle 15 s, per-thread CPU (schedstat) over SECONDS."""

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

name, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
env = dict(os.environ)
for kv in sys.argv[4:]:
    k, v = kv.split("=", 1)
    env[k] = v
interval = float(env.get("PAIR_INTERVAL", "10"))
srv = subprocess.Popen(
    [sys.executable, str(Path(__file__).with_name("pair.py")), "server", str(port)], env=env
)
time.sleep(2)
cli = subprocess.Popen(
    [sys.executable, str(Path(__file__).with_name("pair.py")), "client", str(port), str(interval)],
    env=env,
)


def snap(pid):
    out = {}
    for t in Path(f"/proc/{pid}/task").glob("*"):
        try:
            ns, _, _ = (t / "schedstat").read_text().split()
            comm = (t / "comm").read_text().strip()
            sw = 0
            for line in (t / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    sw = int(line.split()[1])
            out[int(t.name)] = (comm, int(ns), sw)
        except OSError:
            pass
    return out


try:
    time.sleep(15)
    a = {p.pid: snap(p.pid) for p in (srv, cli)}
    time.sleep(secs)
    b = {p.pid: snap(p.pid) for p in (srv, cli)}
    res = {}
    for role, p in (("server", srv), ("client", cli)):
        by = defaultdict(lambda: [0.0, 0, 0])
        tot = 0.0
        for tid, (comm, ns, sw) in b[p.pid].items():
            ns0, sw0 = (a[p.pid][tid][1], a[p.pid][tid][2]) if tid in a[p.pid] else (0, 0)
            d = (ns - ns0) / 1e9 / secs * 100
            by[comm][0] += d
            by[comm][1] += 1
            by[comm][2] += sw - sw0
            tot += d
        res[role] = {
            "total": round(tot, 4),
            "threads": {k: [round(v[0], 4), v[1], round(v[2] / secs, 1)] for k, v in by.items()},
        }
    print(json.dumps({"name": name, "res": res}))
finally:
    for p in (cli, srv):
        p.kill()
        p.wait()
