import time, json, email.parser, requests, sqlalchemy, decimal, fractions, datetime, re, urllib.parse, uuid
parts = {
 "json": lambda: json.loads(json.dumps({"x": [1,2,3], "y": "abc"*10})),
 "urlsplit": lambda: urllib.parse.urlsplit("http://a.b/c?d=e"),
 "uuid": lambda: uuid.uuid4(),
 "re": lambda: re.sub(r"a+", "b", "caaat"),
 "now": lambda: datetime.datetime.now().isoformat(),
 "decimal": lambda: decimal.Decimal("1.1")*decimal.Decimal("2.2"),
 "fraction": lambda: fractions.Fraction(3,4)+1,
 "email": lambda: email.parser.Parser().parsestr("A: b\nC: d\n\nbody"),
 "cid": lambda: requests.structures.CaseInsensitiveDict({"a": "b", "c": "d"}).get("A"),
 "sqla": lambda: sqlalchemy.text("select 1").compile(),
}
def measure(fn, sleep, n=40):
    ts = []
    for _ in range(n):
        if sleep: time.sleep(sleep)
        a = time.perf_counter(); fn(); ts.append((time.perf_counter()-a)*1e6)
    ts.sort(); return round(ts[n//2],1)
for k, fn in parts.items():
    print(f"{k:10s} hot {measure(fn,0):8.1f}  after-0.2s {measure(fn,0.2, 20):8.1f} us")
