"""Apply the per-phase CPU instrumentation (time.thread_time) to a worktree's copy of
bulk_changes (throwaway, never landed): python instr_apply.py WORKTREE. Each run worker
then writes /tmp/instr/PID.json every 100 devices: {phase: [CPU seconds, count]}."""
import sys
from pathlib import Path
root = Path(sys.argv[1])
(root / "bulk_changes/instr.py").write_text('''import json, os, threading, time
from collections import defaultdict
_acc = defaultdict(float); _n = defaultdict(int); _lock = threading.Lock(); _calls = [0]
def add(name, dt):
    with _lock:
        _acc[name] += dt; _n[name] += 1
        if name == "device":
            _calls[0] += 1
            if _calls[0] % 100 == 0:
                os.makedirs("/tmp/instr", exist_ok=True)
                with open(f"/tmp/instr/{os.getpid()}.json", "w") as f:
                    json.dump({k: [v, _n[k]] for k, v in _acc.items()}, f)
tt = time.thread_time
''')
def edit(rel, pairs):
    p = root / rel; s = p.read_text()
    for old, new in pairs:
        assert old in s, (rel, old[:60]); s = s.replace(old, new)
    p.write_text(s)
edit("bulk_changes/resources/http.py", [("""        if failure is None:
            with self.limiter.slot(
                self.account_name, self.rate_limit, lease_seconds=lease
            ) as departures:
                # the turn may have come after the run was told to stop: no call then
                stopping.check()""", """        from bulk_changes import instr as _I
        _t0 = _I.tt()
        if failure is None:
            with self.limiter.slot(
                self.account_name, self.rate_limit, lease_seconds=lease
            ) as departures:
                _t1 = _I.tt(); _I.add("pre+slot_enter", _t1 - _t0)
                # the turn may have come after the run was told to stop: no call then
                stopping.check()"""), ("""                duration_ms = (time.perf_counter() - started) * 1000.0
""", """                duration_ms = (time.perf_counter() - started) * 1000.0
                _t2 = _I.tt(); _I.add("in_slot_send", _t2 - _t1)
            _t3 = _I.tt(); _I.add("slot_exit", _t3 - _t2)
"""), ("""            raise error
        return response""", """            raise error
        _I.add("after", _I.tt() - _t3)
        return response""")])
edit("bulk_changes/processing/runner.py", [("""            if step is UPDATE_AMOP:
                self._update_inventory(change, device, plan, done, report, pending)
                return
            success = self._run_step(step, change, device, report, pending)""", """            if step is UPDATE_AMOP:
                from bulk_changes import instr as _I
                _a = _I.tt()
                self._update_inventory(change, device, plan, done, report, pending)
                _I.add("update_inventory", _I.tt() - _a)
                return
            from bulk_changes import instr as _I
            _a = _I.tt()
            success = self._run_step(step, change, device, report, pending)
            _I.add("run_step", _I.tt() - _a)""")])
edit("bulk_changes/processing/device_lanes.py", [("""            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))""", """            if future.set_running_or_notify_cancel():
                from bulk_changes import instr as _I
                _a = _I.tt()
                try:
                    future.set_result(fn(*args))
                    _I.add("device", _I.tt() - _a)""")])
print("instrumented", root)
