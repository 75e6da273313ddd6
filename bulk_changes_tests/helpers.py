"""Test data builders shared by the tiers."""

from __future__ import annotations

from bulk_changes.domain.validation import luhn_check_digit


def iccid(n: int, prefix: str = "890141") -> str:
    """A valid 20-digit ICCID (Luhn) numbered n."""
    body = f"{prefix}{n:013d}"
    return body + luhn_check_digit(body)


def imei(n: int) -> str:
    body = f"35{n:012d}"
    return body + luhn_check_digit(body)


def msisdn(n: int) -> str:
    return f"555{n:07d}"


def printed_by_a_fresh_interpreter(script: str) -> str:
    """What ``script`` prints, run by a new Python process (imports counted from nothing,
    as a started or forked process makes them); its error output if it fails."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
