import time, http.client, io
raw=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nDate: Sun, 06 Dec 2026 16:00:00 GMT\r\nServer: sim\r\nX-A: 1\r\n\r\n"
def work():
    for _ in range(3):
        http.client.parse_headers(io.BytesIO(raw[17:]))
N=300
t=time.process_time()
for _ in range(N): work()
hot=(time.process_time()-t)/N
t=time.process_time()
for _ in range(N):
    time.sleep(0.005); work()
s5=(time.process_time()-t)/N
t0=time.process_time(); 
for _ in range(N): time.sleep(0.005)
sl=(time.process_time()-t0)/N
print("hot %.1f us, after 5ms sleep %.1f us (sleep alone %.1f us)"%(hot*1e6,(s5-sl)*1e6, sl*1e6))
