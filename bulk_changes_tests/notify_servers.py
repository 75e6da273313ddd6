"""Real servers for notification tests: an SMTP server (aiosmtpd) that keeps what it
receives, and an HTTP webhook receiver that verifies every request with the
``standardwebhooks`` package (an implementation independent of the project's)."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bulk_changes.resources.local_sqs import free_port

# ---- SMTP ---------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None


class _Handler:
    def __init__(self, box: list[Received]) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        self.box.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    received: list[Received]
    controller: Controller
    ca_file: str = ""

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


class _TlsController(Controller):
    """Controller for implicit TLS: its own readiness check must speak TLS as a client."""

    def __init__(self, *args: Any, client_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client_context = client_context

    def _trigger_server(self) -> None:
        import socket

        with (
            socket.create_connection((self.hostname, self.port), 1.0) as raw,
            self._client_context.wrap_socket(raw, server_hostname=self.hostname) as s,
        ):
            s.recv(1024)


def start_smtp(
    tmp_path: Path,
    *,
    security: str = "none",
    users: dict[str, str] | None = None,
) -> SmtpServer:
    """security: none, starttls (required), tls (implicit). users: logins accepted."""
    received: list[Received] = []
    port = free_port()
    kwargs: dict[str, Any] = {}
    ca_file = ""
    client_context = None
    if security in ("starttls", "tls"):
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_context)
        ca_path = tmp_path / f"ca-{port}.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        ca_file = str(ca_path)
        client_context = ssl.create_default_context(cafile=ca_file)
        if security == "starttls":
            kwargs.update(tls_context=server_context, require_starttls=True)
        else:
            kwargs.update(ssl_context=server_context)
    if users is not None:

        def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
            ok = (
                isinstance(auth_data, LoginPassword)
                and users.get(auth_data.login.decode()) == auth_data.password.decode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=security != "none",
        )
    handler = _Handler(received)
    if security == "tls":
        controller: Controller = _TlsController(
            handler, hostname="127.0.0.1", port=port, client_context=client_context, **kwargs
        )
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return SmtpServer("127.0.0.1", port, received, controller, ca_file)


# ---- webhooks -----------------------------------------------------------------------------


@dataclass
class Hit:
    webhook_id: str | None
    timestamp: str | None
    body: bytes
    verified: bool
    error: str | None
    status: int

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    """An endpoint that answers ``status`` (200 by default) to requests that verify, 400
    to those that do not, and records every request."""

    secret: str
    port: int = 0
    status: int = 200
    hits: list[Hit] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/bulk-changes"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified, error = True, None
                except WebhookVerificationError as exc:
                    verified, error = False, str(exc)
                status = receiver.status if verified else 400
                with receiver.lock:
                    receiver.hits.append(
                        Hit(
                            headers.get("webhook-id"),
                            headers.get("webhook-timestamp"),
                            body,
                            verified,
                            error,
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self) -> list[Hit]:
        return [h for h in self.hits if h.verified and 200 <= h.status < 300]
