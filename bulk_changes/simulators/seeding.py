"""Seeding the simulators from inventory rows (the demo's and the tests' starting state).

Row columns: iccid, msisdn, imei, integration, status, rate_plan, communication_plan,
username, cost_center_1, cost_center_2, cost_center_3, revio_service_id, tenant.

- ``jasper`` rows seed a Jasper device (the username in ``accountCustom1`` by default);
- ``telegence`` rows seed a line keyed by the msisdn (rows whose status is a pending one,
  such as ``PENDING`` or ``ACTIVATION_READY``, seed no line: activation creates it);
- every row with a ``revio_service_id`` seeds a Rev.io service whose number is the ICCID
  (Jasper) or the MSISDN (Telegence), with custom fields "Username", "Cost Center 1..3" in
  an order that differs between services (a shuffle seeded by the service id), so that
  clients must find fields by label; with ``revio_account`` (a login ``user@clientcode``)
  the services are that Rev.io account's only (the others neither list nor find them).
"""

from __future__ import annotations

import csv
import random
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulk_changes.domain.model import INVENTORY_COLUMNS as INVENTORY_FILE_COLUMNS

if TYPE_CHECKING:
    from bulk_changes.simulators.runner import SimulatorSet

# the inventory file the CLI imports (one definition of its columns), and its tenant
INVENTORY_COLUMNS = (*INVENTORY_FILE_COLUMNS, "tenant")
JASPER_STATUSES = frozenset(
    {
        "TEST_READY",
        "ACTIVATION_READY",
        "ACTIVATED",
        "DEACTIVATED",
        "INVENTORY",
        "RETIRED",
        "PURGED",
        "REPLACED",
    }
)
JASPER_STATUS_ALIASES = {
    "": "ACTIVATED",
    "A": "ACTIVATED",
    "ACTIVE": "ACTIVATED",
    "S": "DEACTIVATED",
    "SUSPENDED": "DEACTIVATED",
    "INACTIVE": "DEACTIVATED",
    "C": "RETIRED",
    "CANCELLED": "RETIRED",
    "CANCELED": "RETIRED",
    "PENDING": "ACTIVATION_READY",
}
# None: no line exists at the carrier yet
TELEGENCE_STATUSES: dict[str, str | None] = {
    "": "A",
    "A": "A",
    "ACTIVE": "A",
    "ACTIVATED": "A",
    "S": "S",
    "SUSPENDED": "S",
    "DEACTIVATED": "S",
    "INACTIVE": "S",
    "C": "C",
    "CANCELLED": "C",
    "CANCELED": "C",
    "RETIRED": "C",
    "DISCONNECTED": "C",
    "PENDING": None,
    "ACTIVATION_READY": None,
    "TEST_READY": None,
    "INVENTORY": None,
}
# label -> field_id (a field definition is shared by every service)
REVIO_FIELDS = (
    ("Username", 1001, "username"),
    ("Cost Center 1", 1002, "cost_center_1"),
    ("Cost Center 2", 1003, "cost_center_2"),
    ("Cost Center 3", 1004, "cost_center_3"),
)


def _get(row: dict[str, Any], name: str) -> str:
    return str(row.get(name) or "").strip()


def jasper_status(value: str) -> str:
    status = value.strip().upper()
    if status in JASPER_STATUSES:
        return status
    if status in JASPER_STATUS_ALIASES:
        return JASPER_STATUS_ALIASES[status]
    raise ValueError(f"no Jasper status for {value!r}")


def telegence_status(value: str) -> str | None:
    status = value.strip().upper()
    if status not in TELEGENCE_STATUSES:
        raise ValueError(f"no Telegence status for {value!r}")
    return TELEGENCE_STATUSES[status]


def revio_fields(service_id: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The custom fields of a seeded service, in an order shuffled by the service id."""
    fields = [
        {"field_id": field_id, "label": label, "value": _get(row, column)}
        for label, field_id, column in REVIO_FIELDS
    ]
    random.Random(f"revio-fields-{service_id}").shuffle(fields)
    return fields


def seed_from_inventory_rows(
    sims: SimulatorSet,
    rows: list[dict[str, Any]],
    *,
    jasper_username_field: str = "accountCustom1",
    revio_account: str | None = None,
) -> dict[str, int]:
    """Seed devices, lines and services from inventory rows; returns counts per system."""
    payloads = seed_payloads(
        rows, jasper_username_field=jasper_username_field, revio_account=revio_account
    )
    return {
        "jasper": sims.jasper.seed(payloads["jasper"]),
        "telegence": sims.telegence.seed(payloads["telegence"]),
        "revio": sims.revio.seed(payloads["revio"]),
    }


def seed_running_simulators(
    rows: list[dict[str, Any]],
    base_urls: dict[str, str],
    *,
    jasper_username_field: str = "accountCustom1",
    timeout: float = 30.0,
) -> dict[str, int]:
    """Seed simulators running in another process, over ``POST /_sim/seed`` (the bodies
    ``seed_from_inventory_rows`` gives the in-process ones). ``base_urls``: each system's
    API address (``.../rws/api/v1``, ``...``, ``.../v1``); the admin paths sit at the
    server's root. A system with nothing to seed is not called. -> counts per system."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    payloads = seed_payloads(rows, jasper_username_field=jasper_username_field)
    counts: dict[str, int] = {}
    for system, payload in payloads.items():
        items = next(iter(payload.values()))
        if not items:
            counts[system] = 0
            continue
        parts = urlsplit(base_urls[system])
        url = f"{parts.scheme}://{parts.netloc}/_sim/seed"
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(
                f"the {system} simulator at {url} did not answer ({exc}); start them with "
                "`bulk-changes simulate` (or the demo), or set BULK_CHANGES_"
                f"{system.upper()}_URL"
            ) from exc
        counts[system] = (
            int(answer.get("seeded", len(items))) if isinstance(answer, dict) else len(items)
        )
    return counts


def seed_payloads(
    rows: list[dict[str, Any]],
    *,
    jasper_username_field: str = "accountCustom1",
    revio_account: str | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The ``/_sim/seed`` body of each system for these inventory rows (``revio_account``:
    the Rev.io login the services belong to; None: every account's)."""
    devices: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        integration = _get(row, "integration").lower()
        iccid, msisdn = _get(row, "iccid"), _get(row, "msisdn")
        try:
            if integration == "jasper":
                devices.append(_device(row, jasper_username_field))
                service_number = iccid
            elif integration == "telegence":
                line = _line(row)
                if line is not None:
                    lines.append(line)
                service_number = msisdn
            else:
                raise ValueError(f"unknown integration {integration!r}")
            if _get(row, "revio_service_id"):
                service = _service(row, service_number)
                if revio_account:
                    service["account"] = revio_account
                services.append(service)
        except ValueError as exc:
            raise ValueError(f"inventory row {number}: {exc}") from exc
    return {
        "jasper": {"devices": devices},
        "telegence": {"lines": lines},
        "revio": {"services": services},
    }


def _device(row: dict[str, Any], username_field: str) -> dict[str, Any]:
    iccid = _get(row, "iccid")
    if not iccid:
        raise ValueError("a Jasper row needs an iccid")
    return {
        "iccid": iccid,
        "msisdn": _get(row, "msisdn"),
        "imei": _get(row, "imei"),
        "status": jasper_status(_get(row, "status")),
        "ratePlan": _get(row, "rate_plan"),
        "communicationPlan": _get(row, "communication_plan"),
        username_field: _get(row, "username"),
    }


def _line(row: dict[str, Any]) -> dict[str, Any] | None:
    msisdn = _get(row, "msisdn")
    if not msisdn:
        raise ValueError("a Telegence row needs an msisdn")
    status = telegence_status(_get(row, "status"))
    if status is None:
        return None
    return {
        "subscriberNumber": msisdn,
        "status": status,
        "sim": _get(row, "iccid"),
        "IMEI": _get(row, "imei"),
        "singleUserCode": _get(row, "rate_plan"),
    }


def _service(row: dict[str, Any], number: str) -> dict[str, Any]:
    raw_id = _get(row, "revio_service_id")
    if not raw_id.isdigit():
        raise ValueError(f"revio_service_id must be an integer: {raw_id!r}")
    if not number:
        raise ValueError("a Rev.io service needs the device's number (iccid or msisdn)")
    service_id = int(raw_id)
    tenant = _get(row, "tenant")
    return {
        "service_id": service_id,
        "customer_id": 10000 + zlib.crc32(tenant.encode("utf-8")) % 90000 if tenant else 1,
        "number": number,
        "description": _get(row, "username"),
        "fields": revio_fields(service_id, row),
    }


def load_inventory_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of an inventory CSV file (UTF-8, header line with the columns above)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("iccid", "integration") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        return [dict(row) for row in reader]
