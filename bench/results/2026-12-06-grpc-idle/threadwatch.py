"""threadwatch.py OUT: find the stack's daemon and code server, wait DELAY s, per-comm CPU over SECONDS."""

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

out = sys.argv[1]
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 45
secs = float(sys.argv[3]) if len(sys.argv) > 3 else 100


def find():
    pids = {}
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "bulk_changes.daemon run" in cmd and "bench-idle-" in cmd:
            pids["daemon"] = int(p.name)
        if "bulk_changes.code_server" in cmd and "forkserver" not in cmd:
            # the idle stack's code server: its parent is the bench (idle_cpu)
            try:
                ppid_cmd = (
                    Path(f"/proc/{(p / 'stat').read_text().split(')')[1].split()[1]}") / "cmdline"
                ).read_bytes()
            except OSError:
                continue
            if b"idle_cpu" in ppid_cmd:
                pids["code server"] = int(p.name)
    return pids


t0 = time.time()
while time.time() - t0 < 900:
    pids = find()
    if len(pids) == 2:
        break
    time.sleep(1)
else:
    print("not found")
    sys.exit(1)


def snap(pid):
    res = {}
    for t in Path(f"/proc/{pid}/task").glob("*"):
        try:
            ns = int((t / "schedstat").read_text().split()[0])
            comm = (t / "comm").read_text().strip()
            sw = int(
                re.search(r"voluntary_ctxt_switches:\s+(\d+)", (t / "status").read_text()).group(1)
            )
            res[int(t.name)] = (comm, ns, sw)
        except OSError:
            pass
    return res


time.sleep(delay)
a = {r: snap(p) for r, p in pids.items()}
ta = time.time()
time.sleep(secs)
b = {r: snap(p) for r, p in pids.items()}
tb = time.time()
el = tb - ta
result = {"start": time.strftime("%H:%M:%S", time.gmtime(ta)), "seconds": round(el, 1)}
for r in pids:
    by = defaultdict(lambda: [0.0, 0, 0.0])
    tot = 0.0
    for tid, (comm, ns, sw) in b[r].items():
        ns0, sw0 = (a[r][tid][1], a[r][tid][2]) if tid in a[r] else (0, 0)
        d = (ns - ns0) / 1e9 / el * 100
        tot += d
        key = comm if comm in ("event_engine", "lifeguard", "grpc_global_tim") else "python threads"
        by[key][0] += d
        by[key][1] += 1
        by[key][2] += (sw - sw0) / el
    result[r] = {
        "total": round(tot, 3),
        **{k: [round(v[0], 3), v[1], round(v[2], 1)] for k, v in by.items()},
    }
Path(out).write_text(json.dumps(result))
print(json.dumps(result))
