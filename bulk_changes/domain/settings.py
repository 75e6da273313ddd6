"""Tenants and accounts, as the tenants file configures them.

Plain types: the file is read (YAML, ``${ENV}`` expansion) by ``bulk_changes.tenant_file``
and validated into these by the pydantic models of ``bulk_changes.schemas.tenants_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.notifications import WEBHOOK_EVENTS


class Secret:
    """A credential: usable as a value, never shown by repr/str (logs, errors, audit)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RateLimit:
    """A budget of calls shared by every op, run and process using the account."""

    calls_per_second: float
    max_in_flight: int
    # the vendor's counting window: "5 a second" is 1 s, "500 a minute" is 60 s
    window_seconds: float = 1.0

    @property
    def interval(self) -> float:
        return 1.0 / self.calls_per_second

    @property
    def calls_per_window(self) -> float:
        return self.calls_per_second * self.window_seconds


@dataclass(frozen=True)
class JasperAccount:
    name: str
    base_url: str
    username: str
    api_key: Secret
    rate_limit: RateLimit = RateLimit(5.0, 1)
    username_field: str = "accountCustom1"
    timeout_seconds: float = 30.0
    system: str = "jasper"


@dataclass(frozen=True)
class TelegenceAccount:
    name: str
    base_url: str
    app_id: str
    app_secret: Secret
    rate_limit: RateLimit = RateLimit(10.0, 4)
    timeout_seconds: float = 30.0
    activation_poll_seconds: float = 2.0
    activation_poll_attempts: int = 30
    system: str = "telegence"


@dataclass(frozen=True)
class RevioAccount:
    name: str
    base_url: str
    username: str
    client_code: str
    password: Secret
    subscription_key: Secret
    rate_limit: RateLimit = RateLimit(500 / 60, 4, 60.0)
    cost_center_labels: tuple[str, str, str] = ("Cost Center 1", "Cost Center 2", "Cost Center 3")
    cost_center_fallback_label: str = "Cost Center"
    username_label: str = "Username"
    # Guard each positional patch with a JSON Patch "test" of the field's label, so a
    # service whose fields moved since the read is never patched in the wrong place.
    guard_field_positions: bool = True
    timeout_seconds: float = 30.0
    system: str = "revio"


Account = JasperAccount | TelegenceAccount | RevioAccount

USERNAME_MAPPINGS = ("field", "description", "both")


@dataclass(frozen=True)
class WebhookEndpoint:
    """A tenant's receiver: where, the Standard Webhooks secret, which events."""

    url: str
    secret: Secret
    events: tuple[str, ...] = WEBHOOK_EVENTS

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


@dataclass(frozen=True)
class Tenant:
    id: str
    notify: tuple[str, ...] = ()
    jasper: JasperAccount | None = None
    telegence: TelegenceAccount | None = None
    revio: RevioAccount | None = None
    # Telegence devices have no carrier-side username: where Rev.io receives it.
    username_mapping: str = "field"
    # carrier rate plan -> Rev.io usage plan group id
    rate_plan_billing: dict[str, int] = field(default_factory=dict)
    webhooks: tuple[WebhookEndpoint, ...] = ()

    def carrier_account(self, integration: str) -> JasperAccount | TelegenceAccount:
        account = self.jasper if integration == "jasper" else self.telegence
        if account is None:
            raise ConfigurationError(f"tenant {self.id!r} has no {integration} account")
        return account

    def billing_account(self) -> RevioAccount:
        if self.revio is None:
            raise ConfigurationError(f"tenant {self.id!r} has no revio account")
        return self.revio


@dataclass(frozen=True)
class Settings:
    tenants: dict[str, Tenant]
    accounts: dict[str, Account]

    def tenant(self, tenant_id: str) -> Tenant:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            # The known tenants are not listed: queue producers read this in dead letters.
            raise ConfigurationError(f"unknown tenant {tenant_id[:64]!r}") from None
