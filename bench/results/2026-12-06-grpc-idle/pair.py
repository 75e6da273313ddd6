"""Bare grpc server+client pair: per-thread CPU over a window. Usage: pair.py server PORT | client PORT INTERVAL"""

import os
import sys
import time
from concurrent import futures


def serve(port):
    import grpc

    def handler(req, ctx):
        return req

    h = grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_unary_rpc_method_handler(handler)}
    )
    s = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        handlers=[h],
        options=[
            ("grpc.max_receive_message_length", 50 * 1024 * 1024),
            ("grpc.max_send_message_length", 50 * 1024 * 1024),
        ]
        + [
            (kv.split("=")[0], int(kv.split("=")[1]))
            for kv in os.environ.get("SERVER_OPTS", "").split(",")
            if kv
        ],
    )
    s.add_insecure_port(f"127.0.0.1:{port}")
    s.start()
    import grpc._common

    grpc._common.MAXIMUM_WAIT_TIMEOUT = 60.0
    s.wait_for_termination()


def client(port, interval):
    import grpc

    opts = [
        ("grpc.max_receive_message_length", 50 * 1024 * 1024),
        ("grpc.max_send_message_length", 50 * 1024 * 1024),
        ("grpc.initial_reconnect_backoff_ms", 1000),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    extra = os.environ.get("PAIR_OPTS")
    if extra:
        for kv in extra.split(","):
            k, v = kv.split("=")
            opts.append((k, int(v)))
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=opts, compression=grpc.Compression.Gzip)
    m = ch.unary_unary("/t.S/M", request_serializer=None, response_deserializer=None)
    while True:
        m(b"x" * 100, timeout=10)
        time.sleep(interval)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), float(sys.argv[3]))
