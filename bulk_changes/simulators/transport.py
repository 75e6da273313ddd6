"""HTTP plumbing: the request and response records, and the threaded stdlib server.

The handler asks the simulator for the whole answer first and only then writes it, so
everything the simulator does per call (its in-flight count above all) is over before
the first byte reaches the client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import sys
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    raw_path: str = ""
    # when its first byte reached this host (see arrival_time); None: not known
    arrived_at: float | None = None

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def basic_auth(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            user, sep, password = base64.b64decode(token.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # close the connection without answering (the answer lost on the way back)
    drop: bool = False

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, str) and not self.content_type.endswith("json"):
            return self.body.encode("utf-8")
        return json.dumps(self.body).encode("utf-8")


class Handles(Protocol):
    def handle(self, request: Request) -> Response: ...


# Linux's SO_TIMESTAMPNS (the kernel's receive time of each packet, as wall-clock
# seconds and nanoseconds); the socket module does not name it.
_SO_TIMESTAMPNS = 35 if sys.platform.startswith("linux") else None
_TIMESPEC = struct.Struct("@qq")


def stamp_arrivals(sock: socket.socket) -> bool:
    """Ask the kernel to time-stamp what arrives on ``sock``. -> whether it will."""
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def arrival_time(sock: socket.socket) -> float | None:
    """Wait for the next request's first byte on ``sock`` (left unread) and return when
    the kernel received it: the moment a vendor's gateway counts the call, whenever this
    process's thread gets to run. None when the kernel did not say or the connection
    closed (the caller reads as usual and finds out)."""
    data, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(_TIMESPEC.size), socket.MSG_PEEK)
    if not data:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
            return seconds + nanoseconds / 1e9
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm the second waits for
    # the client's delayed ACK (40 ms), an artefact no real API has. Measured: 43 ms a call.
    disable_nagle_algorithm = True
    timeout = 120
    server: SimHTTPServer
    arrived_at: float | None = None

    def handle_one_request(self) -> None:
        # The simulator counts a call when it arrived, not when this thread got to read
        # it: under load a thread of this process can wait tens of milliseconds for a core
        # or the interpreter lock, and a call counted that late crowds the window of the
        # calls after it, which left on time.
        self.arrived_at = None
        if self.server.stamps_arrivals:
            try:
                self.arrived_at = arrival_time(self.connection)
            except TimeoutError:
                self.close_connection = True  # idle for the handler's timeout, as below
                return
            except OSError:
                pass  # the read below meets the same failure and handles it
        super().handle_one_request()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=self.headers,
            body=body,
            raw_path=self.path,
            arrived_at=self.arrived_at,
        )
        response = self.server.simulator.handle(request)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = response.encode()
        try:
            self.send_response(response.status)
            if response.body is not None:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stamps_arrivals = False

    def __init__(self, address: tuple[str, int], simulator: Handles) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        super().server_bind()
        # Set on the listening socket, so every accepted connection has it from its first
        # packet: set after the accept, a request sent at once can arrive unstamped.
        self.stamps_arrivals = stamp_arrivals(self.socket)
