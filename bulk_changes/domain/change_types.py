"""The four change types: what a request row holds and how it is checked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from bulk_changes.domain.errors import ValidationError
from bulk_changes.domain.validation import (
    check_iccid,
    check_imei,
    check_length,
    check_msisdn,
    check_text,
    kind_of,
    known_statuses,
    normalize_status,
    text_of,
)


class ChangeType(StrEnum):
    USERNAME_COST_CENTER = "username_cost_center"
    DEVICE_STATUS = "device_status"
    CARRIER_RATE_PLAN = "carrier_rate_plan"
    EQUIPMENT = "equipment"


class Integration(StrEnum):
    JASPER = "jasper"
    TELEGENCE = "telegence"


# Which column names a device at each integration.
DEVICE_KEY_FIELD: Mapping[Integration, str] = {
    Integration.JASPER: "iccid",
    Integration.TELEGENCE: "msisdn",
}

REQUEST_FIELDS: Mapping[ChangeType, tuple[str, ...]] = {
    ChangeType.USERNAME_COST_CENTER: (
        "username",
        "cost_center_1",
        "cost_center_2",
        "cost_center_3",
    ),
    ChangeType.DEVICE_STATUS: ("status", "reason_code", "effective_date"),
    ChangeType.CARRIER_RATE_PLAN: ("rate_plan", "communication_plan", "effective_date"),
    ChangeType.EQUIPMENT: ("new_iccid", "new_imei", "reason_code"),
}

# Offered by neither API: refused at intake with this reason rather than failing later.
UNSUPPORTED: Mapping[tuple[ChangeType, Integration], str] = {
    (ChangeType.EQUIPMENT, Integration.JASPER): (
        "equipment changes are not offered by Jasper's API: the ICCID is the device's key "
        "and the IMEI is read-only in Control Center"
    ),
}

JASPER_MAX_EFFECTIVE_DAYS = 180


def parse_change_type(value: str) -> ChangeType:
    try:
        return ChangeType(value)
    except ValueError:
        known = ", ".join(c.value for c in ChangeType)
        raise ValueError(f"unknown change type {value!r} (known: {known})") from None


def parse_integration(value: str) -> Integration:
    try:
        return Integration(value)
    except ValueError:
        raise ValueError(f"unknown integration {value!r} (known: jasper, telegence)") from None


def allowed_columns(change_type: ChangeType, integration: Integration) -> tuple[str, ...]:
    return (DEVICE_KEY_FIELD[integration], *REQUEST_FIELDS[change_type])


@dataclass(frozen=True)
class ValidRow:
    row: int
    device_key: str
    request: dict[str, str]


Checker = Callable[[Integration, dict[str, str], int, date], list[ValidationError]]


# The longest field name an error names as given; the AMOP column holding it is 64 wide.
MAX_FIELD_NAME = 40


def field_label(name: object) -> str:
    """A field name fit to show and store: as given when short and printable, else its repr
    cut short (a JSON key can be any text: 10,000 characters, NUL, newlines).
    """
    text = str(name)
    if len(text) <= MAX_FIELD_NAME and text.isprintable():
        return text
    shown = repr(text[:MAX_FIELD_NAME])
    return shown + ("..." if len(text) > MAX_FIELD_NAME else "")


def _clean(row: Mapping[str, object], number: int) -> tuple[dict[str, str], list[ValidationError]]:
    """The row's values as stripped text; a value that is not text or a number, or whose
    text would break later (control characters, over the field's limit), is an error."""
    cleaned: dict[str, str] = {}
    errors: list[ValidationError] = []
    for key, value in row.items():
        if value is None:
            continue
        name = str(key).strip()
        text = text_of(value)
        if text is None:
            errors.append(
                ValidationError(
                    number, field_label(name), f"must be text or a number, got {kind_of(value)}"
                )
            )
            continue
        text = text.strip()
        if not text:
            continue
        reason = check_text(text) or check_length(name, text)
        if reason:
            errors.append(ValidationError(number, field_label(name), reason))
            continue
        cleaned[name] = text
    return cleaned, errors


def _check_effective_date(
    integration: Integration, value: str | None, row: int, today: date
) -> list[ValidationError]:
    if value is None:
        return []
    try:
        # The whole value is sent to the carrier: trailing text after the date must parse too.
        when = date.fromisoformat(value[:10])
        if len(value) > 10:
            datetime.fromisoformat(value)
    except ValueError:
        return [ValidationError(row, "effective_date", f"not an ISO 8601 date: {value!r}")]
    if integration is Integration.JASPER and when > today + timedelta(
        days=JASPER_MAX_EFFECTIVE_DAYS
    ):
        return [
            ValidationError(
                row,
                "effective_date",
                f"Jasper accepts at most {JASPER_MAX_EFFECTIVE_DAYS} days ahead",
            )
        ]
    return []


def _check_username_cost_center(
    integration: Integration, req: dict[str, str], row: int, today: date
) -> list[ValidationError]:
    if not any(k in req for k in REQUEST_FIELDS[ChangeType.USERNAME_COST_CENTER]):
        return [
            ValidationError(row, "username", "give a username or at least one of cost_center_1..3")
        ]
    return []


def _check_device_status(
    integration: Integration, req: dict[str, str], row: int, today: date
) -> list[ValidationError]:
    status = req.get("status")
    if status is None:
        return [ValidationError(row, "status", "required")]
    normalized = normalize_status(integration.value, status)
    if normalized is None:
        return [
            ValidationError(
                row,
                "status",
                f"{status!r} is not a {integration.value} status "
                f"(known: {known_statuses(integration.value)})",
            )
        ]
    req["status"] = normalized
    return _check_effective_date(integration, req.get("effective_date"), row, today)


def _check_rate_plan(
    integration: Integration, req: dict[str, str], row: int, today: date
) -> list[ValidationError]:
    errors: list[ValidationError] = []
    if "rate_plan" not in req:
        errors.append(ValidationError(row, "rate_plan", "required"))
    if integration is Integration.TELEGENCE and "communication_plan" in req:
        errors.append(
            ValidationError(row, "communication_plan", "Telegence lines have no communication plan")
        )
    errors.extend(_check_effective_date(integration, req.get("effective_date"), row, today))
    return errors


def _check_equipment(
    integration: Integration, req: dict[str, str], row: int, today: date
) -> list[ValidationError]:
    errors: list[ValidationError] = []
    if "new_iccid" not in req and "new_imei" not in req:
        errors.append(ValidationError(row, "new_iccid", "give new_iccid and/or new_imei"))
    if "new_iccid" in req and (reason := check_iccid(req["new_iccid"])):
        errors.append(ValidationError(row, "new_iccid", reason))
    if "new_imei" in req and (reason := check_imei(req["new_imei"])):
        errors.append(ValidationError(row, "new_imei", reason))
    if "reason_code" not in req:
        errors.append(ValidationError(row, "reason_code", "required (for example CUST_OWN_EQU)"))
    return errors


CHECKS: Mapping[ChangeType, Checker] = {
    ChangeType.USERNAME_COST_CENTER: _check_username_cost_center,
    ChangeType.DEVICE_STATUS: _check_device_status,
    ChangeType.CARRIER_RATE_PLAN: _check_rate_plan,
    ChangeType.EQUIPMENT: _check_equipment,
}


def validate_row(
    change_type: ChangeType,
    integration: Integration,
    raw: Mapping[str, object],
    row: int,
    today: date,
) -> ValidRow | list[ValidationError]:
    """Check one request row on its own (inventory and duplicates are checked by intake)."""
    unsupported = UNSUPPORTED.get((change_type, integration))
    if unsupported:
        return [ValidationError(row, "change_type", unsupported)]
    req, value_errors = _clean(raw, row)
    errors = list(value_errors)
    key_field = DEVICE_KEY_FIELD[integration]
    unknown = sorted(set(req) - set(allowed_columns(change_type, integration)))
    errors += [
        ValidationError(row, field_label(name), "unknown field for this change type")
        for name in unknown
    ]
    key = req.pop(key_field, None)
    if key is None:
        if not any(e.field == key_field for e in errors):
            errors.append(ValidationError(row, key_field, "required"))
    else:
        reason = check_iccid(key) if integration is Integration.JASPER else check_msisdn(key)
        if reason:
            errors.append(ValidationError(row, key_field, reason))
    for name in unknown:
        req.pop(name, None)
    if not value_errors:
        # With a value refused as such, the change type's own checks would only add
        # noise ("required" for the field just refused).
        errors.extend(CHECKS[change_type](integration, req, row, today))
    if errors:
        return errors
    assert key is not None
    return ValidRow(row=row, device_key=key, request=req)
