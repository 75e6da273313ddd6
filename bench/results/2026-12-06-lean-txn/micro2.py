"""Per-transaction CPU, warm (back to back) and after a wake-up (2 ms sleep between)."""

import sys
import tempfile
import time

from sqlalchemy import Column, Float, Integer, MetaData, Table, bindparam, text, update

from bulk_changes.db.driver_statements import DriverStatement
from bulk_changes.db.engine import make_engine

try:
    from bulk_changes.db.driver_transactions import lean_transaction
except ImportError:
    lean_transaction = None
url = (
    sys.argv[1]
    if len(sys.argv) > 1 and sys.argv[1]
    else "sqlite:///" + tempfile.mkdtemp() + "/a.sqlite"
)
e = make_engine(url)
with e.begin() as c:
    c.execute(text("CREATE TABLE IF NOT EXISTS lean_bench (id INTEGER PRIMARY KEY, v FLOAT)"))
    c.execute(text("DELETE FROM lean_bench"))
    c.execute(text("INSERT INTO lean_bench VALUES (1, 0)"))
tb = Table("lean_bench", MetaData(), Column("id", Integer, primary_key=True), Column("v", Float))
st = DriverStatement(update(tb).where(tb.c.id == bindparam("b_id")).values(v=bindparam("b_v")))


def old(i):
    with e.begin() as c:
        st.execute(c, {"b_id": 1, "b_v": float(i)})


def new(i):
    with lean_transaction(e) as c:
        st.execute(c, {"b_id": 1, "b_v": float(i)})


def warm(f, n):
    for i in range(300):
        f(i)
    t0 = time.process_time()
    for i in range(n):
        f(i)
    return (time.process_time() - t0) / n * 1e6


def cold(f, n):
    total = 0.0
    for i in range(n):
        time.sleep(0.002)
        t0 = time.process_time()
        f(i)
        total += time.process_time() - t0
    return total / n * 1e6


n = 3000 if e.dialect.name == "sqlite" else 1500
for rnd in range(2):
    line = f"{e.dialect.name} round {rnd}: engine.begin warm {warm(old, n):.1f} us, after 2 ms sleep {cold(old, 800):.1f} us"
    if lean_transaction:
        line += f" | lean warm {warm(new, n):.1f} us, after 2 ms sleep {cold(new, 800):.1f} us"
    print(line, flush=True)
