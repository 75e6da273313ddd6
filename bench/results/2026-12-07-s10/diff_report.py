import sys
from collections import Counter
from pathlib import Path
def load(d):
    inc, own, tot = Counter(), Counter(), 0
    for p in Path(d).rglob("run-worker-*.txt"):
        for line in p.read_text().splitlines():
            stack, _, c = line.rpartition(" ")
            if not c.isdigit(): continue
            c = int(c); tot += c
            frames = [f.split(" (")[0] + " (" + f.rsplit("/",1)[-1].rstrip(")") if " (" in f else f for f in stack.split(";")]
            own[frames[-1]] += c
            for f in set(frames): inc[f] += c
    return inc, own, tot
a, ao, at = load(sys.argv[1]); b, bo, bt = load(sys.argv[2])
print("samples", at, bt)
kind = sys.argv[3] if len(sys.argv) > 3 else "inc"
A, B = (a, b) if kind == "inc" else (ao, bo)
rows = sorted(set(A) | set(B), key=lambda k: -(A[k] - B[k]))
for k in rows[:45]:
    print(f"{A[k]:6d} {B[k]:6d} {A[k]-B[k]:+6d}  {k}")
