"""The external APIs as Dagster resources: each hands out clients for one account.

Accounts (URLs, credentials, limits) live in the tenant configuration; these resources
hold what is common to every account of a system and build the clients.
"""

# No `from __future__ import annotations`: Dagster tells a nested resource by its field's
# type, which must be a class when the resource class is made, not a string.

from collections.abc import Callable
from typing import Any

from dagster import ConfigurableResource

from bulk_changes.domain.audit import Exchange
from bulk_changes.domain.ports import BillingClient, JasperCarrier, TelegenceCarrier
from bulk_changes.domain.settings import JasperAccount, RevioAccount, TelegenceAccount

OnExchange = Callable[[Exchange], None] | None


class JasperApi(ConfigurableResource):
    def client(
        self, account: JasperAccount, limiter: Any, on_exchange: OnExchange = None
    ) -> JasperCarrier:
        from bulk_changes.resources.jasper import JasperClient

        return JasperClient(account, limiter=limiter, on_exchange=on_exchange)


class TelegenceApi(ConfigurableResource):
    def client(
        self, account: TelegenceAccount, limiter: Any, on_exchange: OnExchange = None
    ) -> TelegenceCarrier:
        from bulk_changes.resources.telegence import TelegenceClient

        return TelegenceClient(account, limiter=limiter, on_exchange=on_exchange)


class RevioApi(ConfigurableResource):
    def client(
        self, account: RevioAccount, limiter: Any, on_exchange: OnExchange = None
    ) -> BillingClient:
        from bulk_changes.resources.revio import RevioClient

        return RevioClient(account, limiter=limiter, on_exchange=on_exchange)


class ProcessingSettings(ConfigurableResource):
    """How hard to try: attempts per step, back-off, devices worked on at once per batch."""

    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    # Threads per batch and stage, as a multiple of the account's calls in flight: more
    # than the account allows in flight, so one device backing off never idles the account.
    workers_per_slot: int = 3
    max_workers: int = 16
    # A thread whose answer has arrived waits for the interpreter lock up to the switch
    # interval (5 ms by default) while other device threads run: on a one-in-flight
    # account that wait is on the critical path of every call.
    switch_interval_seconds: float = 0.001
    # When a run is stopped, device threads finish the call they are in (its timeout bounds
    # it) before the stop is recorded; a call that outlives this is recorded when it
    # returns (audit, completed step).
    stop_grace_seconds: float = 20.0


class VendorApis(ConfigurableResource):
    """The systems a device change calls: its carrier's platform and Rev.io billing."""

    jasper: JasperApi
    telegence: TelegenceApi
    revio: RevioApi

    def carrier(self, integration: str) -> JasperApi | TelegenceApi:
        return self.jasper if integration == "jasper" else self.telegence
