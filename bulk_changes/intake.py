"""Intake: files and messages become a stored bulk change with one device change per row.

Invalid rows are kept as ERROR device changes naming the row, the field and the reason;
valid rows go on. A whole file is refused only when it cannot be read as rows at all.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulk_changes.db.repository import NewDeviceChange, Repository
from bulk_changes.domain.change_types import (
    DEVICE_KEY_FIELD,
    ChangeType,
    Integration,
    ValidRow,
    allowed_columns,
    parse_change_type,
    parse_integration,
    validate_row,
)
from bulk_changes.domain.errors import (
    BulkChangeError,
    ConfigurationError,
    InputFileError,
    ValidationError,
)
from bulk_changes.domain.settings import Settings
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes.domain.validation import check_iccid, check_imei, check_msisdn, normalize_status

INVENTORY_COLUMNS = (
    "iccid",
    "msisdn",
    "imei",
    "integration",
    "status",
    "rate_plan",
    "communication_plan",
    "username",
    "cost_center_1",
    "cost_center_2",
    "cost_center_3",
    "revio_service_id",
)

MAX_ROWS = 100_000


@dataclass(frozen=True)
class SubmitRequest:
    tenant: str
    change_type: str
    integration: str
    rows: Sequence[Mapping[str, Any]]
    notify: Sequence[str] = ()
    idempotency_key: str | None = None
    requested_by: str | None = None
    source: str = "cli"


@dataclass(frozen=True)
class SubmitResult:
    id: int
    accepted: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    created: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "accepted": self.accepted, "rejected": self.rejected}


class IntakeError(BulkChangeError):
    """The whole request is refused (unknown tenant, unknown change type...)."""


# ---- reading files ---------------------------------------------------------------------


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{name}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")


def read_csv_rows(
    data: bytes, name: str, allowed: Sequence[str], required: Sequence[str]
) -> list[dict[str, str]]:
    """Rows of a CSV as dicts, with the file-level checks: header, width, emptiness."""
    text = _decode(data, name)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputFileError(f"{name}: the file is empty") from None
    except csv.Error as exc:
        raise InputFileError(f"{name}: not readable as CSV: {exc}") from exc
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in allowed]
    if unknown or not columns or any(not c for c in columns):
        raise InputFileError(
            f"{name}: wrong header: unknown column(s) {', '.join(repr(c) for c in unknown) or '(empty)'}; "
            f"expected columns among: {', '.join(allowed)}"
        )
    if len(set(columns)) != len(columns):
        raise InputFileError(f"{name}: wrong header: a column appears twice")
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputFileError(f"{name}: wrong header: missing column(s) {', '.join(missing)}")
    rows: list[dict[str, str]] = []
    try:
        for number, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) > len(columns):
                raise InputFileError(
                    f"{name}: line {number} has {len(values)} fields, the header has {len(columns)}"
                )
            rows.append(dict(zip(columns, values, strict=False)))
            if len(rows) > MAX_ROWS:
                raise InputFileError(f"{name}: more than {MAX_ROWS} rows; split the file")
    except csv.Error as exc:
        raise InputFileError(
            f"{name}: not readable as CSV near line {reader.line_num}: {exc}"
        ) from exc
    if not rows:
        raise InputFileError(f"{name}: no rows after the header")
    return rows


def read_json_rows(data: bytes, name: str) -> list[dict[str, Any]]:
    text = _decode(data, name)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{name}: not valid JSON: {exc}") from exc
    if isinstance(parsed, dict):
        parsed = parsed.get("devices")
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise InputFileError(f'{name}: expected a list of device objects (or {{"devices": [...]}})')
    if not parsed:
        raise InputFileError(f"{name}: no devices")
    return parsed


def read_request_file(
    path: str | Path, change_type: ChangeType, integration: Integration
) -> list[dict[str, Any]]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if path.suffix.lower() == ".json":
        return read_json_rows(data, path.name)
    columns = allowed_columns(change_type, integration)
    return read_csv_rows(data, path.name, columns, [DEVICE_KEY_FIELD[integration]])


# ---- inventory --------------------------------------------------------------------------


def inventory_rows(rows: Sequence[Mapping[str, str]], name: str) -> list[dict[str, Any]]:
    """Checked inventory rows ready to upsert; any bad row refuses the import, naming it."""
    problems: list[str] = []
    result: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for number, raw in enumerate(rows, start=2):
        row = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in raw.items()}
        integration = row.get("integration")
        if integration not in ("jasper", "telegence"):
            problems.append(
                f"line {number}: integration: must be jasper or telegence, got {integration!r}"
            )
            continue
        key_field = DEVICE_KEY_FIELD[Integration(integration)]
        key = row.get(key_field)
        if not key:
            problems.append(f"line {number}: {key_field}: required for {integration} devices")
            continue
        checks = [
            ("iccid", check_iccid),
            ("msisdn", check_msisdn),
            ("imei", check_imei),
        ]
        for field_name, check in checks:
            value = row.get(field_name)
            if value and (reason := check(value)):
                problems.append(f"line {number}: {field_name}: {reason}")
        if row.get("status"):
            status = normalize_status(integration, row["status"])
            if status is None:
                problems.append(
                    f"line {number}: status: {row['status']!r} is not a {integration} status"
                )
            row["status"] = status
        service = row.get("revio_service_id")
        if service is not None:
            if not str(service).isdigit():
                problems.append(f"line {number}: revio_service_id: must be a number")
            else:
                row["revio_service_id"] = int(service)
        if (integration, key) in seen:
            problems.append(f"line {number}: {key_field}: {key} appears twice")
        seen.add((integration, key))
        row["device_key"] = key
        result.append(row)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputFileError(f"{name}: {len(problems)} invalid row(s):\n  {shown}{more}")
    return result


def import_inventory(repo: Repository, tenant: str, path: str | Path) -> tuple[int, int]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from exc
    rows = read_csv_rows(data, path.name, INVENTORY_COLUMNS, ["integration"])
    return repo.upsert_devices(tenant, inventory_rows(rows, path.name))


# ---- submitting -------------------------------------------------------------------------


def submit_bulk_change(
    repo: Repository, settings: Settings, request: SubmitRequest
) -> SubmitResult:
    try:
        change_type = parse_change_type(request.change_type)
        integration = parse_integration(request.integration)
        tenant = settings.tenant(request.tenant)
        tenant.carrier_account(integration.value)
    except (ValueError, ConfigurationError) as exc:
        raise IntakeError(str(exc)) from exc
    if request.idempotency_key:
        existing = repo.find_by_idempotency_key(tenant.id, request.idempotency_key)
        if existing:
            return _result_of(repo, existing.id, created=False)
    if not request.rows:
        raise IntakeError("no devices in the request")
    if len(request.rows) > MAX_ROWS:
        raise IntakeError(f"more than {MAX_ROWS} devices in one request; split it")

    today = datetime.now(UTC).date()
    checked: list[ValidRow | list[ValidationError]] = [
        validate_row(change_type, integration, row, number, today)
        for number, row in enumerate(request.rows, start=1)
    ]
    keys = [c.device_key for c in checked if isinstance(c, ValidRow)]
    inventory = repo.devices_by_key(tenant.id, integration.value, keys)
    seen: set[str] = set()
    changes: list[NewDeviceChange] = []
    key_field = DEVICE_KEY_FIELD[integration]
    for number, (raw, result) in enumerate(zip(request.rows, checked, strict=True), start=1):
        if isinstance(result, ValidRow):
            errors = _context_errors(
                result, seen, inventory, tenant.rate_plan_billing, key_field, change_type
            )
            seen.add(result.device_key)
            if not errors:
                changes.append(
                    NewDeviceChange(
                        row_number=number,
                        device_key=result.device_key,
                        device_id=inventory[result.device_key]["id"],
                        request=result.request,
                    )
                )
                continue
        else:
            errors = result
        first = errors[0]
        reason = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        changes.append(
            NewDeviceChange(
                row_number=number,
                device_key=str(raw.get(key_field) or "") or None,
                device_id=None,
                request={k: v for k, v in raw.items() if v not in (None, "")},
                status=DeviceStatus.ERROR,
                error=reason if len(errors) > 1 else first.reason,
                error_field=first.field,
            )
        )
    notify = list(dict.fromkeys(list(request.notify)))
    bulk_id, created = repo.create_bulk_change(
        tenant_id=tenant.id,
        change_type=change_type.value,
        integration=integration.value,
        notify=notify,
        idempotency_key=request.idempotency_key,
        requested_by=request.requested_by,
        source=request.source,
        changes=changes,
    )
    return _result_of(repo, bulk_id, created=created)


def _context_errors(
    row: ValidRow,
    seen: set[str],
    inventory: Mapping[str, Mapping[str, Any]],
    billing: Mapping[str, int],
    key_field: str,
    change_type: ChangeType,
) -> list[ValidationError]:
    if row.device_key in seen:
        return [
            ValidationError(
                row.row, key_field, f"{row.device_key} appears twice in this bulk change"
            )
        ]
    if row.device_key not in inventory:
        return [
            ValidationError(
                row.row, key_field, f"{row.device_key} is not in the tenant's inventory"
            )
        ]
    if change_type is ChangeType.CARRIER_RATE_PLAN and row.request["rate_plan"] not in billing:
        return [
            ValidationError(
                row.row,
                "rate_plan",
                f"{row.request['rate_plan']!r} has no billing mapping for this tenant (rate_plan_billing)",
            )
        ]
    return []


def _result_of(repo: Repository, bulk_id: int, created: bool) -> SubmitResult:
    rejected = repo.intake_rejections(bulk_id)
    total = sum(repo.counts(bulk_id).values())
    return SubmitResult(
        id=bulk_id, accepted=total - len(rejected), rejected=rejected, created=created
    )
