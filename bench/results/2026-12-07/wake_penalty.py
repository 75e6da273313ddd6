"""The same Python work, back to back and after a sleep: CPU time per piece (thread_time)."""
import json, sqlite3, sys, tempfile, time, os, http.client, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_PUT(self):
        n = int(self.headers.get("Content-Length", 0)); self.rfile.read(n)
        body = b'{"iccid":"8901","status":"ACTIVATED"}'
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
port = srv.server_address[1]
if os.fork() == 0:
    srv.serve_forever()
    os._exit(0)
conn = http.client.HTTPConnection("127.0.0.1", port)
db = sqlite3.connect(os.path.join(tempfile.mkdtemp(), "x.db"), isolation_level=None)
db.execute("pragma journal_mode=wal"); db.execute("pragma synchronous=normal"); db.execute("create table t(id integer primary key, v text)")

def piece(i):
    # a device's work in miniature: a JSON body, a PUT and its answer, two transactions
    body = json.dumps({"status": "ACTIVATED", "i": i}).encode()
    conn.request("PUT", "/devices/8901", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); json.loads(r.read())
    for _ in range(2):
        db.execute("begin immediate"); db.execute("insert into t(v) values (?)", (str(i),)); db.execute("commit")

def measure(gap, n):
    cpu = []
    for i in range(n):
        if gap: time.sleep(gap)
        t = time.thread_time(); piece(i); cpu.append(time.thread_time() - t)
    cpu.sort()
    return cpu[len(cpu)//2] * 1e6, sum(cpu) / n * 1e6

for i in range(50): piece(i)
rows = []
for gap in (0, 0.001, 0.01, 0.05, 0.2):
    n = 200 if gap < 0.2 else 100
    med, mean = measure(gap, n)
    rows.append((gap, med, mean))
    print(f"gap {gap*1000:6.1f} ms: thread CPU per piece median {med:6.0f} us, mean {mean:6.0f} us", flush=True)
