"""The prior system's strategy, for side-by-side figures (reference/prior-system.md):
pages of 100 device changes, one device at a time, a Rev.io read and a write per device,
no limiter, every HTTP call retried up to 3 times at once, nothing recorded per step.

Run by run_bench in a process of its own (so its CPU is measured alone) with a JSON spec
on stdin; prints its figures as JSON. It reuses the project's HTTP clients only as
transport (without a limiter); the strategy is the prior system's.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bulk_changes.domain.errors import ExternalError, RetryableError, Throttled
from bulk_changes.resources.rate_limit import NoLimiter
from bulk_changes.schemas.tenants_file import parse_account

PAGE = 100
HTTP_RETRIES = 3


def with_retries(call, counters: dict[str, int]) -> Any:
    for attempt in range(HTTP_RETRIES + 1):
        try:
            return call()
        except Throttled:
            counters["throttled"] += 1
            if attempt == HTTP_RETRIES:
                raise
        except RetryableError:
            counters["retries"] += 1
            if attempt == HTTP_RETRIES:
                raise


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from bulk_changes.domain.revio_fields import cost_center_ops, username_ops
    from bulk_changes.resources.jasper import JasperClient
    from bulk_changes.resources.revio import RevioClient
    from bulk_changes.resources.telegence import TelegenceClient

    accounts = {name: parse_account(name, data) for name, data in spec["accounts"].items()}
    carrier_account = accounts[spec["carrier_account"]]
    carrier = (JasperClient if carrier_account.system == "jasper" else TelegenceClient)(
        carrier_account, limiter=NoLimiter()
    )
    revio_account = accounts[spec["revio_account"]]
    revio = RevioClient(revio_account, limiter=NoLimiter())
    counters = {"throttled": 0, "retries": 0, "failed": 0, "processed": 0}
    change_type, request = spec["change_type"], spec["request"]
    started = time.time()
    devices = spec["devices"]
    for page_start in range(0, len(devices), PAGE):
        for device in devices[page_start : page_start + PAGE]:
            try:
                if change_type == "device_status":
                    with_retries(
                        lambda d=device: carrier.set_status(d["iccid"], request["status"]), counters
                    )
                elif change_type == "carrier_rate_plan":
                    with_retries(
                        lambda d=device: carrier.change_rate_plan(
                            d["msisdn"], request["rate_plan"]
                        ),
                        counters,
                    )
                    service = with_retries(
                        lambda d=device: revio.get_service(d["revio_service_id"]), counters
                    )
                    with_retries(
                        lambda d=device: revio.patch_service(
                            d["revio_service_id"],
                            [{"op": "replace", "path": "/usage_plan_group_id", "value": 205}],
                        ),
                        counters,
                    )
                elif change_type == "username_cost_center":
                    with_retries(
                        lambda d=device: carrier.set_username(d["iccid"], request["username"]),
                        counters,
                    )
                    service = with_retries(
                        lambda d=device: revio.get_service(d["revio_service_id"]), counters
                    )
                    ops = cost_center_ops(
                        service["fields"],
                        {1: request["cost_center_1"]},
                        revio_account.cost_center_labels,
                        revio_account.cost_center_fallback_label,
                        False,
                    ) + username_ops(
                        service, request["username"], "field", revio_account.username_label, False
                    )
                    with_retries(
                        lambda d=device, o=ops: revio.patch_service(d["revio_service_id"], o),
                        counters,
                    )
                counters["processed"] += 1
            except ExternalError:
                counters["failed"] += 1  # the prior system logged it and moved on
    return {"makespan_s": round(time.time() - started, 1), **counters}


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
