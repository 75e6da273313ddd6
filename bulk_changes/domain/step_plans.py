"""Routing: (change type, integration) -> the steps a device change goes through."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bulk_changes.domain.change_types import ChangeType, Integration


class Stage(StrEnum):
    """The op that runs a step: carrier, then billing, then the AMOP database."""

    CARRIER = "carrier"
    BILLING = "billing"
    DATABASE = "database"


STAGE_ORDER: tuple[Stage, ...] = (Stage.CARRIER, Stage.BILLING, Stage.DATABASE)

Condition = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True)
class Step:
    name: str
    system: str  # jasper, telegence, revio, amop
    stage: Stage
    description: str
    when: Condition | None = None

    def applies(self, request: Mapping[str, str]) -> bool:
        return self.when is None or self.when(request)


def _has_username(request: Mapping[str, str]) -> bool:
    return "username" in request


def _has_cost_center(request: Mapping[str, str]) -> bool:
    return any(f"cost_center_{i}" in request for i in (1, 2, 3))


def _has_new_iccid(request: Mapping[str, str]) -> bool:
    return "new_iccid" in request


UPDATE_AMOP = Step("amop.update_device", "amop", Stage.DATABASE, "Update the AMOP device row")

PLANS: Mapping[tuple[ChangeType, Integration], tuple[Step, ...]] = {
    (ChangeType.USERNAME_COST_CENTER, Integration.JASPER): (
        Step(
            "jasper.set_username", "jasper", Stage.CARRIER, "Set username at Jasper", _has_username
        ),
        Step(
            "revio.set_cost_centers",
            "revio",
            Stage.BILLING,
            "Set cost centers at Rev.io",
            _has_cost_center,
        ),
        UPDATE_AMOP,
    ),
    (ChangeType.USERNAME_COST_CENTER, Integration.TELEGENCE): (
        # Telegence does not hold the username: Rev.io gets it, with the cost centers.
        Step(
            "revio.set_username_cost_centers",
            "revio",
            Stage.BILLING,
            "Set username/cost centers at Rev.io",
        ),
        UPDATE_AMOP,
    ),
    (ChangeType.DEVICE_STATUS, Integration.JASPER): (
        Step("jasper.set_status", "jasper", Stage.CARRIER, "Set status at Jasper"),
        UPDATE_AMOP,
    ),
    (ChangeType.DEVICE_STATUS, Integration.TELEGENCE): (
        Step(
            "telegence.change_status", "telegence", Stage.CARRIER, "Change line status at Telegence"
        ),
        UPDATE_AMOP,
    ),
    (ChangeType.CARRIER_RATE_PLAN, Integration.JASPER): (
        Step("jasper.set_rate_plan", "jasper", Stage.CARRIER, "Set rate plan at Jasper"),
        Step("revio.set_billing_plan", "revio", Stage.BILLING, "Update billing plan at Rev.io"),
        UPDATE_AMOP,
    ),
    (ChangeType.CARRIER_RATE_PLAN, Integration.TELEGENCE): (
        Step("telegence.set_rate_plan", "telegence", Stage.CARRIER, "Set SOC at Telegence"),
        Step("revio.set_billing_plan", "revio", Stage.BILLING, "Update billing plan at Rev.io"),
        UPDATE_AMOP,
    ),
    (ChangeType.EQUIPMENT, Integration.TELEGENCE): (
        Step(
            "telegence.change_equipment", "telegence", Stage.CARRIER, "Change SIM/IMEI at Telegence"
        ),
        Step(
            "revio.update_service_number",
            "revio",
            Stage.BILLING,
            "Update the Rev.io service number holding the ICCID",
            _has_new_iccid,
        ),
        UPDATE_AMOP,
    ),
}


def plan_for(
    change_type: ChangeType, integration: Integration, request: Mapping[str, str]
) -> tuple[Step, ...]:
    """The steps this request needs, in order. KeyError for a combination nobody offers."""
    return tuple(step for step in PLANS[(change_type, integration)] if step.applies(request))
