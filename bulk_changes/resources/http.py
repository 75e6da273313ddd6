"""The call machinery every API client shares (requests).

For each HTTP call: open the connection (``connect_ahead``), take the account's limiter
slot, call with the account's timeout, tell the limiter when the request left (the
connections stamp it: ``DepartureStampingAdapter``), measure it, report an audit
``Exchange`` (request body redacted, never a credential, response text truncated), and
translate every failure into the project's error tree
(``bulk_changes.domain.errors``) at this boundary.

Translation, in this order:

- ``requests.Timeout`` -> ``TimeoutError_``; other connection failures -> ``ConnectionFailed``;
- HTTP 429, or a throttling error code of the system (Jasper ``40000029``) whatever the
  status -> ``Throttled`` (``retry_after`` from ``Retry-After``, seconds or an HTTP date),
  and the account is penalized for that long (1 s when the answer does not say);
- 401/403 -> ``AuthenticationFailed``;
- a body that is not JSON where JSON was expected: 4xx keep their meaning (an HTML 404
  means a wrong URL, not a missing device: ``Rejected``), anything else -> ``GarbageResponse``;
- 404 -> ``NotFound``; 5xx -> ``ServerError``; other statuses outside 2xx -> ``Rejected``;
- a client's own check of a 2xx body (``validate``) may raise any of these too.

Messages carry the system's own error text; every credential value of the account is
scrubbed from messages and audit text, whatever the other side echoes.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from bulk_changes.domain import errors
from bulk_changes.domain.audit import Exchange, to_text
from bulk_changes.domain.settings import RateLimit
from bulk_changes.processing import stopping
from bulk_changes.resources.http_connections import Answer, KeepAliveConnections, NotConnected
from bulk_changes.resources.lean_request import HeaderCache, LeanRequest, lean_request
from bulk_changes.resources.rate_limit import NoLimiter

DEFAULT_THROTTLE_DELAY = 1.0
MAX_MESSAGE = 500

OnExchange = Callable[[Exchange], None] | None
# (body parsed as JSON or None, raw text) -> (the system's own message, its error code)
ErrorReader = Callable[[Any, str], tuple[str | None, str | None]]
Validator = Callable[["ApiResponse"], None]


class Departures(Protocol):
    def departed(self, at: float) -> None:
        """The call's request left at ``at`` (wall-clock seconds), all of it written."""


class Limiter(Protocol):
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> AbstractContextManager[Departures | None]:
        """Hold a turn for one call. What it yields, if anything, is told when the call's
        request really left: the limiter can count the next turns from then."""

    def penalize(self, account_name: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any  # parsed JSON, None when the answer had no body
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)


# ---- helpers shared by the clients ------------------------------------------------------


def basic_auth_header(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_H1 = re.compile(r"<h1[^>]*>(.*?)</h1>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def looks_like_html(text: str, content_type: str = "") -> bool:
    head = text.lstrip()[:200].lower()
    return "html" in content_type.lower() or head.startswith(("<!doctype html", "<html", "<"))


def html_summary(text: str) -> str:
    """The readable gist of an HTML page: its title, else its first heading, else its text."""
    for pattern in (_TITLE, _H1):
        match = pattern.search(text)
        if match:
            gist = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", match.group(1)))).strip()
            if gist:
                return shorten(gist)
    return shorten(_SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()) or "(empty page)"


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def plain_reader(body: Any, text: str) -> tuple[str | None, str | None]:
    """Error text of a system whose error body is not known: common keys, else the text."""
    if isinstance(body, dict):
        parts: list[str] = []
        for key in ("error", "message", "errors", "description", "detail", "title"):
            if key in body and body[key] not in (None, "", [], {}):
                parts.append(flatten(body[key]))
        code = body.get("code") or body.get("errorCode")
        if parts:
            return "; ".join(dict.fromkeys(parts)), str(code) if code is not None else None
    return (shorten(text) if text.strip() else None), None


def flatten(value: Any) -> str:
    """A readable one-line text of an error value (string, list or mapping)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(flatten(v) for v in value)
    if isinstance(value, dict):
        if "message" in value and len(value) <= 3:
            prefix = value.get("field") or value.get("name") or value.get("property")
            return f"{prefix}: {flatten(value['message'])}" if prefix else flatten(value["message"])
        return "; ".join(f"{k}: {flatten(v)}" for k, v in value.items())
    return json.dumps(value)


def _connection_reason(exc: BaseException) -> str:
    """The innermost, readable reason of a requests connection failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    reason = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, OSError) and current.strerror:
            reason = current.strerror
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = current.__cause__ or current.__context__
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        current = nxt
    lowered = reason.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "host name not known"
    return shorten(reason, 200)


def _never_connected(exc: BaseException) -> bool:
    """Whether a connection failure happened while connecting (nothing was sent)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | ConnectionRefusedError | NotConnected):
            return True
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = current.__cause__ or current.__context__
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        current = nxt
    return False


# ---- the caller -------------------------------------------------------------------------


# When this thread's last request was written out: the moment the vendor starts counting
# it, give or take the network. The thread can stall for a core or the interpreter lock
# between the limiter's turn and the write (measured up to 18 ms with four run workers
# on two cores); counted from the turn, such a call would crowd the vendor's window.
_departure = threading.local()


class _DepartureStamping:
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        _departure.at = time.time()


class _StampingHTTPConnection(_DepartureStamping, HTTPConnection):
    pass


class _StampingHTTPSConnection(_DepartureStamping, HTTPSConnection):
    pass


class _StampingHTTPPool(HTTPConnectionPool):
    ConnectionCls = _StampingHTTPConnection


class _StampingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _StampingHTTPSConnection


class DepartureStampingAdapter(HTTPAdapter):
    """requests' adapter, its connections noting when each request was written out
    (``last_departure``). Through a proxy, requests builds other pools: no stamps."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _StampingHTTPPool,
            "https": _StampingHTTPSPool,
        }


def _stamp_departure(at: float) -> None:
    _departure.at = at


class _CookieSource:
    """What requests' cookie jar reads of an answer: its parsed headers."""

    def __init__(self, message: Any) -> None:
        self._original_response = self
        self.msg = message


def forget_departure() -> None:
    _departure.at = None


def last_departure() -> float | None:
    """When this thread's last request through a ``DepartureStampingAdapter`` was
    written out, since ``forget_departure``; None if none was."""
    at: float | None = getattr(_departure, "at", None)
    return at


def environment_session(base_url: str) -> requests.Session:
    """A session with the environment's proxy and CA settings read once, here: by default
    requests walks os.environ again on every call (a few per cent of a run worker's CPU
    under py-spy)."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, DepartureStampingAdapter())
    session.proxies.update(requests.utils.get_environ_proxies(base_url))  # NO_PROXY too
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


def connect_ahead(
    session: requests.Session,
    prepared: requests.PreparedRequest,
    settings: Mapping[str, Any],
    timeout_seconds: float,
) -> None:
    """Make sure the connection pool ``prepared`` will be sent through holds an open
    connection. A call that has to connect after its turn reaches the vendor late (TCP
    and TLS set-up, the server's new connection thread), and a late call crowds the
    vendor's window of the calls after it. Measured at localhost, four new processes at
    once: their first calls reached the server 1.3-2.7 ms (median) and up to 12.6 ms after
    they were sent, against 0.5 ms for later calls; connected ahead, 0.5 ms and at most
    7.4 ms. urllib3 has no public way to open a pooled connection ahead of a request,
    hence its pool's own get/put."""
    adapter = session.get_adapter(prepared.url or "")
    if not isinstance(adapter, HTTPAdapter):
        return
    pool = adapter.get_connection_with_tls_context(
        prepared, settings.get("verify", True), settings.get("proxies"), settings.get("cert")
    )
    conn = pool._get_conn()  # drops a connection the server has closed meanwhile
    try:
        if not conn.is_connected:
            conn.timeout = timeout_seconds
            conn.connect()
    except Exception:
        conn.close()
        raise
    finally:
        pool._put_conn(conn)  # the slot it came from, open or not


class HttpCaller:
    """Makes one client's HTTP calls: limiter, timeout, audit and error translation."""

    def __init__(
        self,
        *,
        system: str,
        account_name: str,
        base_url: str,
        rate_limit: RateLimit,
        timeout_seconds: float,
        headers: Mapping[str, str],
        secrets: Iterable[str],
        error_reader: ErrorReader = plain_reader,
        throttle_codes: Iterable[str] = (),
        limiter: Limiter | None = None,
        on_exchange: OnExchange = None,
        session: requests.Session | None = None,
        default_throttle_delay: float = DEFAULT_THROTTLE_DELAY,
    ) -> None:
        self.system = system
        self.account_name = account_name
        self.base_url = base_url.rstrip("/")
        self.rate_limit = rate_limit
        self.timeout_seconds = timeout_seconds
        self.headers = dict(headers)
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)
        self.error_reader = error_reader
        self.throttle_codes = frozenset(str(c) for c in throttle_codes)
        self.limiter: Limiter = limiter if limiter is not None else NoLimiter()
        self.on_exchange = on_exchange
        self.session = session if session is not None else environment_session(self.base_url)
        self.default_throttle_delay = default_throttle_delay
        # Off after a failed attempt (an unreachable host would cost its connect timeout
        # twice a call), on again once a call has been answered.
        self._connecting_ahead = True
        self._session_settings: dict[str, Any] | None = None
        # the session's CA settings, read once as requests reads them per call
        self.connections = KeepAliveConnections(verify=self.session.verify)
        self._headers = HeaderCache()

    # -- public -----------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        validate: Validator | None = None,
    ) -> ApiResponse:
        """One call; returns the 2xx answer with its JSON body, or raises an ExternalError."""
        url = self.url(path)
        all_headers = dict(self.headers)
        data: bytes | None = None
        if json_body is not None:
            all_headers.setdefault("Content-Type", "application/json")
            data = json.dumps(json_body).encode("utf-8")
        all_headers.setdefault("Accept", "application/json")
        all_headers.update(headers or {})
        request_text = self._audit_text(json_body)
        shown_url = url
        started = 0.0
        duration_ms = 0.0
        raw: Answer | None = None
        failure: requests.RequestException | None = None
        departed: float | None = None
        penalized = False  # the limiter was told of a throttled answer inside the slot
        # The slot's lease outlives any call that can still be in flight (timeouts are per
        # read, so twice the timeout): a killed worker's slot comes back that soon.
        lease = 2 * self.timeout_seconds + 5
        # Built before the turn, as Session.request would build it: on a one-in-flight
        # account the time from one answer to the next call is lost budget.
        lean: LeanRequest | None = None
        prepared: requests.PreparedRequest | None = None
        settings: dict[str, Any] = {}
        try:
            lean = self._lean_request(method, url, params, data, all_headers)
            if lean is None:
                prepared = self._prepare(method, url, params, data, all_headers)
                settings = self._settings(prepared)
        except requests.RequestException as exc:  # a URL requests cannot send: no call made
            failure = exc
        if failure is None and self._connecting_ahead:
            try:
                if lean is not None:
                    self.connections.open_ahead(lean.url, self.timeout_seconds)
                elif prepared is not None:
                    connect_ahead(self.session, prepared, settings, self.timeout_seconds)
            except Exception:
                self._connecting_ahead = False  # the call itself will say what is wrong
        if failure is None:
            with self.limiter.slot(
                self.account_name, self.rate_limit, lease_seconds=lease
            ) as departures:
                # the turn may have come after the run was told to stop: no call then
                stopping.check()
                started = time.perf_counter()
                forget_departure()
                try:
                    # the body is read inside the slot: the call is over only once it is read
                    if lean is not None:
                        raw = self._send_lean(lean, (method, url, params, data, all_headers))
                    elif prepared is not None:
                        raw = self._send(prepared, settings)
                    self._connecting_ahead = True
                    if departures is not None and raw is not None:
                        penalized = self._tell(departures, raw)
                except requests.RequestException as exc:
                    failure = exc
                finally:
                    departed = last_departure()
                    if departures is not None and departed is not None:
                        departures.departed(departed)
                duration_ms = (time.perf_counter() - started) * 1000.0
        if raw is not None and raw.url:
            shown_url = raw.url

        if failure is not None or raw is None:
            lost = self._transport_error(failure, method, url, departed is not None)
            self._report(method, shown_url, request_text, None, None, duration_ms, lost)
            raise lost from failure

        text = raw.text
        response = ApiResponse(raw.status_code, None, text, dict(raw.headers))
        error_or_response = self._translate(method, raw, response)
        error: errors.ExternalError | None
        if isinstance(error_or_response, errors.ExternalError):
            error = error_or_response
        else:
            response = error_or_response
            error = None
            if validate is not None:
                try:
                    validate(response)
                except errors.ExternalError as exc:
                    error = self._scrubbed(exc)
        self._report(method, shown_url, request_text, raw.status_code, text, duration_ms, error)
        if error is not None:
            if isinstance(error, errors.Throttled) and not penalized:
                delay = (
                    error.retry_after
                    if error.retry_after is not None
                    else self.default_throttle_delay
                )
                self.limiter.penalize(self.account_name, delay)
            raise error
        return response

    # -- internals --------------------------------------------------------------------

    def _plain_session(self) -> bool:
        """The session adds nothing to a request but its headers: no cookies (yet), auth,
        params, hooks, nor the environment's settings. Merging those was a tenth of a
        run worker's CPU per call under cProfile."""
        session = self.session
        return not (
            session.trust_env
            or session.auth
            or session.params
            or session.cookies
            or any(session.hooks.values())
        )

    def _prepare(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> requests.PreparedRequest:
        """The request as ``Session.prepare_request`` would prepare it."""
        if not self._plain_session():
            return self.session.prepare_request(
                requests.Request(method, url, params=params, data=data, headers=dict(headers))
            )
        merged = requests.structures.CaseInsensitiveDict(self.session.headers)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.prepare_url(url, params)
        prepared.prepare_headers({k: v for k, v in merged.items() if v is not None})
        prepared.prepare_body(data, None)
        prepared.prepare_auth(None, url)  # credentials in the URL, as prepare() reads them
        prepared.prepare_hooks(requests.hooks.default_hooks())
        return prepared

    def _settings(self, prepared: requests.PreparedRequest) -> dict[str, Any]:
        """``Session.merge_environment_settings``: the same for every call of a session
        that ignores the environment (its proxies and CA read once, environment_session)."""
        if self.session.trust_env:
            return self.session.merge_environment_settings(prepared.url or "", {}, None, None, None)
        if self._session_settings is None:
            self._session_settings = self.session.merge_environment_settings(
                prepared.url or "", {}, None, None, None
            )
        return dict(self._session_settings)

    def _lean_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> LeanRequest | None:
        """The call as ``KeepAliveConnections`` sends it, when it can: the session is ours
        (environment_session's adapter) and adds nothing but headers, the call needs no
        proxy nor client certificate, and its URL and parameters are plain
        (``lean_request``). None: requests prepares and sends it."""
        session = self.session
        if (
            not self._plain_session()
            or session.cert
            or not isinstance(session.get_adapter(url), DepartureStampingAdapter)
            or (session.proxies and requests.utils.select_proxy(url, session.proxies))
        ):
            return None
        merged = self._headers.merged(session.headers, headers)
        return lean_request(method, url, params, data, merged)

    def _send(self, prepared: requests.PreparedRequest, settings: Mapping[str, Any]) -> Answer:
        raw = self.session.send(
            prepared, timeout=self.timeout_seconds, allow_redirects=False, **settings
        )
        return Answer(raw.status_code, raw.headers, raw.content, raw.url or "")

    def _send_lean(self, lean: LeanRequest, call: tuple[Any, ...]) -> Answer:
        """Over the keep-alive connections; ``call``: the arguments of ``_prepare``, for a
        cookie the vendor sets (requests' jar reads it off a prepared request)."""
        answer = self.connections.send(
            lean.method, lean.url, lean.body, lean.headers, self.timeout_seconds, _stamp_departure
        )
        if answer.message is not None and "Set-Cookie" in answer.headers:
            # kept as requests keeps them; the session sends them back (through requests)
            requests.cookies.extract_cookies_to_jar(
                self.session.cookies, self._prepare(*call), _CookieSource(answer.message)
            )
        return answer

    def _carries_throttle_code(self, text: str) -> bool:
        """The system's own error code says throttled (read as ``_translate`` reads it)."""
        if not any(code in text for code in self.throttle_codes):
            return False
        try:
            body = json.loads(text)
        except ValueError:
            return False
        _, code = self.error_reader(body, text)
        return code is not None and str(code) in self.throttle_codes

    def _tell(self, departures: Departures, raw: Answer) -> bool:
        """Tell the limiter how the call went while its slot is still held: a throttled
        answer must move the account's next turns on before anyone takes them. -> whether
        the limiter took the throttled answer (then it needs no ``penalize``)."""
        status = raw.status_code
        throttled = status == 429 or self._carries_throttle_code(raw.text)
        if throttled:
            note = getattr(departures, "throttled", None)
            if note is None:
                return False
            delay = parse_retry_after(raw.headers.get("Retry-After"))
            note(delay if delay is not None else self.default_throttle_delay)
            return True
        if 200 <= status < 300:
            answered = getattr(departures, "answered", None)
            if answered is not None:
                answered(time.time())
        return False

    def _audit_text(self, body: Any) -> str | None:
        text = to_text(body)
        return self.scrub(text) if text is not None else None

    def _transport_error(
        self,
        exc: requests.RequestException | None,
        method: str,
        url: str,
        written: bool = False,
    ) -> errors.ExternalError:
        """``written``: the connection stamped the request as written out. Without the
        stamp (through a proxy nothing stamps) only a failure to connect proves the
        request never left: anything else may have reached the system."""
        where = f"{method} {self.scrub(url)}"
        if isinstance(exc, requests.Timeout):
            unsent = isinstance(exc, requests.ConnectTimeout) and not written
            phase = (
                "connecting (the request was not sent)"
                if unsent
                else "waiting for the answer (it may have been applied)"
            )
            return errors.TimeoutError_(
                f"no answer within {self.timeout_seconds:g} s while {phase}: {where}",
                system=self.system,
                sent=not unsent,
            )
        if isinstance(exc, requests.ConnectionError):
            sent = written or not _never_connected(exc)
            after = " after the request was sent" if sent else ""
            return errors.ConnectionFailed(
                f"could not reach {self.system} ({self.scrub(_connection_reason(exc))})"
                f"{after}: {where}",
                system=self.system,
                sent=sent,
            )
        reason = self.scrub(shorten(str(exc), 200)) if exc is not None else "no answer"
        return errors.ConnectionFailed(
            f"the call failed ({type(exc).__name__}: {reason}): {where}",
            system=self.system,
            sent=written,
        )

    def _translate(
        self, method: str, raw: Answer, response: ApiResponse
    ) -> ApiResponse | errors.ExternalError:
        status = raw.status_code
        text = response.text
        content_type = raw.headers.get("Content-Type", "")
        body: Any = None
        is_json = True
        if text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                is_json = False
        message, code = self.error_reader(body, text) if is_json else (None, None)
        message = self.scrub(message) if message else None
        kw: dict[str, Any] = {"system": self.system, "status": status, "code": code}

        if status == 429 or (code is not None and str(code) in self.throttle_codes):
            retry_after = parse_retry_after(raw.headers.get("Retry-After"))
            return errors.Throttled(message or "rate limit exceeded", retry_after=retry_after, **kw)
        if status in (401, 403):
            return errors.AuthenticationFailed(
                message or ("credentials refused" if status == 401 else "access forbidden"), **kw
            )
        if not is_json:
            kind = "an HTML page" if looks_like_html(text, content_type) else "a non-JSON body"
            gist = self.scrub(html_summary(text) if "HTML" in kind else shorten(text, 200))
            described = f"{self.system} answered HTTP {status} with {kind}, not JSON: {gist}"
            if 400 <= status < 500:
                hint = " (not the API's own answer: check the account's base URL)"
                return errors.Rejected(described + (hint if status == 404 else ""), **kw)
            return errors.GarbageResponse(described, **kw)
        if status == 404:
            return errors.NotFound(message or f"not found: {method} {raw.url}", **kw)
        if status >= 500:
            return errors.ServerError(message or "server error", **kw)
        if 300 <= status < 400:
            target = raw.headers.get("Location", "?")
            return errors.Rejected(f"{message or 'redirected'} (to {self.scrub(target)})", **kw)
        if not 200 <= status < 300:
            return errors.Rejected(message or f"refused with HTTP {status}", **kw)
        return ApiResponse(status, body, text, response.headers)

    def _scrubbed(self, error: errors.ExternalError) -> errors.ExternalError:
        clean = self.scrub(error.message)
        if clean != error.message:
            error.message = clean
            error.args = (clean,)
        return error

    def _report(
        self,
        method: str,
        url: str,
        request_text: str | None,
        status: int | None,
        response_text: str | None,
        duration_ms: float,
        error: errors.ExternalError | None,
    ) -> None:
        if self.on_exchange is None:
            return
        response_body = to_text(self.scrub(response_text)) if response_text else None
        self.on_exchange(
            Exchange(
                system=self.system,
                account=self.account_name,
                method=method,
                url=self.scrub(url),
                request_body=request_text,
                status=status,
                response_body=response_body,
                duration_ms=round(duration_ms, 3),
                error=self.scrub(str(error)) if error is not None else None,
            )
        )


def iter_pages(fetch: Callable[[int], tuple[list[Any], bool]], first: int = 1) -> Iterator[Any]:
    """Records of every page, ``fetch(page) -> (records, more)``, until no more."""
    page = first
    while True:
        records, more = fetch(page)
        yield from records
        if not more or not records:
            return
        page += 1
