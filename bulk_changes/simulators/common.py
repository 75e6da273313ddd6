"""The machinery every simulator shares: HTTP server, routing, limits, faults, counters.

A simulator is a ``Simulator`` subclass that knows its system's authentication, error
bodies, routes and state. This module owns the rest, in this order for each vendor call:

1. ``/_sim/...`` admin calls are answered at once: never counted, never limited.
2. authentication (401 in the system's error body);
3. routing (404/405);
4. the account's limits: in flight and sliding window. A call over a limit is a
   *violation*; with ``enforce_limits`` it is answered as throttled (HTTP 429);
5. faults, decided before any state is touched: 5xx, timeout, garbage, permanent
   (``fail_keys``);
6. latency, then the route's handler;
7. the in-flight count is released *before* the answer is written, so a client that waits
   for its answer is never counted as overlapping its next call.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from bulk_changes.simulators.limits import AccountLimiter, Limits, limit_aliases
from bulk_changes.simulators.transport import Request, Response, SimHTTPServer

MAX_LOGGED_BODY = 4000
MAX_CALL_LOG = 200_000

GARBAGE_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>upstream connect error</p></body></html>"
)


@dataclass
class Call:
    """A routed vendor call, as the route's handler sees it."""

    request: Request
    account: str
    params: dict[str, str]
    key: str | None


Handler = Callable[[Call], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler: Handler
    key_param: str | None = None
    writes: bool = False
    # False when the handler applies ``fail_keys`` itself (e.g. per line of a batch).
    fail_by_key: bool = True


@dataclass
class SimConfig:
    """Settings of one simulator; ``configure(**kw)`` and ``POST /_sim/config`` change them."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 35.0
    # A timed-out call was applied anyway (the answer just came too late).
    timeout_applies: bool = False
    garbage_rate: float = 0.0
    # share of calls whose connection is closed without an answer (after the request)
    drop_rate: float = 0.0
    # Faults of a write (5xx, timeout, garbage, dropped connection) come after the write
    # was applied, as when a gateway or the network loses the answer: a client that
    # repeats such a write blind shows in ``repeated_writes``.
    faults_apply: bool = False
    # random faults (error/timeout/garbage/drop rates) hit writes only, reads answer
    faults_writes_only: bool = False
    # Up to this many milliseconds (uniformly drawn) pass between a request's arrival and
    # the moment it counts against the limits: the network's jitter between the client
    # and the vendor's gateway.
    arrival_jitter_ms: float = 0.0
    fail_keys: dict[str, str] = field(default_factory=dict)
    # fail_keys refuse writes only, unless this is set.
    fail_reads: bool = False
    seed: int = 1
    enforce_limits: bool = True
    # calls allowed per rate_window_seconds, per account; None = no limit
    rate_limit: int | None = None
    rate_window_seconds: float = 1.0
    max_in_flight: int | None = None
    # seconds to send as Retry-After with a throttled answer; None = no header
    retry_after: float | None = None
    # HTTP status of a throttled answer
    throttle_status: int = 429
    # per-account overrides of rate_limit / rate_window_seconds / max_in_flight
    account_limits: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.violations: Counter[str] = Counter({"rate": 0, "in_flight": 0})
        self.throttled = 0
        self.faults: Counter[str] = Counter(
            {"5xx": 0, "timeout": 0, "permanent": 0, "garbage": 0, "drop": 0}
        )
        # applied writes identical to the last write applied to the same record
        self.repeated_writes = 0
        self.last_write: dict[tuple[str, str | None], bytes] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_CALL_LOG)


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds, e.g. 2024-04-29T12:03:44.123+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def logged_body(text: str | None) -> Any:
    """A logged request body as the call log shows it: its JSON, else its text, shortened."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[:MAX_LOGGED_BODY]


class Simulator:
    """One simulated system: its HTTP server, state, config, counters and call log."""

    system: ClassVar[str] = ""
    base_path: ClassVar[str] = ""
    config_class: ClassVar[type[SimConfig]] = SimConfig

    def __init__(self, credentials: dict[str, Any] | None = None) -> None:
        self.credentials: dict[str, Any] = dict(self.default_credentials())
        self.credentials.update(credentials or {})
        self.config: SimConfig = self.config_class()
        self.lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        self._limiter = AccountLimiter()
        self._stats = _Stats()
        self._stopping = threading.Event()
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.routes: list[Route] = self.build_routes()
        self.reset_state()

    # -- to be provided by each system -------------------------------------------------

    def default_credentials(self) -> dict[str, Any]:
        raise NotImplementedError

    def authenticate(self, request: Request) -> str | None:
        """The account the call is made for, or None when the credentials are refused."""
        raise NotImplementedError

    def error(self, status: int, message: str, code: str | None = None) -> Response:
        """An answer in the system's own error body."""
        raise NotImplementedError

    def throttled_response(self) -> Response:
        raise NotImplementedError

    def build_routes(self) -> list[Route]:
        raise NotImplementedError

    def reset_state(self) -> None:
        raise NotImplementedError

    def seed(self, payload: Any) -> int:
        """Add or replace records; ``payload`` is the ``/_sim/seed`` body or a list."""
        raise NotImplementedError

    def state(self, key: str) -> dict[str, Any] | None:
        """The current record for a key, as the vendor API would show it."""
        raise NotImplementedError

    def server_error_message(self) -> str:
        return "Unknown server error"

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid credentials")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Simulator:
        self._stopping.clear()
        self._server = SimHTTPServer((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sim-{self.system}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.system} simulator is not running")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.system} simulator is not running")
        return str(self._server.server_address[0])

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The vendor API base URL (what an account's base_url points at)."""
        return self.root_url + self.base_path

    # -- in-process control ------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings (see SimConfig and the system's subclass); returns them all."""
        changes = limit_aliases(changes)
        names = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown {self.system} simulator settings: {', '.join(unknown)}")
        if "account_limits" in changes:
            changes["account_limits"] = {
                str(k): limit_aliases(dict(v)) for k, v in (changes["account_limits"] or {}).items()
            }
        if "fail_keys" in changes:
            changes["fail_keys"] = {str(k): str(v) for k, v in (changes["fail_keys"] or {}).items()}
        with self.lock:
            self.config = dataclasses.replace(self.config, **changes)
            if "seed" in changes:
                with self._rng_lock:
                    self._rng = random.Random(self.config.seed)
        return self.config_dict()

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def add_credentials(self, credentials: dict[str, Any]) -> None:
        with self.lock:
            self.credentials.update(credentials)

    def reset(self, settings: bool = False) -> None:
        """Forget state, counters, call log and limiter windows; ``settings`` too if asked."""
        with self.lock:
            if settings:
                self.config = self.config_class()
            self.reset_state()
            self._stats = _Stats()
            self._limiter.reset()
            with self._rng_lock:
                self._rng = random.Random(self.config.seed)

    def stats(self) -> dict[str, Any]:
        s = self._stats
        with s.lock:
            return {
                "calls": s.calls,
                "by_endpoint": dict(s.by_endpoint),
                "by_status": dict(s.by_status),
                "violations": dict(s.violations),
                "throttled": s.throttled,
                "faults": dict(s.faults),
                "repeated_writes": s.repeated_writes,
                "max_in_flight_seen": dict(self._limiter.max_in_flight_seen),
            }

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        """The call log (oldest first), from position ``since``."""
        with self._stats.lock:
            entries = list(self._stats.log)[since:]
        return [{**entry, "body": logged_body(entry["body"])} for entry in entries]

    def random(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def random_uuid(self) -> str:
        """A version-4 UUID drawn from the seeded generator (reproducible runs)."""
        with self._rng_lock:
            bits = self._rng.getrandbits(128)
        return str(uuid.UUID(int=bits, version=4))

    def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the simulator stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def limits_for(self, account: str) -> Limits:
        cfg = self.config
        override = cfg.account_limits.get(account, {})
        return Limits(
            rate_limit=override.get("rate_limit", cfg.rate_limit),
            window=float(override.get("rate_window_seconds", cfg.rate_window_seconds)),
            max_in_flight=override.get("max_in_flight", cfg.max_in_flight),
        )

    # -- the call path -----------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            return self._admin(request)
        # counted from its arrival, when the transport knows it (see transport.arrival_time)
        started = request.arrived_at or time.time()
        jitter = self.config.arrival_jitter_ms
        if jitter > 0:
            delay = self.random() * jitter / 1000.0
            started += delay
            self.sleep(started - time.time())
        account = self.authenticate(request)
        if account is None:
            response = self.unauthorized()
            self._record(request, started, f"{request.method} (unauthorized)", None, None, response)
            return response
        found = self._resolve(request)
        if isinstance(found, Response):
            self._record(request, started, f"{request.method} (no route)", None, account, found)
            return found
        route, params = found
        key = params.get(route.key_param) if route.key_param else None
        call = Call(request=request, account=account, params=params, key=key)
        response, fault = self._limited(call, route, started)
        self._record(request, started, route.endpoint, key, account, response, fault)
        return response

    def _resolve(self, request: Request) -> tuple[Route, dict[str, str]] | Response:
        path_matched = False
        for route in self.routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            path_matched = True
            if route.method == request.method:
                return route, {k: v for k, v in match.groupdict().items() if v is not None}
        if path_matched:
            return self.error(405, f"Method {request.method} not allowed")
        return self.error(404, f"No such resource: {request.path}")

    def _limited(self, call: Call, route: Route, arrived_at: float) -> tuple[Response, str | None]:
        cfg = self.config
        admitted, violations = self._limiter.enter(
            call.account, self.limits_for(call.account), cfg.enforce_limits, arrived_at
        )
        with self._stats.lock:
            self._stats.violations.update(violations)
        if not admitted:
            response = self.throttled_response()
            if cfg.retry_after is not None:
                response.headers["Retry-After"] = f"{cfg.retry_after:g}"
            with self._stats.lock:
                self._stats.throttled += 1
            return response, "throttled"
        timed_out = False
        try:
            fault = self._draw_fault(call, route)
            applies = cfg.faults_apply and route.writes and fault not in (None, "permanent")
            if applies:
                self._serve(call, route)  # applied; the answer is lost below
            if fault == "timeout":
                timed_out = True
                response = (
                    self._serve(call, route)
                    if cfg.timeout_applies and not applies
                    else self.error(504, "Gateway timeout")
                )
            elif fault is not None:
                response = self._fault_response(fault, call)
            else:
                response = self._serve(call, route)
        finally:
            self._limiter.leave(call.account)
        if timed_out:
            # Outside the in-flight count: the client gave up and may already be retrying.
            self.sleep(cfg.timeout_seconds)
        return response, fault

    def _draw_fault(self, call: Call, route: Route) -> str | None:
        cfg = self.config
        failing = route.fail_by_key and call.key is not None and call.key in cfg.fail_keys
        if failing and (route.writes or cfg.fail_reads):
            return "permanent"
        if cfg.faults_writes_only and not route.writes:
            return None
        rates = (
            ("5xx", cfg.error_rate),
            ("timeout", cfg.timeout_rate),
            ("garbage", cfg.garbage_rate),
            ("drop", cfg.drop_rate),
        )
        if all(rate <= 0 for _, rate in rates):
            return None
        draw = self.random()
        for fault, rate in rates:
            if draw < rate:
                return fault
            draw -= rate
        return None

    def _fault_response(self, fault: str, call: Call) -> Response:
        if fault == "5xx":
            status = 500 if self.random() < 0.5 else 503
            return self.error(status, self.server_error_message())
        if fault == "garbage":
            return Response(502, GARBAGE_PAGE, content_type="text/html")
        if fault == "drop":
            return Response(0, drop=True)
        assert call.key is not None
        return self.permanent_failure(call.key, self.config.fail_keys[call.key])

    def permanent_failure(self, key: str, message: str) -> Response:
        return self.error(400, message)

    def _serve(self, call: Call, route: Route) -> Response:
        cfg = self.config
        delay = cfg.latency_ms
        if cfg.latency_jitter_ms > 0:
            delay += self.random() * cfg.latency_jitter_ms
        self.sleep(delay / 1000.0)
        with self.lock:
            response = route.handler(call)
            if route.writes and 200 <= response.status < 300:
                self._count_write(call, route)
            return response

    def _count_write(self, call: Call, route: Route) -> None:
        """An applied write: a repeat when the same record's last applied write was the
        same request (a client that could not tell it had landed and sent it again)."""
        s = self._stats
        record = (f"{call.account} {route.endpoint}", call.key or call.request.path)
        with s.lock:
            if s.last_write.get(record) == call.request.body:
                s.repeated_writes += 1
            s.last_write[record] = call.request.body

    def _record(
        self,
        request: Request,
        started: float,
        endpoint: str,
        key: str | None,
        account: str | None,
        response: Response,
        fault: str | None = None,
    ) -> None:
        entry = {
            "t": started,
            "method": request.method,
            "path": request.raw_path or request.path,
            "endpoint": endpoint,
            "key": key,
            # the text, parsed when the log is read: a log entry of strings and numbers
            # only stays out of the cyclic collector's reach (see freeze_host_objects)
            "body": request.body.decode("utf-8", errors="replace") if request.body else None,
            "status": response.status,
            "account": account,
            "fault": fault if fault != "throttled" else None,
            "throttled": fault == "throttled",
            "duration_ms": round((time.time() - started) * 1000.0, 3),
        }
        s = self._stats
        with s.lock:
            s.calls += 1
            s.by_endpoint[endpoint] += 1
            s.by_status[str(response.status)] += 1
            if fault is not None and fault != "throttled":
                s.faults[fault] += 1
            s.log.append(entry)

    # -- admin endpoints ---------------------------------------------------------------

    def _admin(self, request: Request) -> Response:
        try:
            return self._admin_call(request)
        except ValueError as exc:
            return Response(400, {"error": str(exc)})

    def _admin_call(self, request: Request) -> Response:
        action = request.path[len("/_sim/") :] if request.path.startswith("/_sim/") else ""
        method = request.method
        if method == "GET" and action == "stats":
            return Response(200, self.stats())
        if method == "GET" and action == "calls":
            return Response(200, self.calls(int(request.query.get("since", "0") or 0)))
        if action == "config":
            if method == "POST":
                body = request.json() if request.body else {}
                if not isinstance(body, dict):
                    raise ValueError("config body must be an object")
                return Response(200, self.configure(**body))
            if method == "GET":
                return Response(200, self.config_dict())
        if method == "POST" and action == "reset":
            body = request.json() if request.body else {}
            self.reset(settings=bool(isinstance(body, dict) and body.get("config")))
            return Response(200, {"reset": True})
        if method == "POST" and action == "seed":
            return Response(200, {"seeded": self.seed(request.json())})
        if method == "GET" and action.startswith("state/"):
            record = self.state(action[len("state/") :])
            if record is None:
                return Response(404, {"error": "not found"})
            return Response(200, record)
        return Response(404, {"error": f"unknown admin call {method} {request.path}"})


def route(
    method: str,
    pattern: str,
    endpoint: str,
    handler: Handler,
    *,
    key: str | None = None,
    writes: bool = False,
    fail_by_key: bool = True,
) -> Route:
    """A route; ``pattern`` is a regex (named groups are path parameters)."""
    return Route(method, re.compile(pattern), endpoint, handler, key, writes, fail_by_key)
