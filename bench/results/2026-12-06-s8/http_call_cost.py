import time, subprocess, sys, json
srv = subprocess.Popen([sys.executable, "-c", """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_PUT(self):
        n = int(self.headers.get('Content-Length', 0)); self.rfile.read(n)
        body = b'{"iccid": "8901000000000000001", "status": "ACTIVATED", "ratePlan": "x"}'
        self.wfile.write(b'HTTP/1.1 200 OK\\r\\nServer: x\\r\\nDate: Sun, 06 Dec 2026 22:00:00 GMT\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', 18766), H).serve_forever()
"""])
time.sleep(1)
from bulk_changes.resources.http_connections import KeepAliveConnections
body = b'{"status": "ACTIVATED"}'
hdrs = {"User-Agent": "python-requests/2.32", "Accept-Encoding": "gzip, deflate", "Accept": "*/*", "Connection": "keep-alive", "Content-Type": "application/json", "Authorization": "Basic eHh4Onl5eQ==", "Content-Length": str(len(body))}
k = KeepAliveConnections()
N = 3000
try:
    for _ in range(3):
        t0 = time.process_time(); w0 = time.time()
        for _ in range(N):
            a = k.send("PUT", "http://127.0.0.1:18766/rws/api/v1/devices/8901", body, hdrs, 5.0, lambda at: None)
        w = time.time(); print(round((time.process_time() - t0) / N * 1e6), "us cpu/call", a.status_code, len(a.content), round((time.time()-w0)/N*1e3, 2), "ms wall/call")
finally:
    srv.kill()
