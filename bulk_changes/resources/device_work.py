"""What the device ops of ``process_bulk_change`` use, as one Dagster resource: the AMOP
database, the tenants file, the vendors' APIs and the processing settings."""

# No `from __future__ import annotations`: Dagster tells a nested resource by its field's
# type, which must be a class when the resource class is made, not a string.

from collections.abc import Callable

from dagster import ConfigurableResource

from bulk_changes.db.repository import Repository
from bulk_changes.domain.change_types import ChangeType, Integration
from bulk_changes.domain.model import BulkChange
from bulk_changes.domain.ports import BillingClient, CarrierClient, ServiceCache
from bulk_changes.domain.retry import RetryPolicy
from bulk_changes.domain.settings import Tenant
from bulk_changes.domain.step_plans import PLANS
from bulk_changes.processing.recorder import ExchangeRecorder
from bulk_changes.processing.runner import StageRunner
from bulk_changes.processing.service_directory import directory_for
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import ProcessingSettings, VendorApis
from bulk_changes.resources.tenant_config import TenantConfig


class AccountClients:
    """The carrier and billing clients of one bulk change, built on first use."""

    def __init__(
        self,
        carrier: Callable[[], CarrierClient],
        billing: Callable[[], BillingClient],
        services: ServiceCache,
    ) -> None:
        self._carrier_factory, self._billing_factory = carrier, billing
        self._services = services
        self._carrier: CarrierClient | None = None
        self._billing: BillingClient | None = None

    def carrier(self) -> CarrierClient:
        if self._carrier is None:
            self._carrier = self._carrier_factory()
        return self._carrier

    def billing(self) -> BillingClient:
        if self._billing is None:
            self._billing = self._billing_factory()
        return self._billing

    def services(self) -> ServiceCache:
        return self._services


class DeviceWork(ConfigurableResource):
    """The nested resources are the deployment's top-level ``amop_db``, ``tenant_config`` and
    ``processing`` (their settings are shown and changed there); ``vendors`` builds the
    clients of each account the tenants file names."""

    amop_db: AmopDatabase
    tenant_config: TenantConfig
    vendors: VendorApis
    processing: ProcessingSettings

    def repository(self) -> Repository:
        return self.amop_db.repository()

    def runner(self, bulk: BulkChange, tenant: Tenant, run_id: str) -> StageRunner:
        """A runner of ``bulk``'s device changes on its tenant's accounts."""
        limiter = self.amop_db.limiter()
        carrier_api = self.vendors.carrier(bulk.integration)
        revio = self.vendors.revio

        def clients(recorder: ExchangeRecorder) -> AccountClients:
            return AccountClients(
                lambda: carrier_api.client(
                    tenant.carrier_account(bulk.integration), limiter, recorder
                ),
                lambda: revio.client(tenant.billing_account(), limiter, recorder),
                # only the services of this bulk change kept from the billing account's pages
                directory_for(
                    tenant.billing_account().name,
                    run_id,
                    lambda: self.repository().revio_service_ids(bulk.id),
                ),
            )

        settings = self.processing
        # Enough threads to keep every account of the pipeline busy: more than its calls in
        # flight, so a device backing off (or waiting on the other system) never idles it.
        # Only the accounts this change calls: a device status change on Jasper never calls
        # Rev.io, and threads beyond the calls it can make only contend for the
        # interpreter lock (unconstrained, 16 threads instead of 3 cost a fifth more CPU).
        # The pool's size: how many of them work at once follows the run worker's CPU
        # (processing/device_lanes.py).
        in_flight = tenant.carrier_account(bulk.integration).rate_limit.max_in_flight
        plan = PLANS[(ChangeType(bulk.change_type), Integration(bulk.integration))]
        if tenant.revio is not None and any(step.system == "revio" for step in plan):
            in_flight += tenant.revio.rate_limit.max_in_flight
        return StageRunner(
            repo=self.repository(),
            bulk=bulk,
            tenant=tenant,
            clients_factory=clients,
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_delay=settings.base_delay_seconds,
                max_delay=settings.max_delay_seconds,
            ),
            run_id=run_id,
            max_workers=min(settings.max_workers, in_flight * settings.workers_per_slot),
        )
