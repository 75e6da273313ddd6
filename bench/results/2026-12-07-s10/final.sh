#!/bin/bash
# final.sh OUTDIR [WORKTREE]: the issue-19 figure set, each under flock, sequential
OUT=$1; WT=${2:-/work/main}
mkdir -p $OUT; cd $WT
log() { echo "== $* $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $OUT/log; }
run() { name=$1; shift; log $name; PYTHONPATH=$WT flock /work/bench.lock timeout 1500 python "$@" > $OUT/$name.out 2>&1; echo "rc $?" >> $OUT/log; grep -h "makespan\|CPU seconds per\|first call -> last" $OUT/$name.out | head -8 >> $OUT/log; }
run limits -m bench.run_bench --devices 1000 --scale 1 --baseline-devices 200 --scenarios jasper_status,telegence_rate_plan --out $OUT/limits
run unc1 -m bench.run_bench --devices 2000 --no-baseline --scenarios unconstrained --out $OUT/unc1
run unc1000 -m bench.run_bench --devices 1000 --no-baseline --scenarios unconstrained --out $OUT/unc1000
run unc2 -m bench.run_bench --devices 2000 --no-baseline --scenarios unconstrained --out $OUT/unc2
run tunc1000 -m bench.run_bench --devices 1000 --no-baseline --scenarios telegence_unconstrained --out $OUT/tunc1000
run sq20 -m bench.run_bench --devices 500 --scale 1 --no-baseline --scenarios twenty_accounts --out $OUT/sq20
run pg20 -m bench.run_bench --devices 500 --scale 1 --no-baseline --scenarios twenty_accounts --db postgres --out $OUT/pg20
run idle -m bench.idle_cpu --seconds 180 --out $OUT/idle.json
run latency -m bench.latency --repeat 10 --idle-seconds 30 --out $OUT/latency.json
log done
