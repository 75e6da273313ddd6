"""AT&T Telegence mobility line management ("APS" API), the subset the project uses.

Headers ``app-id`` and ``app-secret`` on every call. Lines are keyed by subscriber
number; errors are ``{"id": uuid, "description": ...}``.

Choices where the documentation is silent (all [guess]):
- the status change body is the project's choice, defined once here (``STATUS_CHANGE_KEY``,
  ``STATUS_ACTIONS``, ``parse_status_change``);
- a successful ``PATCH`` answers 200 with the line as ``GET`` shows it;
- status actions: suspend A->S, restore S->A, cancel A/S->C; a cancelled line refuses
  every change;
- an activation request completes after ``activation_polls`` polls of it or
  ``activation_seconds`` after it was asked, whichever comes first; its outcomes are
  decided then; a line already active (or
  suspended), a SIM in use on another line, or a ``fail_keys`` subscriber number/SIM
  fails that line with ``status: "FAILED"``; while in progress, lines show ``PENDING``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from bulk_changes.simulators.common import (
    Call,
    Route,
    SimConfig,
    Simulator,
    route,
)
from bulk_changes.simulators.transport import Request, Response

LINE_PATH = r"/sp/mobility/lineconfig/api/v1/service/(?P<number>[^/]+)"
ACTIVATION_PATH = r"/sp/mobilityactivations/api/v1/serviceactivation"

# -- the status change body: the one place that knows its shape -------------------------
STATUS_CHANGE_KEY = "subscriberStatus"
# action -> (statuses it may start from, status it leads to)
STATUS_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "suspend": (frozenset({"A"}), "S"),
    "restore": (frozenset({"S"}), "A"),
    "cancel": (frozenset({"A", "S"}), "C"),
}


@dataclass(frozen=True)
class StatusChange:
    action: str
    reason_code: str
    effective_date: str | None


def parse_status_change(body: dict[str, Any]) -> StatusChange:
    """``{"subscriberStatus": {"action", "reasonCode", "effectiveDate"?}}``; ValueError if not."""
    change = body.get(STATUS_CHANGE_KEY)
    if not isinstance(change, dict):
        raise ValueError(f"{STATUS_CHANGE_KEY} must be an object")
    unknown = sorted(set(change) - {"action", "reasonCode", "effectiveDate"})
    if unknown:
        raise ValueError(f"unknown {STATUS_CHANGE_KEY} fields: {', '.join(unknown)}")
    action = change.get("action")
    if action not in STATUS_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(STATUS_ACTIONS)}")
    reason = change.get("reasonCode")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reasonCode is required")
    effective = change.get("effectiveDate")
    if effective is not None:
        _check_date(effective)
    return StatusChange(str(action), reason, effective)


# -- line characteristics ---------------------------------------------------------------
SHOWN = (
    "sim",
    "IMEI",
    "singleUserCode",
    "singleUserCodeDescription",
    "serviceZipCode",
    "contactName",
    "subscriberActivationDate",
    "statusEffectiveDate",
    "nextBillCycleDate",
)
EDITABLE = frozenset(
    {"singleUserCode", "sim", "IMEI", "BLIMEI", "reasonCode", "serviceZipCode", "technologyType"}
)
SIM_RE = re.compile(r"\d{19,20}")
IMEI_RE = re.compile(r"\d{15}")
NUMBER_RE = re.compile(r"\d{10}")
MAX_ACTIVATIONS = 200


def _check_date(value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError("effectiveDate must be a string")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"effectiveDate is not ISO 8601: {value}") from None


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _next_bill_cycle() -> str:
    today = datetime.now(UTC).date()
    return date(today.year + today.month // 12, today.month % 12 + 1, 1).isoformat()


def line_view(line: dict[str, Any]) -> dict[str, Any]:
    chars: dict[str, str] = line["chars"]
    names = list(SHOWN) + [n for n in chars if n not in SHOWN]
    return {
        "subscriberNumber": line["subscriberNumber"],
        "status": line["status"],
        "serviceCharacteristic": [{"name": n, "value": chars.get(n, "")} for n in names],
    }


@dataclass
class TelegenceConfig(SimConfig):
    # polls answered IN_PROGRESS before an activation request completes
    activation_polls: int = 1
    # seconds after which an activation request completes by itself, polled or not, as
    # Telegence's asynchronous processing does (None: only polls complete it)
    activation_seconds: float | None = 3.0
    # SOC -> description; others are described as "<SOC> plan"
    soc_descriptions: dict[str, str] = field(default_factory=dict)


class TelegenceSimulator(Simulator):
    system = "telegence"
    base_path = ""
    config_class = TelegenceConfig
    config: TelegenceConfig

    def default_credentials(self) -> dict[str, Any]:
        return {"sim-app": "sim-telegence-secret"}

    def reset_state(self) -> None:
        self.lines: dict[str, dict[str, Any]] = {}
        self.activations: dict[str, dict[str, Any]] = {}

    def authenticate(self, request: Request) -> str | None:
        app_id = request.headers.get("app-id")
        secret = request.headers.get("app-secret")
        if not app_id or not secret or self.credentials.get(app_id) != secret:
            return None
        return app_id

    def error(self, status: int, message: str, code: str | None = None) -> Response:
        return Response(status, {"id": self.random_uuid(), "description": message})

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized: invalid app-id or app-secret")

    def throttled_response(self) -> Response:
        return self.error(self.config.throttle_status, "Rate limit exceeded")

    def build_routes(self) -> list[Route]:
        return [
            route("GET", LINE_PATH, "GET /service/{subscriberNumber}", self.get_line, key="number"),
            route(
                "PATCH",
                LINE_PATH,
                "PATCH /service/{subscriberNumber}",
                self.change_line,
                key="number",
                writes=True,
            ),
            route(
                "POST",
                ACTIVATION_PATH,
                "POST /serviceactivation",
                self.activate,
                writes=True,
                fail_by_key=False,
            ),
            route(
                "GET",
                ACTIVATION_PATH + "/(?P<request_id>[^/]+)",
                "GET /serviceactivation/{requestId}",
                self.activation_status,
                key="request_id",
            ),
        ]

    def _describe(self, soc: str) -> str:
        return self.config.soc_descriptions.get(soc, f"{soc} plan")

    def _sim_in_use(self, sim: str, number: str) -> bool:
        return any(
            other["chars"].get("sim") == sim and other["status"] != "C"
            for key, other in self.lines.items()
            if key != number
        )

    # -- vendor calls ------------------------------------------------------------------

    def _settle_due_activations(self) -> None:
        """Complete the activation requests whose processing time has passed."""
        after = self.config.activation_seconds
        if after is None:
            return
        now = time.time()
        for activation in self.activations.values():
            if activation["lines"] is None and now - activation["asked_at"] >= after:
                activation["lines"] = [
                    self._complete(item, activation) for item in activation["items"]
                ]

    def get_line(self, call: Call) -> Response:
        self._settle_due_activations()
        line = self.lines.get(call.params["number"])
        if line is None:
            return self.error(404, f"Subscriber number not found: {call.params['number']}")
        return Response(200, line_view(line))

    def change_line(self, call: Call) -> Response:
        self._settle_due_activations()
        number = call.params["number"]
        try:
            body = call.request.json()
        except ValueError:
            return self.error(400, "Malformed JSON")
        if not isinstance(body, dict):
            return self.error(400, "Request body must be an object")
        line = self.lines.get(number)
        if line is None:
            return self.error(404, f"Subscriber number not found: {number}")
        try:
            if STATUS_CHANGE_KEY in body:
                self._change_status(line, body)
            else:
                self._change_characteristics(number, line, body)
        except ValueError as exc:
            return self.error(400, str(exc))
        return Response(200, line_view(line))

    def _change_status(self, line: dict[str, Any], body: dict[str, Any]) -> None:
        if set(body) != {STATUS_CHANGE_KEY}:
            raise ValueError(f"a status change carries only {STATUS_CHANGE_KEY}")
        change = parse_status_change(body)
        allowed_from, target = STATUS_ACTIONS[change.action]
        if line["status"] not in allowed_from:
            raise ValueError(f"cannot {change.action} a line in status {line['status']}")
        line["status"] = target
        line["chars"]["statusEffectiveDate"] = (change.effective_date or _today())[:10]

    def _change_characteristics(
        self, number: str, line: dict[str, Any], body: dict[str, Any]
    ) -> None:
        unknown = sorted(set(body) - {"effectiveDate", "serviceCharacteristic"})
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(unknown)}")
        if body.get("effectiveDate") is not None:
            _check_date(body["effectiveDate"])
        items = body.get("serviceCharacteristic")
        if not isinstance(items, list) or not items:
            raise ValueError("serviceCharacteristic must be a non-empty list")
        values: dict[str, str] = {}
        for item in items:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise ValueError("each serviceCharacteristic is {name, value}")
            name, value = item["name"], item["value"]
            if name not in EDITABLE:
                raise ValueError(f"serviceCharacteristic {name!r} cannot be changed")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"serviceCharacteristic {name!r} needs a value")
            values[name] = value
        if values.keys() & {"sim", "IMEI", "BLIMEI"} and "reasonCode" not in values:
            raise ValueError("reasonCode is required to change equipment")
        if "sim" in values and not SIM_RE.fullmatch(values["sim"]):
            raise ValueError("sim must be 19 or 20 digits")
        for name in ("IMEI", "BLIMEI"):
            if name in values and not IMEI_RE.fullmatch(values[name]):
                raise ValueError(f"{name} must be 15 digits")
        if line["status"] == "C":
            raise ValueError("the line is cancelled")
        if "sim" in values and self._sim_in_use(values["sim"], number):
            raise ValueError(f"sim {values['sim']} is in use on another line")
        values.pop("reasonCode", None)
        line["chars"].update(values)
        if "singleUserCode" in values:
            line["chars"]["singleUserCodeDescription"] = self._describe(values["singleUserCode"])

    def activate(self, call: Call) -> Response:
        try:
            body = call.request.json()
        except ValueError:
            return self.error(400, "Malformed JSON")
        items = body.get("serviceActivations") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return self.error(400, "serviceActivations must be a non-empty list")
        if len(items) > MAX_ACTIVATIONS:
            return self.error(400, f"at most {MAX_ACTIVATIONS} lines per request")
        seen: set[str] = set()
        for item in items:
            problem = self._activation_problem(item, seen)
            if problem:
                return self.error(400, problem)
        request_id = self.random_uuid()
        fail = self.config.fail_keys
        self.activations[request_id] = {
            "requestId": request_id,
            "account": call.account,
            "items": [dict(item) for item in items],
            "failures": {
                item["subscriberNumber"]: fail.get(item["subscriberNumber"])
                or fail.get(item["sim"])
                for item in items
            },
            "polls": 0,
            "lines": None,
            "asked_at": time.time(),
        }
        return Response(202, {"requestId": request_id})

    @staticmethod
    def _activation_problem(item: Any, seen: set[str]) -> str | None:
        if not isinstance(item, dict):
            return "each service activation is an object"
        number, sim = item.get("subscriberNumber"), item.get("sim")
        if not isinstance(number, str) or not NUMBER_RE.fullmatch(number):
            return f"subscriberNumber must be 10 digits: {number!r}"
        if number in seen:
            return f"subscriberNumber {number} appears twice"
        seen.add(number)
        if not isinstance(sim, str) or not SIM_RE.fullmatch(sim):
            return f"sim must be 19 or 20 digits: {sim!r}"
        imei = item.get("IMEI")
        if imei is not None and (not isinstance(imei, str) or not IMEI_RE.fullmatch(imei)):
            return f"IMEI must be 15 digits: {imei!r}"
        return None

    def activation_status(self, call: Call) -> Response:
        request_id = call.params["request_id"]
        activation = self.activations.get(request_id)
        if activation is None:
            return self.error(404, f"Request not found: {request_id}")
        activation["polls"] += 1
        self._settle_due_activations()
        if activation["lines"] is None and activation["polls"] > self.config.activation_polls:
            activation["lines"] = [self._complete(item, activation) for item in activation["items"]]
        if activation["lines"] is None:
            lines = [
                {
                    "subscriberNumber": i["subscriberNumber"],
                    "status": "PENDING",
                    "description": "In progress",
                }
                for i in activation["items"]
            ]
            status = "IN_PROGRESS"
        else:
            lines, status = activation["lines"], "COMPLETED"
        return Response(200, {"requestId": request_id, "interactionStatus": status, "lines": lines})

    def _complete(self, item: dict[str, Any], activation: dict[str, Any]) -> dict[str, str]:
        number, sim = item["subscriberNumber"], item["sim"]

        def failed(description: str) -> dict[str, str]:
            return {"subscriberNumber": number, "status": "FAILED", "description": description}

        if activation["failures"].get(number):
            return failed(activation["failures"][number])
        existing = self.lines.get(number)
        if existing is not None and existing["status"] != "C":
            return failed(f"Subscriber number {number} is already active")
        if self._sim_in_use(sim, number):
            return failed(f"sim {sim} is in use on another line")
        soc = str(item.get("singleUserCode") or "")
        today = _today()
        self.lines[number] = {
            "subscriberNumber": number,
            "status": "A",
            "chars": {
                "sim": sim,
                "IMEI": str(item.get("IMEI") or ""),
                "singleUserCode": soc,
                "singleUserCodeDescription": self._describe(soc) if soc else "",
                "serviceZipCode": str(item.get("serviceZipCode") or ""),
                "contactName": str(item.get("contactName") or ""),
                "subscriberActivationDate": today,
                "statusEffectiveDate": today,
                "nextBillCycleDate": _next_bill_cycle(),
            },
        }
        return {"subscriberNumber": number, "status": "A", "description": "Activated"}

    # -- in-process control ------------------------------------------------------------

    def seed(self, payload: Any) -> int:
        """``{"lines": [...]}`` or a list of ``{subscriberNumber, status, sim, IMEI, ...}``."""
        records = payload.get("lines", []) if isinstance(payload, dict) else payload
        today = _today()
        count = 0
        with self.lock:
            for record in records:
                number = str(record.get("subscriberNumber") or "").strip()
                if not number:
                    raise ValueError("every seeded line needs a subscriberNumber")
                status = str(record.get("status") or "A")
                if status not in ("A", "S", "C"):
                    raise ValueError(f"line {number}: status must be A, S or C")
                chars: dict[str, str] = {
                    "sim": "",
                    "IMEI": "",
                    "singleUserCode": "",
                    "singleUserCodeDescription": "",
                    "serviceZipCode": "",
                    "contactName": "",
                    "subscriberActivationDate": today,
                    "statusEffectiveDate": today,
                    "nextBillCycleDate": _next_bill_cycle(),
                }
                for name, value in record.items():
                    if name not in ("subscriberNumber", "status") and value is not None:
                        chars[name] = str(value)
                if chars["singleUserCode"] and not record.get("singleUserCodeDescription"):
                    chars["singleUserCodeDescription"] = self._describe(chars["singleUserCode"])
                self.lines[number] = {"subscriberNumber": number, "status": status, "chars": chars}
                count += 1
        return count

    def state(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            line = self.lines.get(key)
            return line_view(line) if line is not None else None
