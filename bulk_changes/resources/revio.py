"""Rev.io billing client.

HTTP Basic ``login@clientcode:password`` plus the header ``Ocp-Apim-Subscription-Key`` on
every call. Answers are an envelope ``{"ok": true, ...}``: ``ok`` false is a refusal
(``Rejected``), ``ok`` missing is not the documented answer (``GarbageResponse``). The
error body's shape is not public: its ``error``/``message``/``errors`` keys are read when
present, else its text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from bulk_changes.domain import errors
from bulk_changes.domain.revio_fields import guard_failed
from bulk_changes.domain.settings import RevioAccount
from bulk_changes.resources.http import (
    ApiResponse,
    HttpCaller,
    Limiter,
    OnExchange,
    basic_auth_header,
    plain_reader,
)

SYSTEM = "revio"
PAGE_SIZE = 500
JSON_PATCH = "application/json-patch+json"

BuildOps = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


def revio_error(body: Any, text: str) -> tuple[str | None, str | None]:
    return plain_reader(body, text)


def _envelope(response: ApiResponse) -> None:
    body = response.body
    if not isinstance(body, dict) or "ok" not in body:
        raise errors.GarbageResponse(
            'answer without the {"ok": ...} envelope: '
            + (response.text.strip()[:200] or "(empty body)"),
            system=SYSTEM,
            status=response.status,
        )
    if body["ok"] is not True:
        message, code = revio_error(body, response.text)
        raise errors.Rejected(
            message or "answered ok: false", system=SYSTEM, status=response.status, code=code
        )


def _record(body: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(body).items() if k != "ok"}


class RevioClient:
    """Plain client of one Rev.io account (wrapped by ``bulk_changes.resources.apis``)."""

    system = SYSTEM

    def __init__(
        self,
        account: RevioAccount,
        limiter: Limiter | None = None,
        on_exchange: OnExchange = None,
        session: requests.Session | None = None,
    ) -> None:
        self.account = account
        password = account.password.reveal()
        key = account.subscription_key.reveal()
        auth = basic_auth_header(f"{account.username}@{account.client_code}", password)
        self.http = HttpCaller(
            system=SYSTEM,
            account_name=account.name,
            base_url=account.base_url,
            rate_limit=account.rate_limit,
            timeout_seconds=account.timeout_seconds,
            headers={"Authorization": auth, "Ocp-Apim-Subscription-Key": key},
            secrets=(password, key, auth, auth.split(" ", 1)[1]),
            error_reader=revio_error,
            limiter=limiter,
            on_exchange=on_exchange,
            session=session,
        )

    # -- services --------------------------------------------------------------------------

    def get_service(self, service_id: int | str) -> dict[str, Any]:
        response = self.http.request(
            "GET", f"/Services/{quote(str(service_id), safe='')}", validate=_envelope
        )
        return _record(response.body)

    def list_services(
        self, page: int = 1, page_size: int = PAGE_SIZE, **filters: Any
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of services: (records, has_more)."""
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {PAGE_SIZE}")
        params: dict[str, Any] = dict(filters)
        params.update({"page": page, "page_size": page_size})
        response = self.http.request("GET", "/Services", params=params, validate=_envelope)
        records = response.body.get("records")
        if not isinstance(records, list):
            raise errors.GarbageResponse(
                "service list answered without a 'records' list",
                system=SYSTEM,
                status=response.status,
            )
        return [dict(r) for r in records], bool(response.body.get("has_more", False))

    def find_services(self, number: str) -> list[dict[str, Any]]:
        """Every service whose number (or number2) is ``number``, following the pages.

        The ``number`` filter is not confirmed by the public documentation, so records are
        also checked here: a filter the API ignored never yields another device's service.
        """
        wanted = str(number).strip()
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            records, more = self.list_services(page, PAGE_SIZE, number=wanted)
            found += [
                r
                for r in records
                if wanted
                in (str(r.get("number") or "").strip(), str(r.get("number2") or "").strip())
            ]
            if not more or not records:
                return found
            page += 1

    def patch_service(self, service_id: int | str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """``PATCH /Services/{id}`` with JSON Patch ops; returns the answer without ``ok``."""
        if not ops:
            raise ValueError("patch_service needs at least one op")
        response = self.http.request(
            "PATCH",
            f"/Services/{quote(str(service_id), safe='')}",
            json_body=ops,
            headers={"Content-Type": JSON_PATCH},
            validate=_envelope,
        )
        return _record(response.body)

    def set_fields(self, service_id: int | str, build_ops: BuildOps) -> dict[str, Any]:
        """Read the service, patch it with ``build_ops(service)``.

        When a guard ``test`` op fails (the fields moved since the read), read again and try
        once more; a second failure is ``Rejected``. Nothing to change: no patch at all.
        """
        for attempt in (1, 2):
            service = self.get_service(service_id)
            try:
                ops = build_ops(service)
            except errors.Rejected as exc:
                named = f"service {service_id}"
                if named in exc.message:
                    raise
                raise errors.Rejected(
                    f"{named}: {exc.message}", system=SYSTEM, status=exc.status, code=exc.code
                ) from exc
            if not ops:
                return {"service_id": service_id, "patched": False}
            try:
                self.patch_service(service_id, ops)
            except errors.Rejected as exc:
                if not guard_failed(exc, ops):
                    raise
                if attempt == 2:
                    raise errors.Rejected(
                        f"service {service_id}: its custom fields moved again while being "
                        f"patched ({exc.message}); nothing was changed",
                        system=SYSTEM,
                        status=exc.status,
                        code=exc.code,
                    ) from exc
                continue
            return {
                "service_id": service_id,
                "patched": True,
                "ops": [op for op in ops if op.get("op") != "test"],
            }
        raise AssertionError("unreachable")  # pragma: no cover
