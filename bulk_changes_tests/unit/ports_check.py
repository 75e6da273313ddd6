"""Read by mypy only (``test_ports.py``): every adapter and fake assigned to its port.

A method renamed, removed or given another signature on either side makes mypy report
the assignment below. Never imported at run time.
"""

from __future__ import annotations

from bulk_changes.db.repository import Repository
from bulk_changes.domain.ports import (
    BillingClient,
    Clients,
    DeviceChangeStore,
    JasperCarrier,
    ProgressStore,
    ServiceCache,
    TelegenceCarrier,
)
from bulk_changes.processing.service_directory import ServiceDirectory
from bulk_changes.resources.device_work import AccountClients
from bulk_changes.resources.jasper import JasperClient
from bulk_changes.resources.revio import RevioClient
from bulk_changes.resources.telegence import TelegenceClient
from bulk_changes_tests.fakes import (
    FakeClients,
    FakeJasperClient,
    FakeRevioClient,
    FakeTelegenceClient,
)


def real_adapters(
    jasper: JasperClient,
    telegence: TelegenceClient,
    revio: RevioClient,
    directory: ServiceDirectory,
    repository: Repository,
    clients: AccountClients,
) -> None:
    jasper_port: JasperCarrier = jasper
    telegence_port: TelegenceCarrier = telegence
    billing_port: BillingClient = revio
    cache_port: ServiceCache = directory
    store_port: DeviceChangeStore = repository
    progress_port: ProgressStore = repository
    clients_port: Clients = clients
    del jasper_port, telegence_port, billing_port, cache_port, store_port, progress_port
    del clients_port


def fakes(
    jasper: FakeJasperClient,
    telegence: FakeTelegenceClient,
    revio: FakeRevioClient,
    clients: FakeClients,
) -> None:
    jasper_port: JasperCarrier = jasper
    telegence_port: TelegenceCarrier = telegence
    billing_port: BillingClient = revio
    clients_port: Clients = clients
    del jasper_port, telegence_port, billing_port, clients_port
