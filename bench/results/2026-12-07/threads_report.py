import json,re,sys
d=json.load(open(sys.argv[1]))
for pid,ser in d["series"].items():
    names={}
    for dump in d["dumps"].get(pid,[]):
        for m in re.finditer(r'Thread (\d+) \((\w+)\): "([^"]*)"',dump):
            names[m.group(1)]=m.group(3)
    last={}
    first={}
    for t,s in ser:
        for tid,v in s.items():
            last[tid]=v
            first.setdefault(tid,(t,v))
    t0=ser[0][0]
    print("pid",pid,"duration %.1f"%(ser[-1][0]-t0),"first sample process cpu", ser[0][1].get("process"))
    rows=sorted(((v[0]+v[1],tid,v) for tid,v in last.items()),reverse=True)
    for c,tid,v in rows[:20]:
        print("%6s %-40s cpu %.2f (u %.2f s %.2f) vol %d nv %d first seen %.1f"%(tid,names.get(tid,"?"),c,v[0],v[1],v[2],v[3],first[tid][0]-t0))
    print("sum of threads (excl process) %.2f"%sum(r[0] for r in rows if r[1]!="process"))
    step=max(1,len(ser)//25)
    prev=None
    for t,s in ser[::step]:
        c=s.get("process",(0,0))[0]+s.get("process",(0,0))[1]
        if prev: print("  t=%.1f process cpu %.2f rate %.3f"%(t-t0,c,(c-prev[1])/(t-prev[0])))
        else: print("  t=%.1f process cpu %.2f"%(t-t0,c))
        prev=(t,c)
