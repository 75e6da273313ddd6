"""Error translation of the API clients, over real HTTP against a tiny local server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bulk_changes.domain import errors
from bulk_changes.domain.audit import Exchange
from bulk_changes.domain.settings import (
    JasperAccount,
    RateLimit,
    RevioAccount,
    Secret,
    TelegenceAccount,
)
from bulk_changes.resources.http import HttpCaller, parse_retry_after
from bulk_changes.resources.jasper import JasperClient
from bulk_changes.resources.revio import RevioClient
from bulk_changes.resources.telegence import TelegenceClient

JASPER_KEY = "jasper-key-SECRET-1234"
TELEGENCE_SECRET = "telegence-SECRET-5678"
REVIO_PASSWORD = "revio-pass-SECRET-9"
REVIO_SUBSCRIPTION = "revio-sub-SECRET-0"
SECRETS = (JASPER_KEY, TELEGENCE_SECRET, REVIO_PASSWORD, REVIO_SUBSCRIPTION)

HTML_502 = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>Bad Gateway</h1></body></html>"
)


@dataclass
class Canned:
    status: int
    body: str | bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"


class CannedServer:
    """Answers each path with what a test set; ``echo`` paths send the request headers back."""

    def __init__(self) -> None:
        self.script: dict[str, Canned] = {}
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                outer.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                canned = outer.script.get(path, Canned(404, b"", content_type="text/plain"))
                payload = canned.body
                if payload == "ECHO":
                    payload = json.dumps(
                        {
                            "error": f"you sent {dict(self.headers)}",
                            "errorMessage": f"headers {dict(self.headers)}",
                            "errorCode": "10000001",
                            "description": f"got {dict(self.headers)}",
                        }
                    )
                data = payload.encode() if isinstance(payload, str) else payload
                if canned.delay:
                    time.sleep(canned.delay)
                try:
                    self.send_response(canned.status)
                    self.send_header("Content-Type", canned.content_type)
                    for name, value in canned.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_PUT = do_PATCH = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def set(self, path: str, status: int, body: Any = b"", **kw: Any) -> None:
        if not isinstance(body, str | bytes):
            body = json.dumps(body)
        self.script[path] = Canned(status, body, **kw)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RecordingLimiter:
    def __init__(self) -> None:
        self.slots: list[tuple[str, RateLimit]] = []
        self.penalties: list[tuple[str, float]] = []
        self.inside = False

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[None]:
        self.slots.append((account_name, limit))
        self.inside = True
        try:
            yield
        finally:
            self.inside = False

    def penalize(self, account_name: str, seconds: float) -> None:
        assert not self.inside, "penalize must not be called while holding a slot"
        self.penalties.append((account_name, seconds))


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    srv = CannedServer()
    yield srv
    srv.stop()


@dataclass
class Kit:
    server: CannedServer
    limiter: RecordingLimiter
    exchanges: list[Exchange]
    jasper: JasperClient
    telegence: TelegenceClient
    revio: RevioClient


@pytest.fixture
def kit(server: CannedServer) -> Kit:
    server.script.clear()
    server.seen.clear()
    limiter = RecordingLimiter()
    exchanges: list[Exchange] = []
    jasper = JasperClient(
        JasperAccount(
            name="j1",
            base_url=server.root + "/rws/api/v1",
            username="jasper-user",
            api_key=Secret(JASPER_KEY),
            timeout_seconds=2.0,
        ),
        limiter=limiter,
        on_exchange=exchanges.append,
    )
    telegence = TelegenceClient(
        TelegenceAccount(
            name="t1",
            base_url=server.root,
            app_id="app",
            app_secret=Secret(TELEGENCE_SECRET),
            timeout_seconds=2.0,
        ),
        limiter=limiter,
        on_exchange=exchanges.append,
    )
    revio = RevioClient(
        RevioAccount(
            name="r1",
            base_url=server.root + "/v1",
            username="bill",
            client_code="acme",
            password=Secret(REVIO_PASSWORD),
            subscription_key=Secret(REVIO_SUBSCRIPTION),
            timeout_seconds=2.0,
        ),
        limiter=limiter,
        on_exchange=exchanges.append,
    )
    return Kit(server, limiter, exchanges, jasper, telegence, revio)


DEVICE = "/rws/api/v1/devices/8901000000000000001"
ICCID = "8901000000000000001"


def jasper_error(code: str, message: str) -> dict[str, str]:
    return {"errorCode": code, "errorMessage": message}


# ---- throttling -----------------------------------------------------------------------


def test_429_with_retry_after_seconds(kit: Kit) -> None:
    kit.server.set(
        DEVICE, 429, jasper_error("40000029", "Rate limit exceeded"), headers={"Retry-After": "7"}
    )
    with pytest.raises(errors.Throttled) as caught:
        kit.jasper.get_device(ICCID)
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429 and caught.value.code == "40000029"
    assert kit.limiter.penalties == [("j1", 7.0)]


def test_429_with_retry_after_http_date(kit: Kit) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    kit.server.set(
        "/v1/Services/5",
        429,
        {"ok": False, "error": "Too many requests"},
        headers={"Retry-After": format_datetime(when, usegmt=True)},
    )
    with pytest.raises(errors.Throttled) as caught:
        kit.revio.get_service(5)
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31
    assert "Too many requests" in str(caught.value)
    assert kit.limiter.penalties[0][0] == "r1" and 25 <= kit.limiter.penalties[0][1] <= 31


def test_429_without_retry_after_penalizes_a_default_second(kit: Kit) -> None:
    kit.server.set("/sp/mobility/lineconfig/api/v1/service/5551234567", 429, b"")
    with pytest.raises(errors.Throttled) as caught:
        kit.telegence.get_line("5551234567")
    assert caught.value.retry_after is None
    assert kit.limiter.penalties == [("t1", 1.0)]


@pytest.mark.parametrize("status", [400, 500, 200])
def test_jasper_40000029_is_throttled_whatever_the_status(kit: Kit, status: int) -> None:
    kit.server.set(DEVICE, status, jasper_error("40000029", "Rate limit exceeded"))
    with pytest.raises(errors.Throttled) as caught:
        kit.jasper.set_status(ICCID, "ACTIVATED")
    assert caught.value.code == "40000029" and caught.value.status == status
    assert "Rate limit exceeded" in str(caught.value)
    assert kit.limiter.penalties == [("j1", 1.0)]


def test_parse_retry_after() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Mon, 01 Jan 2024 00:00:10 GMT", now=now) == 10.0
    assert parse_retry_after("Mon, 01 Jan 2023 00:00:10 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# ---- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_a_server_error_with_the_system_text(kit: Kit, status: int) -> None:
    kit.server.set(DEVICE, status, jasper_error("30000001", "Unknown server error"))
    with pytest.raises(errors.ServerError) as caught:
        kit.jasper.get_device(ICCID)
    assert str(caught.value) == f"jasper HTTP {status} code 30000001: Unknown server error"
    assert isinstance(caught.value, errors.RetryableError)


def test_jasper_404_not_found_message_is_the_carriers(kit: Kit) -> None:
    kit.server.set(
        DEVICE, 404, jasper_error("20000001", f"Resource not found - Invalid ICCID: {ICCID}")
    )
    with pytest.raises(errors.NotFound) as caught:
        kit.jasper.get_device(ICCID)
    assert caught.value.message == f"Resource not found - Invalid ICCID: {ICCID}"
    assert caught.value.code == "20000001"
    assert str(caught.value) == (
        f"jasper HTTP 404 code 20000001: Resource not found - Invalid ICCID: {ICCID}"
    )


def test_telegence_error_body_description(kit: Kit) -> None:
    kit.server.set(
        "/sp/mobility/lineconfig/api/v1/service/5551234567",
        404,
        {
            "id": "0e6b7a4c-1111-4222-8333-444455556666",
            "description": "Subscriber number not found: 5551234567",
        },
    )
    with pytest.raises(errors.NotFound) as caught:
        kit.telegence.get_line("5551234567")
    assert caught.value.message == "Subscriber number not found: 5551234567"


def test_revio_error_keys(kit: Kit) -> None:
    kit.server.set(
        "/v1/Services/5",
        400,
        {
            "ok": False,
            "errors": [{"field": "description", "message": "too long"}, "second problem"],
        },
    )
    with pytest.raises(errors.Rejected) as caught:
        kit.revio.patch_service(5, [{"op": "replace", "path": "/description", "value": "x"}])
    assert caught.value.message == "description: too long; second problem"
    kit.server.set("/v1/Services/6", 405, "Method Not Allowed", content_type="text/plain")
    with pytest.raises(errors.Rejected, match="Method Not Allowed"):
        kit.revio.get_service(6)


def test_revio_envelope_ok_false_or_missing(kit: Kit) -> None:
    kit.server.set("/v1/Services/5", 200, {"ok": False, "message": "service is locked"})
    with pytest.raises(errors.Rejected, match="service is locked"):
        kit.revio.get_service(5)
    kit.server.set("/v1/Services/6", 200, {"service_id": 6})
    with pytest.raises(errors.GarbageResponse, match="envelope"):
        kit.revio.get_service(6)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, errors.AuthenticationFailed),
        (403, errors.AuthenticationFailed),
        (400, errors.Rejected),
        (409, errors.Rejected),
    ],
)
def test_4xx(kit: Kit, status: int, kind: type[Exception]) -> None:
    kit.server.set(DEVICE, status, jasper_error("10000028", "Unrecognized parameters: foo"))
    with pytest.raises(kind) as caught:
        kit.jasper.set_status(ICCID, "ACTIVATED")
    assert isinstance(caught.value, errors.PermanentError)
    assert "Unrecognized parameters: foo" in str(caught.value)


# ---- garbage -------------------------------------------------------------------------------


def test_html_502_is_garbage_with_a_readable_message(kit: Kit) -> None:
    kit.server.set(DEVICE, 502, HTML_502, content_type="text/html")
    with pytest.raises(errors.GarbageResponse) as caught:
        kit.jasper.get_device(ICCID)
    assert caught.value.message == (
        "jasper answered HTTP 502 with an HTML page, not JSON: 502 Bad Gateway"
    )
    assert "<html" not in str(caught.value)


def test_non_json_200_is_garbage(kit: Kit) -> None:
    kit.server.set(DEVICE, 200, "OK then", content_type="text/plain")
    with pytest.raises(
        errors.GarbageResponse, match="HTTP 200 with a non-JSON body, not JSON: OK then"
    ):
        kit.jasper.get_device(ICCID)


def test_html_404_is_not_a_missing_device(kit: Kit) -> None:
    kit.server.set(DEVICE, 404, "<html><title>Not Found</title></html>", content_type="text/html")
    with pytest.raises(errors.Rejected, match="base URL") as caught:
        kit.jasper.get_device(ICCID)
    assert not isinstance(caught.value, errors.NotFound)


def test_jasper_2xx_without_iccid_is_a_failure(kit: Kit) -> None:
    for status in (200, 202):
        kit.server.set(DEVICE, status, {"status": "done"})
        with pytest.raises(errors.GarbageResponse, match="without the device's iccid"):
            kit.jasper.set_status(ICCID, "ACTIVATED")
    kit.server.set(DEVICE, 200, b"")
    with pytest.raises(errors.GarbageResponse, match="empty body"):
        kit.jasper.set_status(ICCID, "ACTIVATED")
    kit.server.set(DEVICE, 200, {"iccid": "8901000000000000999"})
    with pytest.raises(errors.GarbageResponse, match="not 8901000000000000001"):
        kit.jasper.set_status(ICCID, "ACTIVATED")
    kit.server.set(DEVICE, 200, jasper_error("10000030", "The role may not call this"))
    with pytest.raises(errors.Rejected, match="The role may not call this"):
        kit.jasper.set_status(ICCID, "ACTIVATED")
    # the failure is in the audit too
    assert kit.exchanges[-1].error is not None and "role" in kit.exchanges[-1].error


def test_jasper_success_202_with_iccid(kit: Kit) -> None:
    kit.server.set(DEVICE, 202, {"iccid": ICCID})
    assert kit.jasper.set_rate_plan(ICCID, "PLAN-A", "CP-1") == {
        "iccid": ICCID,
        "ratePlan": "PLAN-A",
        "communicationPlan": "CP-1",
    }
    sent = json.loads(kit.server.seen[-1]["body"])
    assert sent == {"ratePlan": "PLAN-A", "communicationPlan": "CP-1"}
    assert kit.server.seen[-1]["method"] == "PUT"


# ---- transport -----------------------------------------------------------------------------


def test_timeout_with_a_tiny_timeout(kit: Kit, server: CannedServer) -> None:
    client = JasperClient(
        JasperAccount(
            name="slow",
            base_url=server.root + "/rws/api/v1",
            username="u",
            api_key=Secret(JASPER_KEY),
            timeout_seconds=0.2,
        ),
        limiter=kit.limiter,
        on_exchange=kit.exchanges.append,
    )
    kit.server.set(DEVICE, 200, {"iccid": ICCID}, delay=1.0)
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError_) as caught:
        client.get_device(ICCID)
    assert time.monotonic() - started < 0.9
    assert "0.2 s" in str(caught.value)
    assert kit.exchanges[-1].status is None and kit.exchanges[-1].error


def revio_client_at(kit: Kit, base_url: str) -> RevioClient:
    """A Rev.io client of another account, at ``base_url``, sharing the kit's limiter
    and exchange log."""
    return RevioClient(
        RevioAccount(
            name="elsewhere",
            base_url=base_url,
            username="bill",
            client_code="acme",
            password=Secret(REVIO_PASSWORD),
            subscription_key=Secret(REVIO_SUBSCRIPTION),
            timeout_seconds=2.0,
        ),
        limiter=kit.limiter,
        on_exchange=kit.exchanges.append,
    )


def test_connection_refused(kit: Kit) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = revio_client_at(kit, f"http://127.0.0.1:{port}/v1")
    with pytest.raises(errors.ConnectionFailed) as caught:
        client.get_service(1)
    assert "connection refused" in str(caught.value)
    assert str(caught.value).startswith("revio: could not reach revio")


def test_a_request_that_cannot_be_built_fails_without_taking_a_turn(kit: Kit) -> None:
    # an empty label: requests cannot send it
    client = revio_client_at(kit, "http://.billing.example/v1")
    with pytest.raises(errors.ConnectionFailed) as caught:
        client.get_service(1)
    assert "the call failed (InvalidURL" in str(caught.value)
    assert kit.limiter.slots == []
    assert len(kit.exchanges) == 1


# ---- the limiter, timeout and audit ----------------------------------------------------------


def test_each_call_takes_a_slot_of_its_account(kit: Kit) -> None:
    kit.server.set(DEVICE, 200, {"iccid": ICCID})
    kit.jasper.get_device(ICCID)
    kit.jasper.set_username(ICCID, "jo")
    assert kit.limiter.slots == [("j1", RateLimit(5.0, 1))] * 2
    assert json.loads(kit.server.seen[-1]["body"]) == {"accountCustom1": "jo"}


def test_exchange_has_redacted_body_truncated_answer_and_no_auth(kit: Kit) -> None:
    kit.server.set("/v1/thing", 200, json.dumps({"ok": True, "blob": "x" * 10_000}))
    caller: HttpCaller = kit.revio.http
    caller.request("POST", "/thing", json_body={"name": "n", "apiKey": "plain-key-value"})
    exchange = kit.exchanges[-1]
    assert exchange.system == "revio" and exchange.account == "r1"
    assert exchange.method == "POST" and exchange.url == kit.server.root + "/v1/thing"
    assert exchange.status == 200 and exchange.error is None and exchange.duration_ms >= 0
    assert exchange.request_body is not None and "plain-key-value" not in exchange.request_body
    assert json.loads(exchange.request_body) == {"apiKey": "***", "name": "n"}
    assert exchange.response_body is not None and exchange.response_body.endswith("...(truncated)")
    assert len(exchange.response_body) < 4100
    # the credentials did go out, in headers only
    headers = kit.server.seen[-1]["headers"]
    assert headers["Ocp-Apim-Subscription-Key"] == REVIO_SUBSCRIPTION
    assert headers["Authorization"].startswith("Basic ")


def test_no_credential_in_any_message_or_exchange(kit: Kit) -> None:
    """The server echoes the request headers (credentials included) in its error bodies."""
    kit.server.set(DEVICE, 500, "ECHO")
    kit.server.set("/sp/mobility/lineconfig/api/v1/service/5551234567", 400, "ECHO")
    kit.server.set("/v1/Services/5", 401, "ECHO")
    kit.server.set("/v1/Services/6", 200, "ECHO")
    caught: list[errors.ExternalError] = []
    calls = [
        lambda: kit.jasper.get_device(ICCID),
        lambda: kit.telegence.change_status("5551234567", "suspend", "CR", "2024-01-01"),
        lambda: kit.revio.get_service(5),
        lambda: kit.revio.get_service(6),
    ]
    for call in calls:
        with pytest.raises(errors.ExternalError) as exc_info:
            call()
        caught.append(exc_info.value)
    auth_headers = [
        s["headers"]["Authorization"] for s in kit.server.seen if "Authorization" in s["headers"]
    ]
    tokens = [h.split(" ", 1)[1] for h in auth_headers]
    assert len(tokens) == 3
    texts = [str(e) for e in caught] + [repr(e) for e in caught] + [e.message for e in caught]
    for exchange in kit.exchanges:
        texts += [
            exchange.url,
            exchange.request_body or "",
            exchange.response_body or "",
            exchange.error or "",
            repr(exchange),
        ]
    assert len(kit.exchanges) == 4
    joined = "\n".join(texts)
    for secret in (*SECRETS, *tokens):
        assert secret not in joined
    assert "***" in joined  # the echo was there, masked
