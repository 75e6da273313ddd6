import time, json, sys
import sqlalchemy, requests, email.parser, http.client
def small():
    s = 0
    for i in range(2000): s += i*i
    return s
# a "wide" workload: many different functions/modules
import decimal, fractions, datetime, re, urllib.parse, uuid
def wide():
    json.loads(json.dumps({"x": [1,2,3], "y": "abc"*10}))
    urllib.parse.urlsplit("http://a.b/c?d=e"); uuid.uuid4(); re.sub(r"a+", "b", "caaat")
    datetime.datetime.now().isoformat(); decimal.Decimal("1.1")*decimal.Decimal("2.2"); fractions.Fraction(3,4)+1
    email.parser.Parser().parsestr("A: b\nC: d\n\nbody")
    requests.structures.CaseInsensitiveDict({"a": "b", "c": "d"}).get("A")
    sqlalchemy.text("select 1").compile()
def measure(fn, reps, sleep, n=60):
    ts = []
    for _ in range(n):
        if sleep: time.sleep(sleep)
        a = time.thread_time()
        for _ in range(reps): fn()
        ts.append((time.thread_time()-a)*1e3)
    ts.sort(); return round(ts[n//2],3)
for name, fn, reps in [("small", small, 5), ("wide", wide, 5)]:
    for s in [0, 0.2, 0, 0.2, 0.02]:
        print(name, s, measure(fn, reps, s))
