"""What an operator reads about one bulk change in the Dagster UI: the failed devices with
their reasons and the vendor's code, the intake rejections, counts, calls. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# The first failures shown in the UI; every device's result is in the results file.
UI_FAILED_DEVICES = 300
FAILED = ("API_FAILED", "ERROR", "CANCELLED")


def vendor_code(system: str | None, status: int | None, response: str | None) -> str:
    """The vendor's own answer code: ``jasper 400 20000001`` (Jasper's ``errorCode``), else
    the system and HTTP status; empty when no call was answered (a timeout, intake)."""
    if status is None:
        return ""
    code = ""
    try:
        body = json.loads(response) if response else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("errorCode", "code", "error_code"):
            if body.get(key) not in (None, ""):
                code = str(body[key])
                break
    return " ".join(p for p in (system or "", str(status), code) if p)


def failed_share(counts: Mapping[str, int]) -> int:
    return sum(int(counts.get(s, 0)) for s in ("API_FAILED", "ERROR"))


def summary_markdown(
    bulk_change_id: int,
    status: str,
    counts: Mapping[str, int],
    duration_seconds: float | None,
    calls: Mapping[str, Mapping[str, int]],
    failed_rows: Sequence[Mapping[str, Any]],
    failed_total: int,
    rejections: int,
    results_file: str | None,
) -> str:
    """The bulk change in a few lines of markdown: status, counts, duration, calls per
    system, and where every device's result is."""
    lines = [f"**Bulk change {bulk_change_id}: {status}**", ""]
    lines.append("| status | devices |")
    lines.append("|---|---|")
    for name, n in sorted(counts.items()):
        lines.append(f"| {name} | {n} |")
    lines.append("")
    if duration_seconds is not None:
        lines.append(f"Duration: {duration_seconds:.1f} s")
    if calls:
        per_system = "; ".join(
            f"{system} " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items()))
            for system, outcomes in sorted(calls.items())
        )
        lines.append(f"Calls: {per_system}")
    if failed_total:
        shown = len(failed_rows)
        lines.append(
            f"Devices not processed: {failed_total}"
            + (f" (the first {shown} in `failed_devices`)" if shown < failed_total else "")
        )
    if rejections:
        lines.append(f"Rows refused at intake: {rejections} (`intake_rejections`)")
    if results_file:
        lines.append(f"Every device's result: `{results_file}`")
    return "\n".join(lines) + "\n"
