import json,sys
for d in sys.argv[1:]:
    rv=sorted(json.load(open(f'{d}/telegence_rate_plan-revio.json')),key=lambda c:c['t'])
    tg=json.load(open(f'{d}/telegence_rate_plan-telegence.json'))
    t0=min(c['t'] for c in tg)
    turn=0.12
    sp=[(a['t']-t0,b['t']-a['t']) for a,b in zip(rv,rv[1:])]
    start=sum(max(0,g-turn) for t,g in sp if t<3)
    mid=[(round(t,2),round(g-turn,3)) for t,g in sp if t>=3 and g-turn>0.003]
    print(d.split('/')[-1], "span %.2f ideal %.2f lost %.2f; first 3 s: %.2f; later excess %.2f in %d spacings; first->last %.4f"%(rv[-1]['t']-rv[0]['t'],(len(rv)-1)*turn,rv[-1]['t']-rv[0]['t']-(len(rv)-1)*turn,start,sum(x[1] for x in mid),len(mid),(len(rv)-1)*turn/(rv[-1]['t']-rv[0]['t'])))
    print("   later:", sorted(mid,key=lambda x:-x[1])[:8])
