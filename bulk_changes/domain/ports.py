"""What the processing layer needs of the world, as typed ports (``typing.Protocol``).

The adapters satisfy them without naming them: the carrier clients
(``resources/jasper.py``, ``resources/telegence.py``), the billing client
(``resources/revio.py``), the AMOP database (``db/``), and the tests' fakes. mypy checks
each of them against its port (``bulk_changes_tests/unit/ports_check.py``, run by
``test_ports.py``). Only domain types and the standard library appear here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from bulk_changes.domain.model import AuditEntry, DeviceChange, StepSuccess
from bulk_changes.domain.state_machine import DeviceStatus

# JSON Patch ops built from a service as it was read (revio_fields)
BuildOps = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


# ---- carriers ------------------------------------------------------------------------------


class JasperCarrier(Protocol):
    """Cisco Jasper Control Center, one account: a device by its ICCID."""

    def get_device(self, iccid: str) -> dict[str, Any]: ...

    def set_username(self, iccid: str, username: str) -> dict[str, Any]: ...

    def set_status(self, iccid: str, status: str) -> dict[str, Any]: ...

    def set_rate_plan(
        self,
        iccid: str,
        rate_plan: str,
        communication_plan: str | None = None,
        effective_date: str | None = None,
    ) -> dict[str, Any]: ...


class TelegenceCarrier(Protocol):
    """AT&T Telegence, one account: a line by its subscriber number."""

    def get_line(self, subscriber_number: str) -> dict[str, Any]: ...

    def change_status(
        self, subscriber_number: str, action: str, reason_code: str, effective_date: str | None
    ) -> dict[str, Any]: ...

    def change_rate_plan(
        self, subscriber_number: str, soc: str, effective_date: str | None = None
    ) -> dict[str, Any]: ...

    def change_equipment(
        self,
        subscriber_number: str,
        reason_code: str,
        new_sim: str | None = None,
        new_imei: str | None = None,
    ) -> dict[str, Any]: ...

    def request_activation(self, lines: Sequence[Mapping[str, Any]]) -> str: ...

    def activation_status(self, request_id: str) -> dict[str, Any]: ...


CarrierClient = JasperCarrier | TelegenceCarrier


# ---- billing -------------------------------------------------------------------------------


class BillingClient(Protocol):
    """Rev.io, one account: services and their custom fields."""

    def get_service(self, service_id: int) -> dict[str, Any]: ...

    def list_services(
        self, page: int = 1, page_size: int = 500
    ) -> tuple[list[dict[str, Any]], bool]: ...

    def find_services(self, number: str) -> list[dict[str, Any]]: ...

    def patch_service(self, service_id: int, ops: list[dict[str, Any]]) -> dict[str, Any]: ...

    def set_fields(self, service_id: int, build_ops: BuildOps) -> dict[str, Any]: ...


class ServiceCache(Protocol):
    """The billing account's services as read so far in this run (ServiceDirectory)."""

    def get(self, service_id: int, client: BillingClient) -> dict[str, Any]: ...

    def remember(self, service: dict[str, Any]) -> None: ...

    def forget(self, service_ids: Iterable[int]) -> None: ...


class Clients(Protocol):
    """The clients of one bulk change's accounts (real, or fakes in unit tests). The
    carrier is the bulk change's integration's: Jasper or Telegence."""

    def carrier(self) -> CarrierClient: ...

    def billing(self) -> BillingClient: ...

    def services(self) -> ServiceCache: ...


# ---- the AMOP database ---------------------------------------------------------------------
# Failures come out as domain.errors.StoreError (StoreUnavailable, StoreRefused), never as
# the database library's own errors.


class ProgressStore(Protocol):
    """A step's own progress (a request id to poll after a crash)."""

    def step_progress(self, device_change_id: int, step: str) -> dict[str, Any] | None: ...

    def save_step_progress(
        self, device_change_id: int, step: str, data: Mapping[str, Any]
    ) -> None: ...


class DeviceChangeStore(ProgressStore, Protocol):
    """What the stage runner reads and commits of device changes, step by step."""

    def device_changes(self, ids: Iterable[int]) -> list[DeviceChange]: ...

    def devices_by_id(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]: ...

    def completed_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]: ...

    def started_steps(self, device_change_ids: Iterable[int]) -> dict[int, set[str]]: ...

    def begin_step(
        self,
        device_change_id: int,
        step: str,
        run_id: str | None,
        *,
        after: StepSuccess | None = None,
        bulk_change_id: int | None = None,
    ) -> bool:
        """Mark ``step`` started before its call (False: the device change is final, no
        call); ``after``, the step just done, recorded in the same transaction."""
        ...

    def record_step_success(
        self,
        bulk_change_id: int,
        device_change_id: int,
        success: StepSuccess,
        run_id: str | None,
    ) -> None: ...

    def record_attempt_failure(
        self,
        *,
        bulk_change_id: int,
        device_change_id: int,
        step: str,
        error: str,
        audit: Sequence[AuditEntry],
        run_id: str | None,
        count: bool = True,
    ) -> None: ...

    def finish_device_change(
        self,
        *,
        bulk_change_id: int,
        device_change_id: int,
        status: DeviceStatus,
        reason: str | None,
        step: str | None,
        audit: Sequence[AuditEntry] = (),
        run_id: str | None = None,
        count_attempt: bool = False,
        inventory_update: Mapping[str, Any] | None = None,
        device_id: int | None = None,
        after: StepSuccess | None = None,
    ) -> bool:
        """Final, once: False if it was final already. A vanished inventory row raises
        LookupError (nothing committed); refused values raise StoreRefused."""
        ...
