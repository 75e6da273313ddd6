"""Fakes of the project's own API resources: they record calls and fail on request.

State lives in FAKES, keyed by the resource's ``key``, because Dagster rebuilds
resources from their config and would drop anything kept on the instance.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulk_changes.domain.errors import NotFound
from bulk_changes.domain.ports import BillingClient, CarrierClient, ServiceCache
from bulk_changes.processing.service_directory import ServiceDirectory
from bulk_changes.resources.apis import JasperApi, RevioApi, TelegenceApi


@dataclass
class FakeSystem:
    """One external system: the calls made, and scripted failures per device key."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    # key -> exceptions raised by the next calls about that key, in order
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    services: dict[int, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    activation_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    # every call of the systems sharing this list, in the order they were made
    sequence: list[tuple[str, str]] = field(default_factory=list)

    def call(self, name: str, key: str, payload: Any = None) -> dict[str, Any]:
        with self.lock:
            self.calls.append((name, str(key), payload))
            self.sequence.append((name, str(key)))
            pending = self.failures.get(str(key))
            if pending:
                raise pending.pop(0)
        return {"ok": True, "key": key}

    def names(self, key: str | None = None) -> list[str]:
        return [n for n, k, _ in self.calls if key is None or k == str(key)]


FAKES: dict[str, dict[str, FakeSystem]] = {}


def fake_systems(key: str) -> dict[str, FakeSystem]:
    if key not in FAKES:
        sequence: list[tuple[str, str]] = []
        FAKES[key] = {n: FakeSystem(sequence=sequence) for n in ("jasper", "telegence", "revio")}
    return FAKES[key]


class FakeJasperClient:
    def __init__(self, system: FakeSystem) -> None:
        self.system = system

    def _apply(self, name: str, iccid: str, changes: dict[str, Any]) -> dict[str, Any]:
        result = self.system.call(name, iccid, changes)
        self.system.devices.setdefault(iccid, {}).update(changes)
        return result

    def get_device(self, iccid: str) -> dict[str, Any]:
        self.system.call("get_device", iccid)
        return {"iccid": iccid, **self.system.devices.get(iccid, {})}

    def set_username(self, iccid: str, username: str) -> dict[str, Any]:
        return self._apply("set_username", iccid, {"accountCustom1": username})

    def set_status(self, iccid: str, status: str) -> dict[str, Any]:
        return self._apply("set_status", iccid, {"status": status})

    def set_rate_plan(self, iccid, rate_plan, communication_plan=None, effective_date=None):
        return self._apply("set_rate_plan", iccid, {"ratePlan": rate_plan})


class FakeTelegenceClient:
    def __init__(self, system: FakeSystem) -> None:
        self.system = system

    def get_line(self, number: str) -> dict[str, Any]:
        self.system.call("get_line", number)
        return {"subscriberNumber": number, **self.system.devices.get(number, {})}

    def change_status(
        self, number: str, action: str, reason_code: str, effective_date: str | None
    ) -> dict[str, Any]:
        return self.system.call("change_status", number, action)

    def change_rate_plan(self, number: str, soc: str, effective_date=None):
        return self.system.call("change_rate_plan", number, soc)

    def change_equipment(self, number: str, reason_code: str, new_sim=None, new_imei=None):
        return self.system.call("change_equipment", number, {"sim": new_sim, "imei": new_imei})

    def request_activation(self, lines: Sequence[Mapping[str, Any]]) -> str:
        number = lines[0]["subscriberNumber"]
        self.system.call("request_activation", number, lines)
        return f"req-{number}-{next(self.system.activation_ids)}"

    def activation_status(self, request_id: str) -> dict[str, Any]:
        number = request_id.split("-")[1]
        self.system.call("activation_status", number, request_id)
        return {
            "requestId": request_id,
            "interactionStatus": "COMPLETED",
            "lines": [{"subscriberNumber": number, "status": "A"}],
        }


def revio_service(service_id: int, number: str) -> dict[str, Any]:
    return {
        "service_id": service_id,
        "number": number,
        "description": "",
        "fields": [
            {"field_id": 3, "label": "Cost Center 2", "value": ""},
            {"field_id": 1, "label": "Username", "value": ""},
            {"field_id": 2, "label": "Cost Center 1", "value": ""},
            {"field_id": 4, "label": "Cost Center 3", "value": ""},
        ],
    }


class FakeRevioClient:
    def __init__(self, system: FakeSystem) -> None:
        self.system = system

    def _service(self, service_id: int) -> dict[str, Any]:
        service = self.system.services.get(int(service_id))
        if service is None:
            raise NotFound(f"service {service_id} not found", system="revio", status=404)
        return service

    def get_service(self, service_id: int) -> dict[str, Any]:
        self.system.call("get_service", str(service_id))
        return self._service(service_id)

    def list_services(
        self, page: int = 1, page_size: int = 500
    ) -> tuple[list[dict[str, Any]], bool]:
        self.system.call("list_services", str(page))
        ordered = [self.system.services[k] for k in sorted(self.system.services)]
        chunk = ordered[(page - 1) * page_size : page * page_size]
        return [dict(s) for s in chunk], page * page_size < len(ordered)

    def find_services(self, number: str) -> list[dict[str, Any]]:
        self.system.call("find_services", number)
        return [s for s in self.system.services.values() if s["number"] == number]

    def patch_service(self, service_id: int, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self.system.call("patch_service", str(service_id), ops)
        service = self._service(service_id)
        for op in ops:
            if op["op"] != "replace":
                continue
            parts = op["path"].strip("/").split("/")
            if parts[0] == "fields":
                service["fields"][int(parts[1])][parts[2]] = op["value"]
            else:
                service[parts[0]] = op["value"]
        return service

    def set_fields(
        self, service_id: int, build_ops: Callable[[dict[str, Any]], list[dict[str, Any]]]
    ):
        return self.patch_service(service_id, build_ops(self.get_service(service_id)))


class FakeJasperApi(JasperApi):
    key: str = "default"

    def client(self, account, limiter, on_exchange=None):
        return FakeJasperClient(fake_systems(self.key)["jasper"])


class FakeTelegenceApi(TelegenceApi):
    key: str = "default"

    def client(self, account, limiter, on_exchange=None):
        return FakeTelegenceClient(fake_systems(self.key)["telegence"])


class FakeRevioApi(RevioApi):
    key: str = "default"

    def client(self, account, limiter, on_exchange=None):
        return FakeRevioClient(fake_systems(self.key)["revio"])


class FakeClients:
    """The runner's Clients for a test that drives StageRunner directly."""

    def __init__(self, key: str, integration: str) -> None:
        systems = fake_systems(key)
        self._carrier = (
            FakeJasperClient(systems["jasper"])
            if integration == "jasper"
            else FakeTelegenceClient(systems["telegence"])
        )
        self._billing = FakeRevioClient(systems["revio"])
        self._services = ServiceDirectory()

    def carrier(self) -> CarrierClient:
        return self._carrier

    def billing(self) -> BillingClient:
        return self._billing

    def services(self) -> ServiceCache:
        return self._services
