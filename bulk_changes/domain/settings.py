"""Tenants and accounts, as read from the configuration file (already parsed to dicts).

Pure: parsing and validation of plain data. The YAML file and ``${ENV}`` expansion live in
``bulk_changes.resources.tenant_config``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.notifications import WEBHOOK_EVENTS
from bulk_changes.domain.webhook_signing import secret_key


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


_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise ConfigurationError(f"{where}: '{key}' is required")
    return data[key]


def _rate_limit(data: dict[str, Any], default: RateLimit, where: str) -> RateLimit:
    per_second = data.get("calls_per_second")
    per_minute = data.get("calls_per_minute")
    if per_second is not None and per_minute is not None:
        raise ConfigurationError(f"{where}: give calls_per_second or calls_per_minute, not both")
    rate, window = default.calls_per_second, default.window_seconds
    if per_second is not None:
        rate, window = float(per_second), 1.0
    elif per_minute is not None:
        rate, window = float(per_minute) / 60.0, 60.0
    in_flight = int(data.get("max_in_flight", default.max_in_flight))
    if rate <= 0 or in_flight < 1:
        raise ConfigurationError(f"{where}: rate limit must be positive, max_in_flight >= 1")
    return RateLimit(rate, in_flight, window)


def parse_account(name: str, data: dict[str, Any]) -> Account:
    where = f"account {name!r}"
    if not _ACCOUNT_NAME.match(name):
        raise ConfigurationError(f"{where}: names use letters, digits, '_', '.', '-'")
    system = _require(data, "system", where)
    base_url = str(_require(data, "base_url", where)).rstrip("/")
    timeout = float(data.get("timeout_seconds", 30.0))
    if system == "jasper":
        return JasperAccount(
            name=name,
            base_url=base_url,
            username=str(_require(data, "username", where)),
            api_key=Secret(str(_require(data, "api_key", where))),
            rate_limit=_rate_limit(data, RateLimit(5.0, 1), where),
            username_field=str(data.get("username_field", "accountCustom1")),
            timeout_seconds=timeout,
        )
    if system == "telegence":
        return TelegenceAccount(
            name=name,
            base_url=base_url,
            app_id=str(_require(data, "app_id", where)),
            app_secret=Secret(str(_require(data, "app_secret", where))),
            rate_limit=_rate_limit(data, RateLimit(10.0, 4), where),
            timeout_seconds=timeout,
            activation_poll_seconds=float(data.get("activation_poll_seconds", 2.0)),
            activation_poll_attempts=int(data.get("activation_poll_attempts", 30)),
        )
    if system == "revio":
        labels = data.get("cost_center_labels", ["Cost Center 1", "Cost Center 2", "Cost Center 3"])
        if len(labels) != 3:
            raise ConfigurationError(f"{where}: cost_center_labels needs exactly 3 labels")
        return RevioAccount(
            name=name,
            base_url=base_url,
            username=str(_require(data, "username", where)),
            client_code=str(_require(data, "client_code", where)),
            password=Secret(str(_require(data, "password", where))),
            subscription_key=Secret(str(_require(data, "subscription_key", where))),
            rate_limit=_rate_limit(data, RateLimit(500 / 60, 4, 60.0), where),
            cost_center_labels=(str(labels[0]), str(labels[1]), str(labels[2])),
            cost_center_fallback_label=str(data.get("cost_center_fallback_label", "Cost Center")),
            username_label=str(data.get("username_label", "Username")),
            guard_field_positions=bool(data.get("guard_field_positions", True)),
            timeout_seconds=timeout,
        )
    raise ConfigurationError(f"{where}: unknown system {system!r} (jasper, telegence, revio)")


def parse_webhooks(raw: Any, where: str) -> tuple[WebhookEndpoint, ...]:
    """``webhooks: [{url, secret, events}]``; ``events`` omitted or ``["*"]``: all of them."""
    if raw in (None, ""):
        return ()
    if not isinstance(raw, list):
        raise ConfigurationError(f"{where}: webhooks is a list of {{url, secret, events}}")
    endpoints: list[WebhookEndpoint] = []
    for index, item in enumerate(raw):
        at = f"{where}: webhooks[{index}]"
        if not isinstance(item, dict):
            raise ConfigurationError(f"{at}: expected a mapping")
        url = str(_require(item, "url", at))
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{at}: url must be http:// or https://")
        secret = str(_require(item, "secret", at))
        try:
            secret_key(secret)
        except ValueError as exc:
            # the message names the format, never the value
            raise ConfigurationError(f"{at}: {exc}") from None
        events = item.get("events") or ["*"]
        if isinstance(events, str):
            events = [events]
        if list(events) == ["*"]:
            events = list(WEBHOOK_EVENTS)
        unknown = sorted(set(map(str, events)) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ConfigurationError(
                f"{at}: unknown events {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)})"
            )
        if any(e.url == url for e in endpoints):
            raise ConfigurationError(f"{at}: {url} is listed twice")
        endpoints.append(
            WebhookEndpoint(
                url=url,
                secret=Secret(secret),
                events=tuple(e for e in WEBHOOK_EVENTS if e in set(map(str, events))),
            )
        )
    return tuple(endpoints)


def parse_settings(data: dict[str, Any]) -> Settings:
    """Build Settings from the parsed configuration file.

    Accounts are named at the top level so that several tenants can share one account
    (and so one rate limit); a tenant refers to them by name.
    """
    if not isinstance(data, dict):
        raise ConfigurationError("configuration: expected a mapping at the top level")
    accounts: dict[str, Account] = {}
    for name, raw in (data.get("accounts") or {}).items():
        if not isinstance(raw, dict):
            raise ConfigurationError(f"account {name!r}: expected a mapping")
        accounts[str(name)] = parse_account(str(name), raw)
    tenants: dict[str, Tenant] = {}
    for raw in data.get("tenants") or []:
        if not isinstance(raw, dict):
            raise ConfigurationError("tenants: each tenant is a mapping")
        tenant_id = str(_require(raw, "id", "tenant"))
        where = f"tenant {tenant_id!r}"
        if tenant_id in tenants:
            raise ConfigurationError(f"{where}: defined twice")
        refs = raw.get("accounts") or {}
        linked: dict[str, Any] = {}
        for system in ("jasper", "telegence", "revio"):
            ref = refs.get(system)
            if ref is None:
                linked[system] = None
                continue
            account = accounts.get(str(ref))
            if account is None:
                raise ConfigurationError(f"{where}: {system} account {ref!r} is not defined")
            if account.system != system:
                raise ConfigurationError(
                    f"{where}: account {ref!r} is a {account.system} account, not {system}"
                )
            linked[system] = account
        mapping = str(raw.get("username_mapping", "field"))
        if mapping not in USERNAME_MAPPINGS:
            raise ConfigurationError(
                f"{where}: username_mapping must be one of {', '.join(USERNAME_MAPPINGS)}"
            )
        billing = {str(k): int(v) for k, v in (raw.get("rate_plan_billing") or {}).items()}
        notify = raw.get("notify") or []
        if isinstance(notify, str):
            notify = [notify]
        tenants[tenant_id] = Tenant(
            id=tenant_id,
            notify=tuple(str(a) for a in notify),
            jasper=linked["jasper"],
            telegence=linked["telegence"],
            revio=linked["revio"],
            username_mapping=mapping,
            rate_plan_billing=billing,
            webhooks=parse_webhooks(raw.get("webhooks"), where),
        )
    if not tenants:
        raise ConfigurationError("configuration: no tenants defined")
    return Settings(tenants=tenants, accounts=accounts)
