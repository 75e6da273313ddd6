"""Vendor calls over the caller's own keep-alive connections (resources/http_connections.py):
the vendor receives what requests would have sent, connections are reused, and every
failure says whether the request may have reached the vendor."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import trustme

from bulk_changes.domain import errors
from bulk_changes.domain.settings import RateLimit
from bulk_changes.resources.http import HttpCaller

BODY = {"iccid": "8901", "status": "ACTIVATED"}


class Vendor:
    """Records each request; ``mode`` says how to answer the next ones."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.connections: set[tuple[str, int]] = set()
        self.mode = "ok"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.connections.add(self.client_address)
                outer.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                if outer.mode == "hang up":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if outer.mode == "slow":
                    time.sleep(0.6)
                data = json.dumps(BODY).encode()
                extra: dict[str, str] = {}
                if outer.mode == "gzip":
                    data, extra = gzip.compress(data), {"Content-Encoding": "gzip"}
                if outer.mode == "cookie":
                    extra = {"Set-Cookie": "affinity=node-2; Path=/"}
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass
                if outer.mode == "close after":
                    self.close_connection = True

            do_GET = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def root(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    running = Vendor()
    yield running
    running.stop()


def caller_at(root: str, timeout: float = 5.0) -> HttpCaller:
    return HttpCaller(
        system="jasper",
        account_name="acct",
        base_url=root + "/rws/api/v1",
        rate_limit=RateLimit(calls_per_second=5, max_in_flight=1),
        timeout_seconds=timeout,
        headers={"Authorization": "Basic c2VjcmV0"},
        secrets=["c2VjcmV0"],
    )


def put_by_requests(root: str) -> None:
    """The PUT ``put_by_us`` makes, sent by requests itself."""
    requests.Session().put(
        root + "/rws/api/v1/devices/8901",
        params={"page": 2},
        data=json.dumps({"status": "A"}).encode(),
        headers={
            "Authorization": "Basic c2VjcmV0",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )


def put_by_us(root: str) -> None:
    caller_at(root).request("PUT", "/devices/8901", params={"page": 2}, json_body={"status": "A"})


def test_the_vendor_receives_what_requests_would_have_sent(vendor: Vendor) -> None:
    put_by_requests(vendor.root)
    put_by_us(vendor.root)
    by_requests, ours = vendor.seen
    assert ours == by_requests


def test_calls_reuse_one_connection(vendor: Vendor) -> None:
    caller = caller_at(vendor.root)
    for _ in range(5):
        assert caller.request("GET", "/devices/8901").body == BODY
    assert len(vendor.connections) == 1
    assert caller.connections.connections_made == 1


def test_a_connection_the_vendor_closed_while_idle_is_replaced_and_the_call_made_once(
    vendor: Vendor,
) -> None:
    caller = caller_at(vendor.root)
    vendor.mode = "close after"  # answers, then drops the connection without saying so
    caller.request("GET", "/devices/8901")
    time.sleep(0.2)
    vendor.mode = "ok"
    assert caller.request("PUT", "/devices/8901", json_body={"status": "A"}).body == BODY
    assert [seen["method"] for seen in vendor.seen] == ["GET", "PUT"]
    assert caller.connections.connections_made == 2


def test_a_cookie_the_vendor_sets_goes_back_with_the_next_call(vendor: Vendor) -> None:
    caller = caller_at(vendor.root)
    vendor.mode = "cookie"
    caller.request("GET", "/devices/8901")
    vendor.mode = "ok"
    caller.request("GET", "/devices/8901")
    assert "Cookie" not in vendor.seen[0]["headers"]
    assert vendor.seen[1]["headers"]["Cookie"] == "affinity=node-2"


def test_a_compressed_answer_is_read_uncompressed(vendor: Vendor) -> None:
    vendor.mode = "gzip"
    assert caller_at(vendor.root).request("GET", "/devices/8901").body == BODY


def test_no_answer_in_time_is_a_timeout_that_may_have_landed(vendor: Vendor) -> None:
    caller = caller_at(vendor.root, timeout=0.2)
    vendor.mode = "slow"
    with pytest.raises(errors.TimeoutError_) as caught:
        caller.request("PUT", "/devices/8901", json_body={"status": "A"})
    assert caught.value.sent is True
    assert "it may have been applied" in str(caught.value)
    vendor.mode = "ok"
    assert caller.request("GET", "/devices/8901").body == BODY  # a new connection


def test_a_vendor_that_hangs_up_after_the_request_may_have_applied_it(vendor: Vendor) -> None:
    caller = caller_at(vendor.root)
    vendor.mode = "hang up"
    with pytest.raises(errors.ConnectionFailed) as caught:
        caller.request("PUT", "/devices/8901", json_body={"status": "A"})
    assert caught.value.sent is True
    assert len(vendor.seen) == 1  # never sent twice
    assert "c2VjcmV0" not in str(caught.value)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_vendor(ca: trustme.CA) -> Iterator[Vendor]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    running = Vendor(tls=context)
    yield running
    running.stop()


def test_https_verifies_the_vendor_with_the_configured_ca_bundle(
    tls_vendor: Vendor, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    caller = caller_at(tls_vendor.root)
    assert caller.request("GET", "/devices/8901").body == BODY
    assert caller.request("GET", "/devices/8901").body == BODY
    assert caller.connections.connections_made == 1


def test_https_to_a_vendor_whose_certificate_is_unknown_is_refused_before_sending(
    tls_vendor: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(errors.ConnectionFailed) as caught:
        caller_at(tls_vendor.root).request("PUT", "/devices/8901", json_body={"status": "A"})
    assert caught.value.sent is False
    assert "certificate" in str(caught.value).lower()
    assert tls_vendor.seen == []


def _raw_request_of(send: Any) -> bytes:
    """The bytes a vendor receives for the one request ``send(root)`` makes (its port
    written PORT: each call has a vendor of its own)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            while len(body) < length:
                body += conn.recv(65536)
            received.append(head + b"\r\n\r\n" + body)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")  # fmt: skip

    server = threading.Thread(target=serve)
    server.start()
    try:
        send(f"http://127.0.0.1:{port}")
        server.join(5)
    finally:
        listener.close()
    return received[0].replace(b":%d" % port, b":PORT")


def test_the_request_is_byte_for_byte_the_one_requests_sends() -> None:
    assert _raw_request_of(put_by_us) == _raw_request_of(put_by_requests)
