"""One HTTP/1.1 exchange on an open socket: the request written in one piece, the answer
read into one buffer.

Why not http.client's request and response objects: at the carriers' limits a vendor
call's CPU is a run worker's largest share, and most of http.client's is the machinery
around the bytes (a buffered file object and an email parser for the headers of every
answer, a header list assembled line by line): about 440 us of CPU a call against 180
here, for the same bytes on the wire (docs/benchmarks.md). The connections themselves
(connect, TLS, timeouts, close) stay http.client's (``http_connections``).

What is written is byte for byte what http.client writes for the same request (the Host
header first unless the request has one, then the request's headers in order), and what
is read follows RFC 9112 as http.client reads it: interim (1xx) answers skipped, no
body after HEAD, 204 and 304, a chunked body (trailers read and dropped), a
Content-Length body, or else a body up to the vendor's close. Anything malformed or
beyond the limits (a line over 64 KiB, over 100 headers) is an ``http.client`` exception:
the caller reports it as a broken answer to a request that may have been applied.
"""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

# http.client's own limits on an answer's head
MAX_LINE = 65536
MAX_HEADERS = 100
_READ_SIZE = 65536
# what may not appear in a request target or a method (http.client refuses the same)
_FORBIDDEN_IN_TARGET = re.compile("[\x00-\x20\x7f]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")
_NO_BODY_STATUS = (204, 304)
# http.client says Content-Length: 0 for these without a body
_METHODS_WITH_BODY = ("PATCH", "POST", "PUT")


@dataclass
class RawAnswer:
    status: int
    # (name, value) as the vendor sent them, in order, repeated names kept
    headers: list[tuple[str, str]]
    content: bytes
    # the vendor closes the connection after this answer (or bytes beyond it came)
    will_close: bool

    def message(self) -> Message:
        """The headers as http.client gives them (``HTTPMessage``), for a cookie jar."""
        parsed = http.client.HTTPMessage()
        for name, value in self.headers:
            parsed[name] = value
        return parsed


def host_header(host: str, port: int, default_port: int) -> str:
    """The Host header http.client writes for a connection to ``host``:``port``."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return host if port == default_port else f"{host}:{port}"


def request_bytes(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The request as http.client would write it. Header names and values must already
    be valid (requests' check, ``lean_request.HeaderCache``)."""
    if _FORBIDDEN_IN_TARGET.search(method) or _FORBIDDEN_IN_TARGET.search(target):
        raise http.client.InvalidURL(f"can't send a request with a control character: {target!r}")
    names = {name.lower() for name in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")
    if "content-length" not in names and "transfer-encoding" not in names:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method.upper() in _METHODS_WITH_BODY:
            lines.append("Content-Length: 0")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class _Reader:
    """Bytes of one answer off the socket, in as few reads as the vendor allows."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.at = 0
        self.closed = False

    def _more(self) -> bool:
        chunk = self.sock.recv(_READ_SIZE)
        if not chunk:
            self.closed = True
            return False
        self.buffer = self.buffer[self.at :] + chunk
        self.at = 0
        return True

    def line(self) -> bytes:
        """The next line without its line ending ("" at the vendor's close)."""
        while True:
            end = self.buffer.find(b"\n", self.at)
            if end != -1:
                if end - self.at > MAX_LINE:
                    raise http.client.LineTooLong("header line")
                line = self.buffer[self.at : end]
                self.at = end + 1
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) - self.at > MAX_LINE:
                raise http.client.LineTooLong("header line")
            if not self._more():
                if self.at < len(self.buffer):
                    raise http.client.IncompleteRead(self.buffer[self.at :])
                return b""

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) - self.at < count:
            if not self._more():
                raise http.client.IncompleteRead(self.buffer[self.at :], count)
        data = self.buffer[self.at : self.at + count]
        self.at += count
        return data

    def rest(self) -> bytes:
        """Everything up to the vendor's close."""
        while self._more():
            pass
        data = self.buffer[self.at :]
        self.at = len(self.buffer)
        return data

    def leftover(self) -> bool:
        return self.at < len(self.buffer)


def _head(reader: _Reader) -> tuple[int, int, list[tuple[str, str]]]:
    """-> (minor HTTP version, status, headers) of the final answer (1xx skipped)."""
    while True:
        status_line = reader.line()
        if not status_line:
            raise http.client.RemoteDisconnected(
                "the vendor closed the connection without answering"
            )
        matched = _STATUS_LINE.fullmatch(status_line)
        if matched is None:
            raise http.client.BadStatusLine(status_line.decode("latin-1")[:100])
        minor, status = int(matched.group(1)), int(matched.group(2))
        headers: list[tuple[str, str]] = []
        while True:
            line = reader.line()
            if not line:
                if reader.closed:
                    raise http.client.IncompleteRead(b"")
                break
            if line[:1] in (b" ", b"\t") and headers:  # an obsolete folded line
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {line.strip().decode('latin-1')}")
                continue
            if len(headers) >= MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
            name, colon, value = line.decode("latin-1").partition(":")
            name = name.strip(" \t")  # as leniently as http.client's parser
            if not colon or not name:
                raise http.client.HTTPException(f"malformed header line {line[:100]!r}")
            headers.append((name, value.strip(" \t")))
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue, 103 Early Hints): the final follows
        return minor, status, headers


def _values(headers: list[tuple[str, str]], wanted: str) -> list[str]:
    return [
        part.strip()
        for name, value in headers
        if name.lower() == wanted
        for part in value.split(",")
        if part.strip()
    ]


def _chunked(reader: _Reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = reader.line().split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(parts)) from None
        if size == 0:
            while reader.line():  # trailers, dropped as http.client drops them
                pass
            return b"".join(parts)
        parts.append(reader.exactly(size))
        if reader.exactly(2) != b"\r\n":
            raise http.client.IncompleteRead(b"".join(parts))


def read_answer(sock: socket.socket, method: str) -> RawAnswer:
    """The vendor's answer to the request just written on ``sock``, body included."""
    reader = _Reader(sock)
    minor, status, headers = _head(reader)
    connection = {v.lower() for v in _values(headers, "connection")}
    will_close = "close" in connection or (minor == 0 and "keep-alive" not in connection)
    if status == 101:
        raise http.client.HTTPException("the vendor switched protocols")
    if method == "HEAD" or status in _NO_BODY_STATUS:
        content = b""
    else:
        codings = [v.lower() for v in _values(headers, "transfer-encoding")]
        lengths = set(_values(headers, "content-length"))
        if codings:
            if codings[-1] != "chunked" or len(codings) > 1:
                raise http.client.HTTPException(f"unsupported transfer coding {codings}")
            content = _chunked(reader)
        elif lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise http.client.HTTPException(f"invalid Content-Length {sorted(lengths)}")
            content = reader.exactly(int(next(iter(lengths))))
        else:
            content, will_close = reader.rest(), True
    # bytes after the answer were never asked for: the connection is not reused
    return RawAnswer(status, headers, content, will_close or reader.leftover())
