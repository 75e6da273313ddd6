"""Rev.io billing REST API (``/v1``), the Services subset the project uses.

Basic auth ``login@clientcode:password`` plus the ``Ocp-Apim-Subscription-Key`` header on
every call. Partial updates are JSON Patch (RFC 6902) with
``Content-Type: application/json-patch+json``.

Choices where the documentation is silent (all [guess]):
- error body ``{"ok": false, "error": "...", "status": N}``;
- JSON Patch supports ``replace`` and ``test`` only (other ops: 400); a patch is atomic:
  any failed op (a ``test`` that does not match, a bad path or value) applies nothing;
- ``service_id`` cannot be replaced; ``fields`` entries can have ``value`` and ``label``
  replaced and any member tested;
- list filters are equality on ``number`` and the other scalar ids; an unknown query
  parameter is 400; ``record_count`` is the number of matching records (all pages);
- paths are matched without regard to case (``/Services`` or ``/services``);
- a service seeded with an ``account`` (the login ``user@clientcode``) belongs to that
  account: other accounts neither list it nor find it (404), as a Rev.io client's API user
  sees only its own client's services; a service seeded without one is every account's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
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

PATCH_CONTENT_TYPE = "application/json-patch+json"
SERVICE_FIELDS = (
    "service_id",
    "customer_id",
    "provider_id",
    "service_type_id",
    "package_id",
    "number",
    "number2",
    "description",
    "effective_date",
    "activated_date",
    "disconnected_date",
    "usage_plan_group_id",
    "provider_account_id",
)
INT_FIELDS = frozenset(
    {
        "service_id",
        "customer_id",
        "provider_id",
        "service_type_id",
        "package_id",
        "usage_plan_group_id",
        "provider_account_id",
    }
)
READ_ONLY = frozenset({"service_id"})
FILTERS = frozenset(SERVICE_FIELDS) - {
    "description",
    "effective_date",
    "activated_date",
    "disconnected_date",
}
FIELD_MEMBERS = ("field_id", "label", "value")
PAGE_SIZE_MAX = 500
PAGE_SIZE_DEFAULT = 10


class PatchError(ValueError):
    """A JSON Patch that cannot be applied (400, nothing changed)."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise PatchError(f"invalid path: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _check_value(name: str, value: Any) -> None:
    if name in INT_FIELDS:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise PatchError(f"{name} must be an integer or null")
    elif value is not None and not isinstance(value, str | int | float):
        raise PatchError(f"{name} must be a string or null")


def _locate(service: dict[str, Any], path: Any) -> tuple[dict[str, Any], str, bool]:
    """(container, member, replaceable) the path points at; PatchError when it is not valid."""
    tokens = _pointer(path)
    if len(tokens) == 1 and tokens[0] in SERVICE_FIELDS:
        return service, tokens[0], tokens[0] not in READ_ONLY
    if len(tokens) == 1 and tokens[0] == "fields":
        return service, "fields", False
    if len(tokens) == 3 and tokens[0] == "fields" and tokens[2] in FIELD_MEMBERS:
        index = tokens[1]
        if not index.isdigit() or (len(index) > 1 and index.startswith("0")):
            raise PatchError(f"invalid path: {path}")
        fields = service["fields"]
        if int(index) >= len(fields):
            raise PatchError(f"invalid path: {path} (the service has {len(fields)} fields)")
        return fields[int(index)], tokens[2], tokens[2] != "field_id"
    raise PatchError(f"invalid path: {path}")


def apply_patch(service: dict[str, Any], operations: Any) -> dict[str, Any]:
    """The service after the operations (a new copy); PatchError leaves nothing applied."""
    if not isinstance(operations, list):
        raise PatchError("a JSON Patch document is an array of operations")
    result = copy.deepcopy(service)
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {number}: needs op and path")
        if op["op"] not in ("replace", "test"):
            raise PatchError(f"operation {number}: unsupported op {op['op']!r}")
        if "value" not in op:
            raise PatchError(f"operation {number}: needs a value")
        container, member, replaceable = _locate(result, op["path"])
        if op["op"] == "test":
            if container.get(member) != op["value"]:
                raise PatchError(f"test failed at {op['path']}")
            continue
        if not replaceable:
            raise PatchError(f"operation {number}: {op['path']} cannot be replaced")
        _check_value(member, op["value"])
        container[member] = op["value"]
    return result


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def new_service(record: dict[str, Any]) -> dict[str, Any]:
    """A service with every documented field, from a seed record."""
    service: dict[str, Any] = {name: None for name in SERVICE_FIELDS}
    service.update({"customer_id": 1, "provider_id": 1, "service_type_id": 1, "description": ""})
    service["effective_date"] = service["activated_date"] = now_iso()
    service.update({k: v for k, v in record.items() if k in SERVICE_FIELDS})
    try:
        service["service_id"] = int(record["service_id"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"a seeded service needs an integer service_id: {record!r}") from None
    fields = []
    for index, item in enumerate(record.get("fields") or []):
        fields.append(
            {
                "field_id": int(item.get("field_id", index + 1)),
                "label": str(item["label"]),
                "value": item.get("value"),
            }
        )
    service["fields"] = fields
    return service


@dataclass
class RevioConfig(SimConfig):
    rate_limit: int | None = 500
    rate_window_seconds: float = 60.0


class RevioSimulator(Simulator):
    system = "revio"
    base_path = "/v1"
    config_class = RevioConfig
    config: RevioConfig

    def default_credentials(self) -> dict[str, Any]:
        return {"sim-user@simclient": ("sim-revio-password", "sim-subscription-key")}

    def reset_state(self) -> None:
        self.services: dict[int, dict[str, Any]] = {}
        # service_id -> the one account that sees it (absent: every account)
        self.owners: dict[int, str] = {}

    def _visible(self, service_id: int, account: str) -> bool:
        owner = self.owners.get(service_id)
        return owner is None or owner == account

    def authenticate(self, request: Request) -> str | None:
        pair = request.basic_auth()
        if pair is None or pair[0] not in self.credentials:
            return None
        known = self.credentials[pair[0]]
        if isinstance(known, dict):
            password, key = known.get("password"), known.get("subscription_key")
        else:
            password, key = known
        if pair[1] != password or request.headers.get("Ocp-Apim-Subscription-Key") != key:
            return None
        return pair[0]

    def error(self, status: int, message: str, code: str | None = None) -> Response:
        return Response(status, {"ok": False, "error": message, "status": status})

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized: invalid credentials or subscription key")

    def throttled_response(self) -> Response:
        return self.error(self.config.throttle_status, "Rate limit exceeded")

    def build_routes(self) -> list[Route]:
        one = r"(?i)/v1/services/(?P<service_id>[^/]+)"
        return [
            route("GET", one, "GET /Services/{service_id}", self.get_service, key="service_id"),
            route(
                "PATCH",
                one,
                "PATCH /Services/{service_id}",
                self.patch_service,
                key="service_id",
                writes=True,
            ),
            route("GET", r"(?i)/v1/services", "GET /Services", self.list_services),
        ]

    def _find(self, raw_id: str, account: str) -> dict[str, Any] | Response:
        service = self.services.get(int(raw_id)) if raw_id.isdigit() else None
        if service is None or not self._visible(service["service_id"], account):
            return self.error(404, f"Service {raw_id} not found")
        return service

    # -- vendor calls ------------------------------------------------------------------

    def get_service(self, call: Call) -> Response:
        found = self._find(call.params["service_id"], call.account)
        if isinstance(found, Response):
            return found
        return Response(200, {"ok": True, **copy.deepcopy(found)})

    def patch_service(self, call: Call) -> Response:
        content_type = (call.request.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type.lower() != PATCH_CONTENT_TYPE:
            return self.error(415, f"Content-Type must be {PATCH_CONTENT_TYPE}")
        found = self._find(call.params["service_id"], call.account)
        if isinstance(found, Response):
            return found
        try:
            operations = call.request.json()
        except ValueError:
            return self.error(400, "Malformed JSON")
        try:
            patched = apply_patch(found, operations)
        except PatchError as exc:
            return self.error(400, str(exc))
        self.services[patched["service_id"]] = patched
        return Response(200, {"ok": True, **copy.deepcopy(patched)})

    def list_services(self, call: Call) -> Response:
        query = call.request.query
        unknown = sorted(set(query) - FILTERS - {"page", "page_size"})
        if unknown:
            return self.error(400, f"Unknown query parameters: {', '.join(unknown)}")
        try:
            page = int(query.get("page") or 1)
            size = int(query.get("page_size") or PAGE_SIZE_DEFAULT)
        except ValueError:
            return self.error(400, "page and page_size must be integers")
        if page < 1 or not 1 <= size <= PAGE_SIZE_MAX:
            return self.error(400, f"page >= 1 and page_size 1 to {PAGE_SIZE_MAX}")
        filters = {k: v for k, v in query.items() if k in FILTERS}
        matches = [
            s
            for service_id, s in sorted(self.services.items())
            if self._visible(service_id, call.account)
            and all(_text(s[k]) == v for k, v in filters.items())
        ]
        records = copy.deepcopy(matches[(page - 1) * size : page * size])
        return Response(
            200,
            {
                "ok": True,
                "has_more": page * size < len(matches),
                "record_count": len(matches),
                "records": records,
            },
        )

    # -- in-process control ------------------------------------------------------------

    def seed(self, payload: Any) -> int:
        """``{"services": [...]}`` or a list of services (``service_id`` required; an
        ``account``, the login ``user@clientcode``, makes the service that account's only)."""
        records = payload.get("services", []) if isinstance(payload, dict) else payload
        services = [(new_service(record), record.get("account")) for record in records]
        with self.lock:
            for service, account in services:
                self.services[service["service_id"]] = service
                if account:
                    self.owners[service["service_id"]] = str(account)
                else:
                    self.owners.pop(service["service_id"], None)
        return len(services)

    def state(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            service = self.services.get(int(key)) if str(key).isdigit() else None
            return copy.deepcopy(service) if service is not None else None
