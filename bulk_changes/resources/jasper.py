"""Cisco IoT Control Center ("Jasper") REST client.

Basic auth ``username:apiKey``; devices keyed by ICCID. Errors are
``{"errorCode", "errorMessage"}``; ``40000029`` is throttling whatever the HTTP status.

An edit succeeds only when the 2xx answer carries the device's ``iccid``. A 2xx answer
with an ``errorCode`` is the carrier refusing (``Rejected``, or ``Throttled`` for
40000029); a 2xx answer with neither is not what the API documents, so it is a
``GarbageResponse``: the edit may or may not have been applied, so before the runner
sends it again it reads the device back (``domain.retry.effect_unknown``) and sends the
edit only if the device does not show it; the runner's attempt limit bounds it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from bulk_changes.domain import errors
from bulk_changes.domain.settings import JasperAccount
from bulk_changes.resources.http import (
    ApiResponse,
    HttpCaller,
    Limiter,
    OnExchange,
    Validator,
    basic_auth_header,
    plain_reader,
)

SYSTEM = "jasper"
THROTTLED_CODE = "40000029"
PAGE_SIZE = 50


def jasper_error(body: Any, text: str) -> tuple[str | None, str | None]:
    """``{"errorCode", "errorMessage"}`` -> (errorMessage, errorCode)."""
    if isinstance(body, dict) and ("errorCode" in body or "errorMessage" in body):
        code = body.get("errorCode")
        message = body.get("errorMessage")
        return (
            str(message) if message not in (None, "") else None,
            str(code) if code not in (None, "") else None,
        )
    return plain_reader(body, text)


def _path_key(value: str) -> str:
    return quote(str(value).strip(), safe="")


class JasperClient:
    """Plain client of one Jasper account (wrapped by ``bulk_changes.resources.apis``)."""

    system = SYSTEM

    def __init__(
        self,
        account: JasperAccount,
        limiter: Limiter | None = None,
        on_exchange: OnExchange = None,
        session: requests.Session | None = None,
    ) -> None:
        self.account = account
        key = account.api_key.reveal()
        auth = basic_auth_header(account.username, key)
        self.http = HttpCaller(
            system=SYSTEM,
            account_name=account.name,
            base_url=account.base_url,
            rate_limit=account.rate_limit,
            timeout_seconds=account.timeout_seconds,
            headers={"Authorization": auth},
            secrets=(key, auth, auth.split(" ", 1)[1]),
            error_reader=jasper_error,
            throttle_codes=(THROTTLED_CODE,),
            limiter=limiter,
            on_exchange=on_exchange,
            session=session,
        )

    # -- calls ----------------------------------------------------------------------------

    def get_device(self, iccid: str) -> dict[str, Any]:
        """``GET /devices/{iccid}``: the device's details."""
        response = self.http.request(
            "GET", f"/devices/{_path_key(iccid)}", validate=self._carries_iccid(iccid)
        )
        return dict(response.body)

    def edit_device(
        self, iccid: str, changes: dict[str, Any], effective_date: str | None = None
    ) -> dict[str, Any]:
        """``PUT /devices/{iccid}``; returns the answer body (``{"iccid": ...}``)."""
        if not changes:
            raise ValueError("edit_device needs at least one change")
        body = dict(changes)
        if effective_date:
            body["effectiveDate"] = effective_date
        response = self.http.request(
            "PUT",
            f"/devices/{_path_key(iccid)}",
            json_body=body,
            validate=self._carries_iccid(iccid),
        )
        return dict(response.body)

    def list_modified(
        self, modified_since: str | datetime, page_number: int = 1
    ) -> tuple[list[dict[str, Any]], bool]:
        """``GET /devices?modifiedSince=...``: (devices of the page, whether it is the last)."""
        since = (
            modified_since.isoformat() if isinstance(modified_since, datetime) else modified_since
        )
        response = self.http.request(
            "GET",
            "/devices",
            params={"modifiedSince": since, "pageSize": PAGE_SIZE, "pageNumber": page_number},
        )
        body = response.body
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
            raise errors.GarbageResponse(
                "device list answer has no 'devices' list", system=SYSTEM, status=response.status
            )
        return [dict(d) for d in body["devices"]], bool(body.get("lastPage", True))

    # -- helpers ----------------------------------------------------------------------------

    def set_username(self, iccid: str, username: str) -> dict[str, Any]:
        """The username lives in the account's chosen custom field (``username_field``)."""
        field = self.account.username_field
        self.edit_device(iccid, {field: username})
        return {"iccid": iccid, field: username}

    def set_status(self, iccid: str, status: str) -> dict[str, Any]:
        self.edit_device(iccid, {"status": status})
        return {"iccid": iccid, "status": status}

    def set_rate_plan(
        self,
        iccid: str,
        rate_plan: str,
        communication_plan: str | None = None,
        effective_date: str | None = None,
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {"ratePlan": rate_plan}
        if communication_plan:
            changes["communicationPlan"] = communication_plan
        self.edit_device(iccid, changes, effective_date=effective_date)
        result = {"iccid": iccid, **changes}
        if effective_date:
            result["effectiveDate"] = effective_date
        return result

    # -- checks -----------------------------------------------------------------------------

    @staticmethod
    def _carries_iccid(iccid: str) -> Validator:
        wanted = str(iccid).strip()

        def check(response: ApiResponse) -> None:
            body = response.body
            if isinstance(body, dict) and body.get("errorCode") not in (None, ""):
                message, code = jasper_error(body, response.text)
                raise errors.Rejected(
                    message or "refused", system=SYSTEM, status=response.status, code=code
                )
            got = body.get("iccid") if isinstance(body, dict) else None
            if got is None or str(got).strip() == "":
                raise errors.GarbageResponse(
                    f"HTTP {response.status} answer without the device's iccid "
                    f"(the API documents success as a body carrying it): "
                    f"{response.text.strip()[:200] or '(empty body)'}",
                    system=SYSTEM,
                    status=response.status,
                )
            if str(got).strip() != wanted:
                raise errors.GarbageResponse(
                    f"answer is about iccid {got}, not {wanted}",
                    system=SYSTEM,
                    status=response.status,
                )

        return check
