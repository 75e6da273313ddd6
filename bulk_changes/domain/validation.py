"""Field checks for device identifiers and vocabularies."""

from __future__ import annotations

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

# Telegence's one-letter subscriber statuses; the long names are accepted and normalised.
TELEGENCE_STATUSES = frozenset({"A", "S", "C"})
_TELEGENCE_ALIASES = {
    "A": "A",
    "ACTIVE": "A",
    "ACTIVATE": "A",
    "S": "S",
    "SUSPEND": "S",
    "SUSPENDED": "S",
    "C": "C",
    "CANCEL": "C",
    "CANCELLED": "C",
    "CANCELED": "C",
}


def luhn_valid(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    for candidate in "0123456789":
        if luhn_valid(partial + candidate):
            return candidate
    raise ValueError(f"no Luhn digit for {partial!r}")  # unreachable for digit strings


def check_iccid(value: str) -> str | None:
    """None when valid, else the reason."""
    if not value.isdigit():
        return "ICCID must contain digits only"
    if not 19 <= len(value) <= 20:
        return f"ICCID must have 19 or 20 digits, got {len(value)}"
    if not luhn_valid(value):
        return "ICCID check digit is wrong (Luhn)"
    return None


def check_imei(value: str) -> str | None:
    if not value.isdigit():
        return "IMEI must contain digits only"
    if len(value) != 15:
        return f"IMEI must have 15 digits, got {len(value)}"
    if not luhn_valid(value):
        return "IMEI check digit is wrong (Luhn)"
    return None


def check_msisdn(value: str) -> str | None:
    if not value.isdigit():
        return "MSISDN must contain digits only"
    if not 10 <= len(value) <= 15:
        return f"MSISDN must have 10 to 15 digits, got {len(value)}"
    return None


def normalize_status(integration: str, value: str) -> str | None:
    """The status in the integration's own vocabulary, or None when it is not one."""
    text = value.strip().upper()
    if integration == "jasper":
        return text if text in JASPER_STATUSES else None
    if integration == "telegence":
        return _TELEGENCE_ALIASES.get(text)
    return None


def known_statuses(integration: str) -> str:
    if integration == "jasper":
        return ", ".join(sorted(JASPER_STATUSES))
    return "A (active), S (suspended), C (cancelled)"
