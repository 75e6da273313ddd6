"""How many device threads a bulk change gets: enough for the calls in flight of the
accounts its change type calls, and no more."""

from __future__ import annotations

from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.apis import (
    JasperApi,
    ProcessingSettings,
    RevioApi,
    TelegenceApi,
    VendorApis,
)
from bulk_changes.resources.device_work import DeviceWork
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes_tests.conftest import inventory, submit


def _threads(repo, settings, db_url, change_type, request):
    rows = inventory(1, "jasper")
    repo.upsert_devices("acme", rows)
    bulk_id = submit(
        repo, settings, change_type, "jasper", [{"iccid": rows[0]["iccid"], **request}]
    ).id
    bulk = repo.get_bulk_change(bulk_id)
    work = DeviceWork(
        amop_db=AmopDatabase(url=db_url),
        tenant_config=TenantConfig(),
        vendors=VendorApis(jasper=JasperApi(), telegence=TelegenceApi(), revio=RevioApi()),
        processing=ProcessingSettings(),
    )
    return work.runner(bulk, settings.tenant("acme"), "run-1").max_workers


def test_a_change_that_never_calls_revio_gets_threads_for_the_carrier_alone(repo, settings, db_url):
    carrier = settings.tenant("acme").carrier_account("jasper").rate_limit.max_in_flight
    threads = _threads(repo, settings, db_url, "device_status", {"status": "DEACTIVATED"})
    assert threads == carrier * ProcessingSettings().workers_per_slot


def test_a_change_that_calls_revio_gets_threads_for_both_accounts(repo, settings, db_url):
    tenant = settings.tenant("acme")
    in_flight = (
        tenant.carrier_account("jasper").rate_limit.max_in_flight
        + tenant.billing_account().rate_limit.max_in_flight
    )
    processing = ProcessingSettings()
    threads = _threads(repo, settings, db_url, "username_cost_center", {"username": "ann"})
    assert threads == min(processing.max_workers, in_flight * processing.workers_per_slot)
