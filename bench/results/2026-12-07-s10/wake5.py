import time, resource, urllib.parse, json
def ru(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_minflt, r.ru_majflt, r.ru_nvcsw, r.ru_nivcsw
for sleep in [0, 0.001, 0.005, 0.02, 0.05, 0.2]:
    ts=[]; fl=[]
    for _ in range(20):
        time.sleep(sleep) if sleep else None
        a = ru(); t = time.perf_counter(); c = time.thread_time()
        json.loads(json.dumps({"x": [1,2,3], "y": "abc"*10}))
        ts.append(((time.perf_counter()-t)*1e6, (time.thread_time()-c)*1e6)); b = ru(); fl.append(tuple(y-x for x,y in zip(a,b)))
    ts.sort()
    print(sleep, "wall/cpu us", [round(x) for x in ts[10]], "faults etc", fl[10])
