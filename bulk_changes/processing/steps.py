"""One handler per step of the step plans: the external calls a step makes.

A handler returns a small result to keep with the completed step, or raises one of the
project's errors. It never decides about retries or statuses: the stage runner does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from bulk_changes.domain import revio_fields
from bulk_changes.domain.errors import NotFound, OutcomeUnknown, Rejected, RetryableError
from bulk_changes.domain.json_patch import already_applied
from bulk_changes.domain.model import DeviceChange
from bulk_changes.domain.outcomes import telegence_status_action
from bulk_changes.domain.ports import Clients, JasperCarrier, ProgressStore, TelegenceCarrier
from bulk_changes.domain.settings import Tenant
from bulk_changes.domain.step_plans import Step
from bulk_changes.domain.telegence_fields import characteristics


@dataclass
class StepContext:
    step: Step
    change: DeviceChange
    device: Mapping[str, Any]
    tenant: Tenant
    integration: str
    clients: Clients
    progress: ProgressStore
    sleep: Callable[[float], None] = time.sleep

    @property
    def request(self) -> Mapping[str, str]:
        return self.change.request


Handler = Callable[[StepContext], dict[str, Any] | None]


# The bulk change's integration chose its carrier, and its plan holds only that carrier's
# steps (domain.step_plans): a jasper.* handler always gets a Jasper client.
def _jasper(ctx: StepContext) -> JasperCarrier:
    return cast(JasperCarrier, ctx.clients.carrier())


def _telegence(ctx: StepContext) -> TelegenceCarrier:
    return cast(TelegenceCarrier, ctx.clients.carrier())


# ---- Jasper ----------------------------------------------------------------------------


def jasper_set_username(ctx: StepContext) -> dict[str, Any] | None:
    return _jasper(ctx).set_username(ctx.device["iccid"], ctx.request["username"])


def jasper_set_status(ctx: StepContext) -> dict[str, Any] | None:
    return _jasper(ctx).set_status(ctx.device["iccid"], ctx.request["status"])


def jasper_set_rate_plan(ctx: StepContext) -> dict[str, Any] | None:
    return _jasper(ctx).set_rate_plan(
        ctx.device["iccid"],
        ctx.request["rate_plan"],
        communication_plan=ctx.request.get("communication_plan"),
        effective_date=ctx.request.get("effective_date"),
    )


# ---- Telegence -------------------------------------------------------------------------

DEFAULT_STATUS_REASON = "CR"


def telegence_change_status(ctx: StepContext) -> dict[str, Any] | None:
    number = ctx.device["msisdn"]
    target = ctx.request["status"]
    action = telegence_status_action(ctx.device.get("status"), target)
    if action is None:
        return {"unchanged": True, "status": target}
    if action == "activate":
        return _telegence_activate(ctx, number)
    client = _telegence(ctx)
    client.change_status(
        number,
        action,
        ctx.request.get("reason_code", DEFAULT_STATUS_REASON),
        ctx.request.get("effective_date") or time.strftime("%Y-%m-%d"),
    )
    return {"action": action, "status": target}


def _telegence_activate(ctx: StepContext, number: str) -> dict[str, Any]:
    client = _telegence(ctx)
    account = ctx.tenant.carrier_account("telegence")
    saved = ctx.progress.step_progress(ctx.change.id, ctx.step.name)
    if saved and saved.get("request_id"):
        request_id = saved["request_id"]  # asked before a crash or retry: poll, never ask twice
    else:
        line: dict[str, Any] = {"subscriberNumber": number}
        if ctx.device.get("iccid"):
            line["sim"] = ctx.device["iccid"]
        if ctx.device.get("rate_plan"):
            line["singleUserCode"] = ctx.device["rate_plan"]
        request_id = client.request_activation([line])
        ctx.progress.save_step_progress(ctx.change.id, ctx.step.name, {"request_id": request_id})
    attempts = getattr(account, "activation_poll_attempts", 30)
    interval = getattr(account, "activation_poll_seconds", 2.0)
    for poll in range(attempts):
        status = client.activation_status(request_id)
        state = str(status.get("interactionStatus", "")).upper()
        if state in ("COMPLETED", "FAILED"):
            for result in status.get("lines") or []:
                if str(result.get("subscriberNumber")) != number:
                    continue
                if str(result.get("status")).upper() == "A":
                    return {"action": "activate", "request_id": request_id, "status": "A"}
                raise Rejected(
                    f"activation refused: {result.get('description') or result.get('status')}",
                    system="telegence",
                )
            raise Rejected(
                f"activation {request_id} finished without a result for {number}",
                system="telegence",
            )
        if poll + 1 < attempts:
            ctx.sleep(interval)
    raise RetryableError(
        f"activation {request_id} still in progress after {attempts} polls", system="telegence"
    )


def telegence_set_rate_plan(ctx: StepContext) -> dict[str, Any] | None:
    _telegence(ctx).change_rate_plan(
        ctx.device["msisdn"], ctx.request["rate_plan"], ctx.request.get("effective_date")
    )
    return {"singleUserCode": ctx.request["rate_plan"]}


def telegence_change_equipment(ctx: StepContext) -> dict[str, Any] | None:
    _telegence(ctx).change_equipment(
        ctx.device["msisdn"],
        ctx.request["reason_code"],
        new_sim=ctx.request.get("new_iccid"),
        new_imei=ctx.request.get("new_imei"),
    )
    return {k: ctx.request[k] for k in ("new_iccid", "new_imei") if k in ctx.request}


# ---- Rev.io ----------------------------------------------------------------------------


def _service_id(ctx: StepContext) -> int:
    known = ctx.device.get("revio_service_id")
    if known:
        return int(known)
    number = ctx.device["iccid"] if ctx.integration == "jasper" else ctx.device["msisdn"]
    service = revio_fields.pick_active_service(ctx.clients.billing().find_services(number))
    if service is None:
        raise NotFound(f"no active Rev.io service has number {number}", system="revio")
    return int(service["service_id"])


def _cost_centers(request: Mapping[str, str]) -> dict[int, str]:
    return {i: request[f"cost_center_{i}"] for i in (1, 2, 3) if f"cost_center_{i}" in request}


OpsBuilder = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


def _cost_center_builder(ctx: StepContext) -> OpsBuilder:
    account = ctx.tenant.billing_account()
    values = _cost_centers(ctx.request)
    username = (
        ctx.request.get("username") if ctx.step.name == "revio.set_username_cost_centers" else None
    )

    def build(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        if username is not None:
            ops += revio_fields.username_ops(
                service,
                username,
                ctx.tenant.username_mapping,
                account.username_label,
                account.guard_field_positions,
            )
        if values:
            ops += revio_fields.cost_center_ops(
                service.get("fields") or [],
                values,
                account.cost_center_labels,
                account.cost_center_fallback_label,
                account.guard_field_positions,
            )
        return ops

    return build


def _billing_plan_builder(ctx: StepContext) -> OpsBuilder:
    plan = ctx.request["rate_plan"]
    group = ctx.tenant.rate_plan_billing.get(plan)
    if group is None:
        raise Rejected(
            f"rate plan {plan!r} has no billing mapping for tenant {ctx.tenant.id}", system="revio"
        )
    return lambda service: [{"op": "replace", "path": "/usage_plan_group_id", "value": group}]


def _service_number_builder(ctx: StepContext) -> OpsBuilder:
    old_iccid = ctx.device.get("iccid")
    new_iccid = ctx.request["new_iccid"]

    def build(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        number = service.get("number")
        if str(number) == str(new_iccid):
            return [{"op": "replace", "path": "/number", "value": new_iccid}]
        if not old_iccid or str(number) != str(old_iccid):
            return []  # the service is not numbered by the ICCID: nothing to change
        return [
            {"op": "test", "path": "/number", "value": number},
            {"op": "replace", "path": "/number", "value": new_iccid},
        ]

    return build


REVIO_BUILDERS: Mapping[str, Callable[[StepContext], OpsBuilder]] = {
    "revio.set_cost_centers": _cost_center_builder,
    "revio.set_username_cost_centers": _cost_center_builder,
    "revio.set_billing_plan": _billing_plan_builder,
    "revio.update_service_number": _service_number_builder,
}


def revio_patch(ctx: StepContext) -> dict[str, Any] | None:
    """Patch the service from what it holds now; nothing to spend when it already agrees."""
    build = REVIO_BUILDERS[ctx.step.name](ctx)
    service_id = _service_id(ctx)
    billing = ctx.clients.billing()
    directory = ctx.clients.services()
    service = directory.get(service_id, billing)
    ops = build(service)
    if not ops or already_applied(service, ops):
        return {"service_id": service_id, "unchanged": "already up to date"}
    try:
        updated = billing.patch_service(service_id, ops)
    except Rejected as exc:
        if not revio_fields.guard_failed(exc, ops):
            raise
        # The fields moved since the page was read: read this service afresh and retry.
        directory.forget([service_id])
        result = billing.set_fields(service_id, build)
        return {"service_id": service_id, "ops": result.get("ops", []), "reread": True}
    directory.remember(updated)
    return {"service_id": service_id, "ops": [op for op in ops if op.get("op") == "replace"]}


# ---- verification after a crash ------------------------------------------------------------
# A step whose call may have landed without its record (the process died in between) is
# checked at the external system before it is called again.


def _jasper_shows(ctx: StepContext, wanted: Mapping[str, Any]) -> dict[str, Any] | None:
    device = _jasper(ctx).get_device(ctx.device["iccid"])
    if all(str(device.get(k)) == str(v) for k, v in wanted.items()):
        return {"verified": dict(wanted)}
    return None


def verify_jasper(ctx: StepContext) -> dict[str, Any] | None:
    wanted: dict[str, Any]
    if ctx.step.name == "jasper.set_username":
        wanted = {ctx.tenant.carrier_account("jasper").username_field: ctx.request["username"]}  # type: ignore[union-attr]
    elif ctx.step.name == "jasper.set_status":
        wanted = {"status": ctx.request["status"]}
    else:
        wanted = {"ratePlan": ctx.request["rate_plan"]}
        if ctx.request.get("communication_plan"):
            wanted["communicationPlan"] = ctx.request["communication_plan"]
        effective = ctx.request.get("effective_date")
        if effective and _in_the_future(effective):
            raise OutcomeUnknown(
                f"the rate plan change effective {effective} may have been applied (its "
                "answer was lost) and does not show on the device before that date: it is "
                "not sent again; check the device's pending change in Control Center, then "
                "retry the device",
                system="jasper",
            )
    return _jasper_shows(ctx, wanted)


def _in_the_future(effective: str) -> bool:
    """Whether an ``effective_date`` lies after today (UTC): until then Jasper shows the
    old plan. A date that cannot be read is taken as future (it cannot be checked)."""
    try:
        day = date.fromisoformat(str(effective)[:10])
    except ValueError:
        return True
    return day > datetime.now(UTC).date()


def verify_telegence(ctx: StepContext) -> dict[str, Any] | None:
    if ctx.step.name == "telegence.change_status" and _activates(ctx):
        return _verify_activation(ctx)
    line = _telegence(ctx).get_line(ctx.device["msisdn"])
    traits = characteristics(line)
    if ctx.step.name == "telegence.change_status":
        return (
            {"verified": {"status": line.get("status")}}
            if line.get("status") == ctx.request["status"]
            else None
        )
    if ctx.step.name == "telegence.set_rate_plan":
        ok = traits.get("singleUserCode") == ctx.request["rate_plan"]
    else:
        ok = all(
            traits.get(name) == ctx.request[field]
            for field, name in (("new_iccid", "sim"), ("new_imei", "IMEI"))
            if field in ctx.request
        )
    return {"verified": True} if ok else None


def _activates(ctx: StepContext) -> bool:
    try:
        return (
            telegence_status_action(ctx.device.get("status"), ctx.request["status"]) == "activate"
        )
    except Rejected:
        return False


def _active_line(ctx: StepContext) -> bool:
    try:
        return _telegence(ctx).get_line(ctx.device["msisdn"]).get("status") == "A"
    except NotFound:
        return False  # an activation creates the line when it completes


def _verify_activation(ctx: StepContext) -> dict[str, Any] | None:
    """An activation request whose answer was lost (or whose process died before it
    kept the request id). Telegence completes it asynchronously, and only then does the
    line show ``A``; a second request for the same line would fail as already active, or
    worse. So the line is watched for as long as the handler would poll the request: ``A``
    -> it landed; still not active -> ``OutcomeUnknown``, never asked again. With the
    request id kept, the handler polls that request instead (it never asks twice)."""
    saved = ctx.progress.step_progress(ctx.change.id, ctx.step.name)
    if saved and saved.get("request_id"):
        return {"verified": {"status": "A"}} if _active_line(ctx) else None
    account = ctx.tenant.carrier_account("telegence")
    attempts = getattr(account, "activation_poll_attempts", 30)
    interval = getattr(account, "activation_poll_seconds", 2.0)
    for poll in range(attempts):
        if _active_line(ctx):
            return {"verified": {"status": "A"}, "action": "activate"}
        if poll + 1 < attempts:
            ctx.sleep(interval)
    raise OutcomeUnknown(
        f"the activation of line {ctx.device['msisdn']} may have been requested (its answer "
        f"was lost) and the line is not active after {attempts * interval:.0f} s: it is not "
        "requested again; check the line at Telegence, then retry the device",
        system="telegence",
    )


def verify_revio(ctx: StepContext) -> dict[str, Any] | None:
    build = REVIO_BUILDERS[ctx.step.name](ctx)
    service_id = _service_id(ctx)
    service = ctx.clients.billing().get_service(service_id)
    return (
        {"service_id": service_id, "verified": True}
        if already_applied(service, build(service))
        else None
    )


VERIFIERS: Mapping[str, Handler] = {
    "jasper.set_username": verify_jasper,
    "jasper.set_status": verify_jasper,
    "jasper.set_rate_plan": verify_jasper,
    "telegence.change_status": verify_telegence,
    "telegence.set_rate_plan": verify_telegence,
    "telegence.change_equipment": verify_telegence,
    "revio.set_cost_centers": verify_revio,
    "revio.set_username_cost_centers": verify_revio,
    "revio.set_billing_plan": verify_revio,
    "revio.update_service_number": verify_revio,
}


HANDLERS: Mapping[str, Handler] = {
    "jasper.set_username": jasper_set_username,
    "jasper.set_status": jasper_set_status,
    "jasper.set_rate_plan": jasper_set_rate_plan,
    "telegence.change_status": telegence_change_status,
    "telegence.set_rate_plan": telegence_set_rate_plan,
    "telegence.change_equipment": telegence_change_equipment,
    "revio.set_cost_centers": revio_patch,
    "revio.set_username_cost_centers": revio_patch,
    "revio.set_billing_plan": revio_patch,
    "revio.update_service_number": revio_patch,
}
