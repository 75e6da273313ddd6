"""Cisco IoT Control Center ("Jasper") REST API, the subset the project uses.

``/rws/api/v1``: Basic auth ``username:apiKey``; ``GET/PUT /devices/{iccid}``,
``GET /devices?modifiedSince=...``, ``GET /devices/{iccid}/auditTrails``.
Error body ``{"errorCode", "errorMessage"}``; throttling is errorCode 40000029.

Choices where the documentation is silent (all [guess]):
- an invalid value (status, date, page size) is 400 with errorCode ``10000026``;
  a missing required parameter is 400 ``10000028`` like an unrecognized one;
- an edit with a future ``effectiveDate`` is applied at once (the date is kept in the
  audit trail); more than 180 days ahead is refused;
- the audit trail answer is ``{"iccid", "deviceAuditTrails": [...], "pageNumber", "lastPage"}``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bulk_changes.simulators.common import (
    Call,
    Route,
    SimConfig,
    Simulator,
    now_iso,
    route,
)
from bulk_changes.simulators.transport import Request, Response

E_CREDENTIALS = "10000001"
E_MALFORMED_JSON = "10000023"
E_API_VERSION = "10000024"
E_INVALID_VALUE = "10000026"
E_UNRECOGNIZED = "10000028"
E_NOT_FOUND = "20000001"
E_SERVER = "30000001"
E_RATE_LIMIT = "40000029"

STATUSES = (
    "TEST_READY",
    "ACTIVATION_READY",
    "ACTIVATED",
    "DEACTIVATED",
    "INVENTORY",
    "RETIRED",
    "PURGED",
    "REPLACED",
)
ACCOUNT_CUSTOM = tuple(f"accountCustom{i}" for i in range(1, 11))
OPERATOR_CUSTOM = tuple(f"operatorCustom{i}" for i in range(1, 6))
CUSTOMER_CUSTOM = tuple(f"customerCustom{i}" for i in range(1, 6))
EDITABLE = (
    "status",
    "ratePlan",
    "communicationPlan",
    "customer",
    "deviceID",
    "modemID",
    "overageLimitOverride",
    "ipv4Address",
    "ipv6Address",
    *ACCOUNT_CUSTOM,
    *CUSTOMER_CUSTOM,
    *OPERATOR_CUSTOM,
)
PAGE_SIZE_MAX = 50
EFFECTIVE_DATE_MAX_DAYS = 180


def new_device(iccid: str, now: str) -> dict[str, Any]:
    """A device with the full documented field set and neutral values."""
    device: dict[str, Any] = {
        "iccid": iccid,
        "imsi": "31041" + iccid[-10:].rjust(10, "0"),
        "msisdn": "",
        "imei": "",
        "status": "ACTIVATED",
        "ratePlan": "",
        "communicationPlan": "",
        "customer": None,
        "endConsumerId": None,
        "dateActivated": now,
        "dateAdded": now,
        "dateUpdated": now,
        "dateShipped": now,
        "accountId": "100000",
        "fixedIPAddress": None,
        "fixedIpv6Address": None,
    }
    for name in (*OPERATOR_CUSTOM, *ACCOUNT_CUSTOM, *CUSTOMER_CUSTOM):
        device[name] = ""
    device.update(
        {
            "simNotes": None,
            "deviceID": None,
            "modemID": "",
            "globalSimType": "",
            "eid": None,
            "simProfileId": "",
            "overageLimitOverride": "",
        }
    )
    return device


def parse_iso(value: str) -> datetime:
    """An ISO 8601 timestamp; naive times are UTC. Raises ValueError."""
    text = value.strip().replace("Z", "+00:00")
    # an unencoded "+" in a query string arrives as a space
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, "")
    value = int(raw) if raw.strip() else default
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


@dataclass
class JasperConfig(SimConfig):
    rate_limit: int | None = 5
    rate_window_seconds: float = 1.0
    max_in_flight: int | None = 1
    # share of successful edits answered 202 instead of 200 (same body)
    accepted_rate: float = 0.0
    # share of applied edits answered 200 without the iccid (what the API calls a failure)
    unconfirmed_rate: float = 0.0
    # when set, only these rate plans / communication plans are accepted
    valid_rate_plans: list[str] | None = None
    valid_communication_plans: list[str] | None = None


class JasperSimulator(Simulator):
    system = "jasper"
    base_path = "/rws/api/v1"
    config_class = JasperConfig
    config: JasperConfig

    def default_credentials(self) -> dict[str, Any]:
        return {"sim-user": "sim-jasper-key"}

    def reset_state(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.audit: dict[str, list[dict[str, Any]]] = {}

    def authenticate(self, request: Request) -> str | None:
        pair = request.basic_auth()
        if pair is None or self.credentials.get(pair[0]) != pair[1]:
            return None
        return pair[0]

    def error(self, status: int, message: str, code: str | None = None) -> Response:
        default = {401: E_CREDENTIALS, 404: E_NOT_FOUND}.get(status)
        if code is None:
            code = default or (E_SERVER if status >= 500 else E_UNRECOGNIZED)
        return Response(status, {"errorCode": code, "errorMessage": message})

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid credentials or caller IP not allowed", E_CREDENTIALS)

    def throttled_response(self) -> Response:
        return self.error(self.config.throttle_status, "Rate limit exceeded", E_RATE_LIMIT)

    def build_routes(self) -> list[Route]:
        v = r"/rws/api/v(?P<version>[^/]+)"
        iccid = r"(?P<iccid>[^/]+)"
        return [
            route(
                "GET", v + "/devices/" + iccid, "GET /devices/{iccid}", self.get_device, key="iccid"
            ),
            route(
                "PUT",
                v + "/devices/" + iccid,
                "PUT /devices/{iccid}",
                self.edit_device,
                key="iccid",
                writes=True,
            ),
            route("GET", v + "/devices", "GET /devices", self.search_devices),
            route(
                "GET",
                v + "/devices/" + iccid + "/auditTrails",
                "GET /devices/{iccid}/auditTrails",
                self.audit_trails,
                key="iccid",
            ),
        ]

    # -- vendor calls ------------------------------------------------------------------

    def _bad_version(self, call: Call) -> Response | None:
        if call.params.get("version") != "1":
            return self.error(400, "Invalid apiVersion", E_API_VERSION)
        return None

    def _not_found(self, iccid: str) -> Response:
        return self.error(404, f"Resource not found - Invalid ICCID: {iccid}", E_NOT_FOUND)

    def get_device(self, call: Call) -> Response:
        if (bad := self._bad_version(call)) is not None:
            return bad
        device = self.devices.get(call.params["iccid"])
        if device is None:
            return self._not_found(call.params["iccid"])
        return Response(200, copy.deepcopy(device))

    def edit_device(self, call: Call) -> Response:
        if (bad := self._bad_version(call)) is not None:
            return bad
        iccid = call.params["iccid"]
        try:
            body = call.request.json()
        except ValueError:
            return self.error(400, "Malformed JSON", E_MALFORMED_JSON)
        if not isinstance(body, dict):
            return self.error(400, "Malformed JSON: expected an object", E_MALFORMED_JSON)
        unknown = sorted(set(body) - set(EDITABLE) - {"effectiveDate"})
        if unknown:
            return self.error(400, f"Unrecognized parameters: {', '.join(unknown)}", E_UNRECOGNIZED)
        changes = {k: v for k, v in body.items() if k != "effectiveDate"}
        if not changes:
            return self.error(400, "At least one parameter is required", E_UNRECOGNIZED)
        device = self.devices.get(iccid)
        if device is None:
            return self._not_found(iccid)
        problem = self._invalid_value(body)
        if problem:
            return self.error(400, problem, E_INVALID_VALUE)
        now = now_iso()
        effective = str(body.get("effectiveDate") or now)
        for name, value in changes.items():
            prior = device.get(name)
            if name == "ipv4Address":
                device["fixedIPAddress"] = value
            elif name == "ipv6Address":
                device["fixedIpv6Address"] = value
            else:
                device[name] = value
            self.audit.setdefault(iccid, []).append(
                {
                    "field": name,
                    "priorValue": prior,
                    "value": value,
                    "effectiveDate": effective,
                    "dateChanged": now,
                    "status": "Executed",
                    "userName": call.account,
                    "ipAddress": call.request.headers.get("X-Forwarded-For", "127.0.0.1"),
                }
            )
        if changes.get("status") == "ACTIVATED" and not device.get("dateActivated"):
            device["dateActivated"] = now
        device["dateUpdated"] = now
        if self.config.unconfirmed_rate > 0 and self.random() < self.config.unconfirmed_rate:
            return Response(200, {})
        status = (
            202
            if self.config.accepted_rate > 0 and self.random() < self.config.accepted_rate
            else 200
        )
        return Response(status, {"iccid": iccid})

    def _invalid_value(self, body: dict[str, Any]) -> str | None:
        for name, value in body.items():
            if value is not None and not isinstance(value, str | int | float):
                return f"Invalid value for {name}"
        status = body.get("status")
        if status is not None and status not in STATUSES:
            return f"Invalid status: {status}"
        cfg = self.config
        for name, allowed in (
            ("ratePlan", cfg.valid_rate_plans),
            ("communicationPlan", cfg.valid_communication_plans),
        ):
            if allowed is not None and name in body and body[name] not in allowed:
                return f"Invalid {name}: {body[name]}"
        if body.get("effectiveDate") is not None:
            try:
                when = parse_iso(str(body["effectiveDate"]))
            except ValueError:
                return f"Invalid effectiveDate: {body['effectiveDate']}"
            if when > datetime.now(UTC) + timedelta(days=EFFECTIVE_DATE_MAX_DAYS):
                return f"effectiveDate more than {EFFECTIVE_DATE_MAX_DAYS} days ahead"
        return None

    def search_devices(self, call: Call) -> Response:
        if (bad := self._bad_version(call)) is not None:
            return bad
        query = call.request.query
        if not query.get("modifiedSince"):
            return self.error(400, "modifiedSince is required", E_UNRECOGNIZED)
        try:
            since = parse_iso(query["modifiedSince"])
            till = parse_iso(query["modifiedTill"]) if query.get("modifiedTill") else None
            size = _int_param(query, "pageSize", PAGE_SIZE_MAX, 1, PAGE_SIZE_MAX)
            number = _int_param(query, "pageNumber", 1, 1, 10**9)
        except ValueError as exc:
            return self.error(400, f"Invalid request: {exc}", E_INVALID_VALUE)
        status = query.get("status")
        matches = []
        for iccid in sorted(self.devices):
            device = self.devices[iccid]
            updated = parse_iso(device["dateUpdated"])
            if updated < since or (till is not None and updated > till):
                continue
            if status and device["status"] != status:
                continue
            matches.append(
                {k: device[k] for k in ("iccid", "status", "ratePlan", "communicationPlan")}
            )
        page = matches[(number - 1) * size : number * size]
        return Response(
            200, {"devices": page, "pageNumber": number, "lastPage": number * size >= len(matches)}
        )

    def audit_trails(self, call: Call) -> Response:
        if (bad := self._bad_version(call)) is not None:
            return bad
        iccid = call.params["iccid"]
        if iccid not in self.devices:
            return self._not_found(iccid)
        query = call.request.query
        try:
            days = _int_param(query, "daysOfHistory", 30, 1, 365)
            size = _int_param(query, "pageSize", PAGE_SIZE_MAX, 1, PAGE_SIZE_MAX)
            number = _int_param(query, "pageNumber", 1, 1, 10**9)
        except ValueError as exc:
            return self.error(400, f"Invalid request: {exc}", E_INVALID_VALUE)
        oldest = datetime.now(UTC) - timedelta(days=days)
        entries = [
            e for e in reversed(self.audit.get(iccid, [])) if parse_iso(e["dateChanged"]) >= oldest
        ]
        page = entries[(number - 1) * size : number * size]
        return Response(
            200,
            {
                "iccid": iccid,
                "deviceAuditTrails": copy.deepcopy(page),
                "pageNumber": number,
                "lastPage": number * size >= len(entries),
            },
        )

    # -- in-process control ------------------------------------------------------------

    def seed(self, payload: Any) -> int:
        """``{"devices": [...]}`` or a list of devices; each needs an ``iccid``."""
        records = payload.get("devices", []) if isinstance(payload, dict) else payload
        now = now_iso()
        count = 0
        with self.lock:
            for record in records:
                iccid = str(record.get("iccid") or "").strip()
                if not iccid:
                    raise ValueError("every seeded device needs an iccid")
                status = record.get("status", "ACTIVATED")
                if status not in STATUSES:
                    raise ValueError(f"device {iccid}: unknown status {status!r}")
                device = new_device(iccid, now)
                device.update({k: v for k, v in record.items() if v is not None})
                if status != "ACTIVATED" and "dateActivated" not in record:
                    device["dateActivated"] = None
                self.devices[iccid] = device
                self.audit.setdefault(iccid, [])
                count += 1
        return count

    def state(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            device = self.devices.get(key)
            return copy.deepcopy(device) if device is not None else None
