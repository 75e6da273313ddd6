import json,re,sys
d=json.load(open(sys.argv[1]))
roles=d["roles"]
rw=[p for p,r in roles.items() if r=="run worker"][0]
rs=d["series"][rw]; start,end=rs[0][0],rs[-1][0]
print("run worker alive %.1f s"%(end-start))
def at(ser,t):
    best=None
    for tt,s in ser:
        if tt<=t: best=s
    return best
for pid,role in roles.items():
    if role=="run worker": continue
    ser=d["series"][pid]
    names={}
    for dump in d["dumps"].get(pid,[]):
        for m in re.finditer(r'Thread (\d+) \((\w+)\): "([^"]*)"',dump):
            names[m.group(1)]=m.group(3)
    b,c=at(ser,start),at(ser,end)
    rows=[]
    for tid in c:
        vb=b.get(tid,(0,0,0,0)); vc=c[tid]
        rr=((vc[0]+vc[1])-(vb[0]+vb[1]))/(end-start)*100
        wr=(vc[2]-vb[2])/(end-start)
        rows.append((rr,tid,names.get(tid,"?"),wr))
    print(role,pid,"while the run worker lived, % of a core")
    for r in sorted(rows,reverse=True)[:14]:
        print("  %-8s %-45s %.3f%% (%.1f wake-ups/s)"%(r[1],r[2][:45],r[0],r[3]))
