import http.client, socket, time, subprocess, sys, os
srv = subprocess.Popen([sys.executable, "-c", """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_PUT(self):
        n = int(self.headers.get('Content-Length', 0)); self.rfile.read(n)
        body = b'{"iccid": "8901000000000000001", "status": "ACTIVATED", "ratePlan": "x"}'
        self.send_response(200); self.send_header('Content-Type','application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(('127.0.0.1', 18765), H).serve_forever()
"""])
time.sleep(1)
body = b'{"status": "ACTIVATED"}'
hdrs = {"User-Agent": "python-requests/2.32", "Accept-Encoding": "gzip, deflate", "Accept": "*/*", "Connection": "keep-alive", "Content-Type": "application/json", "Authorization": "Basic eHh4Onl5eQ==", "Content-Length": str(len(body))}
N = 2000
def hc():
    c = http.client.HTTPConnection("127.0.0.1", 18765); c.connect(); c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.process_time()
    for _ in range(N):
        c.request("PUT", "/rws/api/v1/devices/8901", body=body, headers=dict(hdrs)); r = c.getresponse(); r.read(); r.getheaders()
    return (time.process_time() - t0) / N * 1e6
def raw():
    s = socket.create_connection(("127.0.0.1", 18765)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    t0 = time.process_time()
    for _ in range(N):
        head = "PUT /rws/api/v1/devices/8901 HTTP/1.1\r\nHost: 127.0.0.1:18765\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s.sendall(head.encode("latin-1") + body)
        status = f.readline(65537)
        parts = status.split(None, 2)
        code = int(parts[1])
        headers = []
        while True:
            line = f.readline(65537)
            if line in (b"\r\n", b"\n", b""): break
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        n = next(int(v) for k, v in headers if k.lower() == "content-length")
        content = f.read(n)
    return (time.process_time() - t0) / N * 1e6
try:
    for fn in (hc, raw, hc, raw):
        print(fn.__name__, round(fn()), "us cpu/call")
finally:
    srv.kill()
