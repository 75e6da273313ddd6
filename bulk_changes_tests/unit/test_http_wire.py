"""One HTTP/1.1 exchange written and read by hand (resources/http_wire.py): the request is
what http.client writes, the answer is read as RFC 9112 says, and anything malformed is an
http.client exception (the caller's broken answer)."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from bulk_changes.resources.http_wire import RawAnswer, host_header, read_answer, request_bytes

Pair = tuple[socket.socket, socket.socket]

HEADERS = {
    "User-Agent": "python-requests/2.32.3",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "application/json",
    "Connection": "keep-alive",
    "Authorization": "Basic c2VjcmV0",
    "Content-Type": "application/json",
    "Content-Length": "17",
}
BODY = b'{"status": "ACT"}'


@pytest.fixture
def pair() -> Iterator[Pair]:
    ours, vendor = socket.socketpair()
    ours.settimeout(5)
    vendor.settimeout(5)
    yield ours, vendor
    ours.close()
    vendor.close()


def _written_by_http_client(
    method: str, target: str, host: str, port: int, headers: dict[str, str], body: bytes | None
) -> bytes:
    ours, vendor = socket.socketpair()
    with ours, vendor:
        conn = http.client.HTTPConnection(host, port)
        conn.sock = ours
        conn.request(method, target, body=body, headers=headers)
        ours.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := vendor.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("method", "target", "port", "headers", "body"),
    [
        ("PUT", "/rws/api/v1/devices/8901?page=2", 8443, HEADERS, BODY),
        ("GET", "/rws/api/v1/devices/8901", 80, {**HEADERS, "Content-Length": "0"}, None),
        (
            "POST",
            "/v1/lines",
            80,
            {k: v for k, v in HEADERS.items() if k != "Content-Length"},
            BODY,
        ),
        ("GET", "/", 8080, {"Host": "vendor.example", "Accept": "*/*"}, None),
        ("PATCH", "/v1/lines/1", 443, {"Accept": "*/*"}, None),
    ],
)
def test_the_request_is_byte_for_byte_what_http_client_writes(
    method: str, target: str, port: int, headers: dict[str, str], body: bytes | None
) -> None:
    expected = _written_by_http_client(method, target, "vendor.example", port, headers, body)
    host = host_header("vendor.example", port, 80)
    assert request_bytes(method, target, host, headers, body) == expected


def test_a_request_target_with_a_control_character_is_refused() -> None:
    with pytest.raises(http.client.InvalidURL):
        request_bytes("GET", "/devices/1\r\nX-Injected: 1", "vendor.example", {}, None)


def test_the_host_header_leaves_out_the_default_port_and_brackets_an_ipv6_address() -> None:
    assert host_header("vendor.example", 443, 443) == "vendor.example"
    assert host_header("vendor.example", 8443, 443) == "vendor.example:8443"
    assert host_header("::1", 8080, 80) == "[::1]:8080"


def _answer(pair, raw: bytes, method: str = "GET") -> RawAnswer:
    ours, vendor = pair
    vendor.sendall(raw)
    return read_answer(ours, method)


def test_a_content_length_answer_is_read_whole_and_the_connection_kept(pair: Pair) -> None:
    answer = _answer(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello")
    assert (answer.status, answer.content, answer.will_close) == (200, b"hello", False)
    assert answer.headers == [("Content-Length", "5"), ("X-A", "1")]


def test_a_body_sent_in_pieces_is_read_whole(pair: Pair) -> None:
    ours, vendor = pair

    def send_slowly() -> None:
        for piece in (b"HTTP/1.1 200 OK\r\nContent-", b"Length: 10\r\n\r\n01234", b"56789"):
            vendor.sendall(piece)
            threading.Event().wait(0.05)

    threading.Thread(target=send_slowly).start()
    assert read_answer(ours, "GET").content == b"0123456789"


def test_a_chunked_answer_is_joined_and_its_trailers_dropped(pair: Pair) -> None:
    answer = _answer(
        pair,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    assert (answer.content, answer.will_close) == (b"Wikipedia ", False)


def test_an_interim_100_continue_is_skipped(pair: Pair) -> None:
    answer = _answer(
        pair, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    assert (answer.status, answer.content) == (201, b"ok")


@pytest.mark.parametrize(("status", "method"), [(204, "PUT"), (304, "GET"), (200, "HEAD")])
def test_no_body_is_read_after_head_204_or_304(pair: Pair, status: int, method: str) -> None:
    answer = _answer(pair, f"HTTP/1.1 {status} X\r\nContent-Length: 7\r\n\r\n".encode(), method)
    assert (answer.status, answer.content, answer.will_close) == (status, b"", False)


def test_an_answer_without_a_length_is_read_to_the_close_and_the_connection_dropped(
    pair: Pair,
) -> None:
    ours, vendor = pair
    vendor.sendall(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    vendor.shutdown(socket.SHUT_WR)
    answer = read_answer(ours, "GET")
    assert (answer.content, answer.will_close) == (b"all of it", True)


@pytest.mark.parametrize(
    ("head", "closes"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", True),
        (b"HTTP/1.0 200 OK\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", False),
    ],
)
def test_the_connection_is_dropped_when_the_vendor_says_it_closes(
    pair: Pair, head: bytes, closes: bool
) -> None:
    answer = _answer(pair, head + b"Content-Length: 2\r\n\r\nok")
    assert answer.will_close is closes


def test_bytes_after_the_answer_mean_the_connection_is_not_reused(pair: Pair) -> None:
    answer = _answer(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY")
    assert (answer.content, answer.will_close) == (b"ok", True)


def test_a_folded_header_line_is_joined_to_its_header(pair: Pair) -> None:
    answer = _answer(pair, b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n")
    assert answer.headers[0] == ("X-Long", "a b")


def test_the_cookie_jar_gets_the_headers_as_http_client_gives_them(pair: Pair) -> None:
    answer = _answer(
        pair,
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
    )
    assert answer.message().get_all("Set-Cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", http.client.RemoteDisconnected),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"ICY 200 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", http.client.LineTooLong),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"Content-Length: 0\r\n\r\n",
            http.client.HTTPException,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            http.client.HTTPException,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", http.client.HTTPException),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            http.client.IncompleteRead,
        ),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http.client.HTTPException),
    ],
    ids=[
        "closed before answering",
        "body shorter than its length",
        "not HTTP",
        "header line over 64 KiB",
        "over 100 headers",
        "conflicting lengths",
        "unsupported transfer coding",
        "broken chunk size",
        "header line without a colon",
    ],
)
def test_a_broken_answer_is_an_http_client_error(
    pair: Pair, raw: bytes, error: type[Exception]
) -> None:
    ours, vendor = pair
    vendor.sendall(raw)
    vendor.shutdown(socket.SHUT_WR)
    with pytest.raises(error):
        read_answer(ours, "GET")
