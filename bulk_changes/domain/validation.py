"""Field checks for device identifiers, vocabularies and the text of any field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

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


# The longest text each request or inventory field may hold, and why (docs/input-validation.md
# gives the sources). Where the vendors publish no limit, the AMOP database's column is the
# binding one: PostgreSQL refuses a longer value, after the carrier was already changed.
FIELD_LIMITS: Mapping[str, int] = {
    "username": 255,
    "cost_center_1": 255,
    "cost_center_2": 255,
    "cost_center_3": 255,
    "rate_plan": 128,
    "communication_plan": 128,
    "reason_code": 32,
    "effective_date": 32,
    "status": 32,
}

# PostgreSQL's integer, the column type of revio_service_id.
MAX_SERVICE_ID = 2**31 - 1

# C0 controls (NUL included), DEL and C1 controls: PostgreSQL refuses NUL in text, and the
# others end up as invisible or line-breaking characters at the carrier and in CSV exports.
# Lone surrogates (possible through JSON's \ud800 escapes) cannot be encoded as UTF-8 at all.
_UNSAFE_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ASCII_DIGITS = re.compile("[0-9]+")


def check_text(value: str) -> str | None:
    """None when ``value`` holds no control character and is valid Unicode, else the reason."""
    found = _UNSAFE_CHARACTER.search(value)
    if found is None:
        return None
    code = ord(found.group())
    what = "invalid Unicode (a lone surrogate)" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"{what} U+{code:04X} at position {found.start() + 1}; remove it"


def check_length(field: str, value: str) -> str | None:
    limit = FIELD_LIMITS.get(field)
    if limit is not None and len(value) > limit:
        return f"at most {limit} characters, got {len(value)}"
    return None


def text_of(value: object) -> str | None:
    """A JSON or CSV cell as text, or None when it is not a string or a number.

    Booleans, objects and arrays are refused rather than stored as their Python repr.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return None
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def kind_of(value: object) -> str:
    """How a refused value is named in an error: its JSON type, never its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number too long to read"
    if isinstance(value, float):
        return "a number that is not finite"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _digits_reason(what: str, value: str) -> str | None:
    """The reason ``value`` is not ASCII digits only (Arabic-Indic, full-width or superscript
    digits pass ``str.isdigit`` but are not digits to the vendors, and ``int()`` fails on some).
    """
    if _ASCII_DIGITS.fullmatch(value):
        return None
    for position, char in enumerate(value, start=1):
        if not "0" <= char <= "9":
            shown = repr(char) if char.isprintable() else "a control character"
            return (
                f"{what} must contain ASCII digits 0-9 only; found {shown} "
                f"(U+{ord(char):04X}) at position {position}"
            )
    return f"{what} must contain digits only"  # the empty string


def check_service_id(value: str) -> str | None:
    if reason := _digits_reason("revio_service_id", value):
        return reason
    if int(value) > MAX_SERVICE_ID:
        return f"revio_service_id must be at most {MAX_SERVICE_ID}"
    return None


def luhn_valid(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others."""
    if not _ASCII_DIGITS.fullmatch(digits) or len(digits) < 2:
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
    if reason := _digits_reason("ICCID", value):
        return reason
    if not 19 <= len(value) <= 20:
        return f"ICCID must have 19 or 20 digits, got {len(value)}"
    if not luhn_valid(value):
        return "ICCID check digit is wrong (Luhn)"
    return None


def check_imei(value: str) -> str | None:
    if reason := _digits_reason("IMEI", value):
        return reason
    if len(value) != 15:
        return f"IMEI must have 15 digits, got {len(value)}"
    if not luhn_valid(value):
        return "IMEI check digit is wrong (Luhn)"
    return None


def check_msisdn(value: str) -> str | None:
    if reason := _digits_reason("MSISDN", value):
        return reason
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
