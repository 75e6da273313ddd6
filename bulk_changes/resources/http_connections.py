"""Keep-alive connections to one vendor: http.client's connections, our own exchange.

Why not requests for the vendor calls: at the carriers' limits a run worker spends most of
its CPU around its HTTP calls, and requests' Session.send (hooks, cookie extraction,
urllib3's pool, retries and response objects, all per call) cost about as much again as
the http.client exchange underneath it (CPU per call against a local keep-alive server:
requests' Session 1.3-1.4 ms, http.client 0.5 ms; docs/benchmarks.md), and http.client's
request and response objects most of its own (``http_wire``: 0.44 -> 0.18 ms). The call
path that every device takes therefore writes the request requests would send
(``lean_request``) on a connection of this pool and reads the answer itself
(``http_wire``); http.client connects, wraps TLS and closes. ``HttpCaller`` still sends through
requests whatever this pool does not cover: a proxy, a client certificate, cookies the
vendor set, a session with auth or hooks (``HttpCaller._lean_request``).

Failures come out as requests' own exceptions, so the caller translates one tree:

- no connection could be made (refused, no route, unknown host, connect timeout): the
  request was not sent: ``requests.ConnectTimeout`` or ``requests.ConnectionError`` whose
  cause is a ``NotConnected``;
- anything after the connection was made (a write, the wait for the answer, a broken
  answer): ``requests.ReadTimeout`` or ``requests.ConnectionError``; the request may have
  reached the vendor.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from functools import cached_property
from urllib.parse import SplitResult, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers

from bulk_changes.resources.http_wire import host_header, read_answer, request_bytes

# requests keeps at most this many idle connections per host (pool_maxsize): the same here
MAX_IDLE = 10


class NotConnected(OSError):
    """The connection could not be made: nothing of the request left."""


@dataclass
class Answer:
    """A vendor's whole answer, read inside the call's slot."""

    status_code: int
    headers: CaseInsensitiveDict[str]
    content: bytes
    url: str
    # the headers as parsed, for cookies (requests' cookie jar reads them); None through
    # requests, whose Response keeps its own
    message: Message | None = None

    @property
    def encoding(self) -> str | None:
        return get_encoding_from_headers(self.headers)

    @cached_property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """The checks requests makes for ``verify``: certifi's bundle by default (as requests),
    a CA file or directory, or none at all."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        return ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the vendor (or has stray bytes on it):
    an idle keep-alive connection has nothing to read."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    if not isinstance(sock, ssl.SSLSocket):
        return True
    # A TLS 1.3 server sends its session tickets after the handshake: the socket is
    # readable, yet holds nothing for us. Reading processes them.
    sock.setblocking(False)
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return False
    except (OSError, ValueError):
        return True
    finally:
        if sock.fileno() != -1:  # still open
            sock.settimeout(conn.timeout)
    return True  # the vendor's close (b""), or bytes nobody asked for


def _decoded(content: bytes, encoding: str) -> bytes:
    """The body as requests hands it over: gzip and deflate undone (requests asks for them)."""
    coding = encoding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(content, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        try:
            return zlib.decompress(content)
        except zlib.error:  # raw deflate, as some servers send it
            return zlib.decompress(content, -zlib.MAX_WBITS)
    return content


class KeepAliveConnections:
    """Idle keep-alive connections per (scheme, host, port); a thread takes one for a call
    and gives it back once the answer is read. Safe to share between threads."""

    def __init__(self, verify: bool | str = True) -> None:
        self._verify = verify
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.connections_made = 0  # for tests and measurements

    # -- connections ------------------------------------------------------------------

    @staticmethod
    def _key(parts: SplitResult) -> tuple[str, str, int]:
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        return scheme, parts.hostname or "", port

    def _new(self, key: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            if self._tls is None:
                self._tls = _tls_context(self._verify)
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _connect(self, conn: http.client.HTTPConnection, timeout: float) -> None:
        """Connects, or raises requests' exception for a call that never left."""
        conn.timeout = timeout
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise requests.ConnectTimeout(f"connect timed out: {exc}") from NotConnected(str(exc))
        except OSError as exc:  # refused, no route, unknown host, a TLS handshake refused
            conn.close()
            raise requests.ConnectionError(str(exc)) from NotConnected(
                exc.errno or 0, exc.strerror or str(exc)
            )
        # as urllib3 does: http.client writes a request's head and body apart, and with
        # Nagle's algorithm the body would wait for the vendor's delayed ACK (40 ms)
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections_made += 1

    def _take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        """An idle connection still open, the most recently used first."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or not _dropped(conn):
                return conn
            conn.close()

    def _give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def open_ahead(self, url: str, timeout: float) -> None:
        """Makes sure an open connection to ``url``'s host waits idle for the next call:
        a call that connects after its turn reaches the vendor late."""
        key = self._key(urlsplit(url))
        conn = self._take(key)
        if conn is None:
            conn = self._new(key, timeout)
            self._connect(conn, timeout)
        self._give_back(key, conn)

    def idle(self) -> list[http.client.HTTPConnection]:
        with self._lock:
            return [c for conns in self._idle.values() for c in conns]

    # -- a call -----------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
        on_written: Callable[[float], None],
    ) -> Answer:
        """One exchange. ``on_written(at)`` is told when the whole request was written out
        (the moment the vendor starts counting it)."""
        parts = urlsplit(url)
        key = self._key(parts)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        scheme, host, port = key
        try:
            request = request_bytes(
                method, target, host_header(host, port, 443 if scheme == "https" else 80),
                headers, body,
            )  # fmt: skip
        except http.client.InvalidURL as exc:
            raise requests.exceptions.InvalidURL(str(exc)) from NotConnected(str(exc))
        conn = self._take(key)
        if conn is None:
            conn = self._new(key, timeout)
            self._connect(conn, timeout)
        sock = conn.sock
        if sock is None:  # not connected, nothing sent
            raise requests.ConnectionError("no connection") from NotConnected("no connection")
        sock.settimeout(timeout)
        try:
            sock.sendall(request)
            on_written(time.time())
            raw = read_answer(sock, method)
        except TimeoutError as exc:
            conn.close()
            raise requests.ReadTimeout(f"no answer in time: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        answer_headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        cookies = False
        for name, value in raw.headers:
            seen = answer_headers.get(name)
            answer_headers[name] = value if seen is None else f"{seen}, {value}"
            cookies = cookies or name.lower() == "set-cookie"
        if raw.will_close:
            conn.close()
        else:
            self._give_back(key, conn)
        content = raw.content
        coding = answer_headers.get("Content-Encoding")
        if coding and content:
            try:
                content = _decoded(content, coding)
            except zlib.error as exc:
                raise requests.exceptions.ContentDecodingError(
                    f"the answer's {coding} is broken"
                ) from exc
        return Answer(raw.status, answer_headers, content, url, raw.message() if cookies else None)
