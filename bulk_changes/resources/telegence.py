"""AT&T Telegence ("APS") mobility line client.

Headers ``app-id`` and ``app-secret`` on every call; lines keyed by subscriber number;
errors ``{"id", "description"}``. The base URL is ``http(s)://host:port`` (paths start
``/sp/...``).

The status change body is not public: ``status_change_body`` is the one place that
builds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests

from bulk_changes.domain import errors
from bulk_changes.domain.settings import TelegenceAccount
from bulk_changes.domain.telegence_fields import characteristics
from bulk_changes.resources.http import (
    ApiResponse,
    HttpCaller,
    Limiter,
    OnExchange,
    plain_reader,
)

SYSTEM = "telegence"
LINE_PATH = "/sp/mobility/lineconfig/api/v1/service/{number}"
ACTIVATION_PATH = "/sp/mobilityactivations/api/v1/serviceactivation"
MAX_ACTIVATIONS = 200
FINAL_ACTIVATION_STATES = ("COMPLETED", "FAILED")


def telegence_error(body: Any, text: str) -> tuple[str | None, str | None]:
    """``{"id", "description"}`` -> (description, None)."""
    if isinstance(body, dict) and body.get("description") not in (None, ""):
        return str(body["description"]), None
    return plain_reader(body, text)


def status_change_body(action: str, reason_code: str, effective_date: str | None) -> dict[str, Any]:
    """The body of a status change (suspend, restore, cancel): the one place that knows it."""
    return {
        "subscriberStatus": {
            "action": action,
            "reasonCode": reason_code,
            "effectiveDate": effective_date,
        }
    }


def _line_path(subscriber_number: str) -> str:
    return LINE_PATH.format(number=quote(str(subscriber_number).strip(), safe=""))


def _json_object(response: ApiResponse, what: str) -> dict[str, Any]:
    if not isinstance(response.body, dict):
        raise errors.GarbageResponse(
            f"{what}: expected a JSON object, got {response.text.strip()[:200] or '(empty body)'}",
            system=SYSTEM,
            status=response.status,
        )
    return dict(response.body)


class TelegenceClient:
    """Plain client of one Telegence account (wrapped by ``bulk_changes.resources.apis``)."""

    system = SYSTEM
    characteristics = staticmethod(characteristics)

    def __init__(
        self,
        account: TelegenceAccount,
        limiter: Limiter | None = None,
        on_exchange: OnExchange = None,
        session: requests.Session | None = None,
    ) -> None:
        self.account = account
        secret = account.app_secret.reveal()
        self.http = HttpCaller(
            system=SYSTEM,
            account_name=account.name,
            base_url=account.base_url,
            rate_limit=account.rate_limit,
            timeout_seconds=account.timeout_seconds,
            headers={"app-id": account.app_id, "app-secret": secret},
            secrets=(secret,),
            error_reader=telegence_error,
            limiter=limiter,
            on_exchange=on_exchange,
            session=session,
        )

    # -- lines ------------------------------------------------------------------------------

    def get_line(self, subscriber_number: str) -> dict[str, Any]:
        """The line as the API answers it (``subscriberNumber, status, serviceCharacteristic``)."""
        response = self.http.request("GET", _line_path(subscriber_number))
        return _json_object(response, f"line {subscriber_number}")

    def change_line(self, subscriber_number: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH`` of the line; returns the answer body (empty dict when there is none)."""
        response = self.http.request("PATCH", _line_path(subscriber_number), json_body=body)
        if response.body is None:
            return {}
        return _json_object(response, f"change of line {subscriber_number}")

    def change_rate_plan(
        self, subscriber_number: str, soc: str, effective_date: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if effective_date:
            body["effectiveDate"] = effective_date
        body["serviceCharacteristic"] = [{"name": "singleUserCode", "value": soc}]
        return self.change_line(subscriber_number, body)

    def change_equipment(
        self,
        subscriber_number: str,
        reason_code: str,
        new_sim: str | None = None,
        new_imei: str | None = None,
    ) -> dict[str, Any]:
        if not new_sim and not new_imei:
            raise ValueError("change_equipment needs a new SIM, a new IMEI or both")
        items = [{"name": "reasonCode", "value": reason_code}]
        if new_sim:
            items.append({"name": "sim", "value": new_sim})
        if new_imei:
            items.append({"name": "IMEI", "value": new_imei})
        return self.change_line(subscriber_number, {"serviceCharacteristic": items})

    def change_status(
        self,
        subscriber_number: str,
        action: str,
        reason_code: str,
        effective_date: str | None,
    ) -> dict[str, Any]:
        """Suspend, restore or cancel a line (activation is ``request_activation``)."""
        return self.change_line(
            subscriber_number, status_change_body(action, reason_code, effective_date)
        )

    # -- activations ------------------------------------------------------------------------

    def request_activation(self, lines: Sequence[Mapping[str, Any]]) -> str:
        """Ask to activate up to 200 lines; returns the request id to poll."""
        if not lines:
            raise ValueError("request_activation needs at least one line")
        if len(lines) > MAX_ACTIVATIONS:
            raise ValueError(
                f"at most {MAX_ACTIVATIONS} lines per activation request, got {len(lines)}"
            )
        response = self.http.request(
            "POST",
            ACTIVATION_PATH,
            json_body={"serviceActivations": [dict(line) for line in lines]},
        )
        body = _json_object(response, "activation request")
        request_id = body.get("requestId")
        if request_id in (None, ""):
            raise errors.GarbageResponse(
                f"activation request answered without a requestId: {response.text.strip()[:200]}",
                system=SYSTEM,
                status=response.status,
            )
        return str(request_id)

    def activation_status(self, request_id: str) -> dict[str, Any]:
        """``{"requestId", "interactionStatus": IN_PROGRESS|COMPLETED|FAILED, "lines": [...]}``."""
        response = self.http.request("GET", f"{ACTIVATION_PATH}/{quote(str(request_id), safe='')}")
        body = _json_object(response, f"activation {request_id}")
        if "interactionStatus" not in body:
            raise errors.GarbageResponse(
                f"activation {request_id} status answered without interactionStatus",
                system=SYSTEM,
                status=response.status,
            )
        return body
