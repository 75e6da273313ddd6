import os
import sys
import time
from concurrent import futures

import grpc

sz = int(sys.argv[1])
bdp = int(sys.argv[2])
payload = os.urandom(sz)
h = grpc.method_handlers_generic_handler(
    "t.S", {"M": grpc.unary_unary_rpc_method_handler(lambda r, c: payload)}
)
s = grpc.server(
    futures.ThreadPoolExecutor(4),
    handlers=[h],
    options=[("grpc.max_send_message_length", 100 * 10**6)]
    + ([("grpc.http2.bdp_probe", 0)] if bdp == 0 else []),
    compression=grpc.Compression.Gzip,
)
p = s.add_insecure_port("127.0.0.1:0")
s.start()
opts = [("grpc.max_receive_message_length", 100 * 10**6)] + (
    [("grpc.http2.bdp_probe", 0)] if bdp == 0 else []
)
ch = grpc.insecure_channel(f"127.0.0.1:{p}", options=opts, compression=grpc.Compression.Gzip)
m = ch.unary_unary("/t.S/M")
m(b"x")
ts = []
c0 = time.process_time()
for _i in range(10):
    t = time.perf_counter()
    m(b"x")
    ts.append(time.perf_counter() - t)
print(
    f"size {sz} bdp {bdp}: median {sorted(ts)[5] * 1000:.1f} ms, cpu/call {(time.process_time() - c0) / 10 * 1000:.1f} ms"
)
s.stop(0)
