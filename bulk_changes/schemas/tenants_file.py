"""The tenants file (tenants and the accounts they share) as pydantic models, read into
``domain.settings``' plain types. Secrets are ``SecretStr`` while read (never shown by a
repr or an error: inputs are hidden from errors) and ``domain.settings.Secret`` after.

A file that does not fit is a ``ConfigurationError`` naming where (the account or tenant),
the field and what is wrong; every problem of the file at once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.notifications import WEBHOOK_EVENTS
from bulk_changes.domain.settings import (
    USERNAME_MAPPINGS,
    Account,
    JasperAccount,
    RateLimit,
    RevioAccount,
    Secret,
    Settings,
    TelegenceAccount,
    Tenant,
    WebhookEndpoint,
)
from bulk_changes.domain.webhook_signing import secret_key

SYSTEMS = ("jasper", "telegence", "revio")
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _present(value: Any) -> Any:
    """A required value: absent, null and "" alike are missing (a YAML key left empty)."""
    if value is None or value == "":
        raise PydanticCustomError("missing", "is required")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads `username: 1234` as a number
    return value


Text = Annotated[str, BeforeValidator(_present)]
Url = Annotated[Text, AfterValidator(lambda url: url.rstrip("/"))]
SecretText = Annotated[SecretStr, BeforeValidator(_present)]


def _name(name: str) -> str:
    if not _ACCOUNT_NAME.match(name):
        raise PydanticCustomError("account_name", "names use letters, digits, '_', '.', '-'")
    return name


class _Model(BaseModel):
    # unknown keys are left alone, as before (a file may carry notes for its readers)
    model_config = ConfigDict(
        extra="ignore", coerce_numbers_to_str=True, hide_input_in_errors=True, frozen=True
    )


class _AccountFile(_Model):
    calls_per_second: float | None = None
    calls_per_minute: float | None = None
    max_in_flight: int | None = None
    timeout_seconds: float = 30.0

    @model_validator(mode="after")
    def _one_budget(self) -> _AccountFile:
        if self.calls_per_second is not None and self.calls_per_minute is not None:
            raise PydanticCustomError(
                "rate_limit", "give calls_per_second or calls_per_minute, not both"
            )
        rate = self.calls_per_second if self.calls_per_minute is None else self.calls_per_minute
        if (rate is not None and rate <= 0) or (
            self.max_in_flight is not None and self.max_in_flight < 1
        ):
            raise PydanticCustomError(
                "rate_limit", "rate limit must be positive, max_in_flight >= 1"
            )
        return self

    def rate_limit(self, default: RateLimit) -> RateLimit:
        rate, window = default.calls_per_second, default.window_seconds
        if self.calls_per_second is not None:
            rate, window = self.calls_per_second, 1.0
        elif self.calls_per_minute is not None:
            rate, window = self.calls_per_minute / 60.0, 60.0
        in_flight = default.max_in_flight if self.max_in_flight is None else self.max_in_flight
        return RateLimit(rate, in_flight, window)


class JasperAccountFile(_AccountFile):
    system: Literal["jasper"]
    base_url: Url
    username: Text
    api_key: SecretText
    username_field: str = "accountCustom1"

    def account(self, name: str) -> JasperAccount:
        return JasperAccount(
            name=name,
            base_url=self.base_url,
            username=self.username,
            api_key=Secret(self.api_key.get_secret_value()),
            rate_limit=self.rate_limit(RateLimit(5.0, 1)),
            username_field=self.username_field,
            timeout_seconds=self.timeout_seconds,
        )


class TelegenceAccountFile(_AccountFile):
    system: Literal["telegence"]
    base_url: Url
    app_id: Text
    app_secret: SecretText
    activation_poll_seconds: float = 2.0
    activation_poll_attempts: int = 30

    def account(self, name: str) -> TelegenceAccount:
        return TelegenceAccount(
            name=name,
            base_url=self.base_url,
            app_id=self.app_id,
            app_secret=Secret(self.app_secret.get_secret_value()),
            rate_limit=self.rate_limit(RateLimit(10.0, 4)),
            timeout_seconds=self.timeout_seconds,
            activation_poll_seconds=self.activation_poll_seconds,
            activation_poll_attempts=self.activation_poll_attempts,
        )


def _three_labels(labels: Any) -> Any:
    if not isinstance(labels, list | tuple) or len(labels) != 3:
        raise PydanticCustomError("labels", "cost_center_labels needs exactly 3 labels")
    return labels


class RevioAccountFile(_AccountFile):
    system: Literal["revio"]
    base_url: Url
    username: Text
    client_code: Text
    password: SecretText
    subscription_key: SecretText
    cost_center_labels: Annotated[tuple[str, str, str], BeforeValidator(_three_labels)] = (
        "Cost Center 1",
        "Cost Center 2",
        "Cost Center 3",
    )
    cost_center_fallback_label: str = "Cost Center"
    username_label: str = "Username"
    guard_field_positions: bool = True

    def account(self, name: str) -> RevioAccount:
        return RevioAccount(
            name=name,
            base_url=self.base_url,
            username=self.username,
            client_code=self.client_code,
            password=Secret(self.password.get_secret_value()),
            subscription_key=Secret(self.subscription_key.get_secret_value()),
            rate_limit=self.rate_limit(RateLimit(500 / 60, 4, 60.0)),
            cost_center_labels=self.cost_center_labels,
            cost_center_fallback_label=self.cost_center_fallback_label,
            username_label=self.username_label,
            guard_field_positions=self.guard_field_positions,
            timeout_seconds=self.timeout_seconds,
        )


AccountFile = Annotated[
    JasperAccountFile | TelegenceAccountFile | RevioAccountFile, Field(discriminator="system")
]


def _http(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise PydanticCustomError("url", "url must be http:// or https://")
    return url


def _webhook_secret(secret: SecretStr) -> SecretStr:
    try:
        secret_key(secret.get_secret_value())
    except ValueError as exc:
        # the message names the format, never the value
        raise PydanticCustomError("webhook_secret", str(exc)) from None
    return secret


def _events(value: Any) -> tuple[str, ...]:
    """``events`` omitted or ``["*"]``: all of them; one name alone is a list of one."""
    events = [value] if isinstance(value, str) else list(value or ["*"])
    if events == ["*"]:
        return WEBHOOK_EVENTS
    unknown = sorted(set(map(str, events)) - set(WEBHOOK_EVENTS))
    if unknown:
        raise PydanticCustomError(
            "events",
            "unknown events {unknown} (known: {known})",
            {"unknown": ", ".join(unknown), "known": ", ".join(WEBHOOK_EVENTS)},
        )
    wanted = set(map(str, events))
    return tuple(e for e in WEBHOOK_EVENTS if e in wanted)


class WebhookFile(_Model):
    url: Annotated[Text, AfterValidator(_http)]
    secret: Annotated[SecretText, AfterValidator(_webhook_secret)]
    events: Annotated[tuple[str, ...], BeforeValidator(_events)] = WEBHOOK_EVENTS

    def endpoint(self) -> WebhookEndpoint:
        return WebhookEndpoint(
            url=self.url, secret=Secret(self.secret.get_secret_value()), events=self.events
        )


def _webhook_list(value: Any) -> Any:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise PydanticCustomError("webhooks", "webhooks is a list of {url, secret, events}")
    return value


def _distinct_urls(hooks: list[WebhookFile]) -> list[WebhookFile]:
    seen: set[str] = set()
    for index, hook in enumerate(hooks):
        if hook.url in seen:
            raise PydanticCustomError(
                "webhooks",
                "{url} is listed twice (webhooks[{index}])",
                {"index": index, "url": hook.url},
            )
        seen.add(hook.url)
    return hooks


Webhooks = Annotated[
    list[WebhookFile], BeforeValidator(_webhook_list), AfterValidator(_distinct_urls)
]


def _addresses(value: Any) -> Any:
    if value is None:
        return ()
    return [value] if isinstance(value, str) else value


def _mapping(value: Any) -> Any:
    if value not in USERNAME_MAPPINGS:
        raise PydanticCustomError(
            "username_mapping",
            "username_mapping must be one of {known}",
            {"known": ", ".join(USERNAME_MAPPINGS)},
        )
    return value


class AccountRefs(_Model):
    jasper: str | None = None
    telegence: str | None = None
    revio: str | None = None


class TenantFile(_Model):
    id: Text
    notify: Annotated[tuple[str, ...], BeforeValidator(_addresses)] = ()
    accounts: Annotated[AccountRefs, BeforeValidator(lambda v: v or {})] = AccountRefs()
    username_mapping: Annotated[str, BeforeValidator(_mapping)] = "field"
    rate_plan_billing: Annotated[dict[str, int], BeforeValidator(lambda v: v or {})] = {}
    webhooks: Webhooks = []


class TenantsFile(_Model):
    """The whole file. Accounts are named at the top level so that several tenants can
    share one account (and so one rate limit); a tenant refers to them by name."""

    accounts: Annotated[
        dict[Annotated[str, AfterValidator(_name)], AccountFile],
        BeforeValidator(lambda v: v or {}),
    ] = {}
    tenants: Annotated[list[TenantFile], BeforeValidator(lambda v: v or [])] = []

    @model_validator(mode="after")
    def _tenants_and_their_accounts(self) -> TenantsFile:
        if not self.tenants:
            raise PydanticCustomError("file", "configuration: no tenants defined")
        seen: set[str] = set()
        for tenant in self.tenants:
            where = f"tenant {tenant.id!r}"
            if tenant.id in seen:
                raise PydanticCustomError("file", "{where}: defined twice", {"where": where})
            seen.add(tenant.id)
            for system in SYSTEMS:
                ref = getattr(tenant.accounts, system)
                if ref is None:
                    continue
                account = self.accounts.get(ref)
                if account is None:
                    raise PydanticCustomError(
                        "file",
                        "{where}: {system} account {ref} is not defined",
                        {"where": where, "system": system, "ref": repr(ref)},
                    )
                if account.system != system:
                    raise PydanticCustomError(
                        "file",
                        "{where}: account {ref} is a {other} account, not {system}",
                        {"where": where, "ref": repr(ref), "other": account.system,
                         "system": system},
                    )  # fmt: skip
        return self

    def settings(self) -> Settings:
        accounts: dict[str, Account] = {n: a.account(n) for n, a in self.accounts.items()}
        tenants = {}
        for t in self.tenants:
            linked = {s: accounts[r] for s in SYSTEMS if (r := getattr(t.accounts, s))}
            tenants[t.id] = Tenant(
                id=t.id,
                notify=t.notify,
                jasper=linked.get("jasper"),  # type: ignore[arg-type]
                telegence=linked.get("telegence"),  # type: ignore[arg-type]
                revio=linked.get("revio"),  # type: ignore[arg-type]
                username_mapping=t.username_mapping,
                rate_plan_billing=dict(t.rate_plan_billing),
                webhooks=tuple(h.endpoint() for h in t.webhooks),
            )
        return Settings(tenants=tenants, accounts=accounts)


# -- reading, and what a refusal says -------------------------------------------------------


def parse_settings(data: Any) -> Settings:
    """Settings from the file's content (YAML already read, ``${ENV}`` expanded)."""
    if not isinstance(data, dict):
        raise ConfigurationError("configuration: expected a mapping at the top level")
    try:
        return TenantsFile.model_validate(data).settings()
    except ValidationError as exc:
        raise ConfigurationError(describe(exc, data)) from None


def parse_account(name: str, data: Any) -> Account:
    """One account (``accounts.NAME`` of the file)."""
    try:
        _name(name)
        return TypeAdapter(AccountFile).validate_python(data).account(name)
    except PydanticCustomError as exc:
        raise ConfigurationError(f"account {name!r}: {exc.message()}") from None
    except ValidationError as exc:
        raise ConfigurationError(
            describe(exc, {"accounts": {name: data}}, ("accounts", name))
        ) from None


def parse_webhooks(raw: Any, where: str) -> tuple[WebhookEndpoint, ...]:
    """A tenant's ``webhooks: [{url, secret, events}]``; ``where`` names the tenant."""
    try:
        hooks = TypeAdapter(Webhooks).validate_python(raw)
    except ValidationError as exc:
        raise ConfigurationError(describe(exc, {}, (), where=f"{where}: webhooks")) from None
    return tuple(h.endpoint() for h in hooks)


def describe(
    error: ValidationError, data: dict[str, Any], prefix: tuple[Any, ...] = (), where: str = ""
) -> str:
    """Every problem, "; "-separated: where (account, tenant, webhook), the field, why."""
    return "; ".join(_problem(e, data, (*prefix, *e["loc"]), where) for e in error.errors())


def _problem(e: Any, data: dict[str, Any], loc: tuple[Any, ...], where: str) -> str:
    kind, message = e["type"], e["msg"]
    path = list(loc)
    place = []
    if where:
        place.append(where)
    if path[:1] == ["accounts"] and len(path) > 1:
        place.append(f"account {path[1]!r}")
        path = path[2:]
        if path[:1] and path[0] in SYSTEMS:
            path = path[1:]  # the tag of the discriminated union, not a field
        if path == ["[key]"]:
            path = []
    elif path[:1] == ["tenants"] and len(path) > 1 and isinstance(path[1], int):
        place.append(_tenant_name(data, path[1]))
        path = path[2:]
    if path[:1] == ["webhooks"] and len(path) > 1 and isinstance(path[1], int):
        place.append(f"webhooks[{path[1]}]")
        path = path[2:]
    elif where.endswith("webhooks") and path and isinstance(path[0], int):
        place[-1] = f"{where}[{path[0]}]"
        path = path[1:]
    field = ".".join(str(p) for p in path)
    if kind == "missing":
        reason = f"'{field}' is required"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        reason = f"{field}: expected a mapping" if field else "expected a mapping"
    elif kind == "union_tag_not_found":
        reason = "'system' is required"
    elif kind == "union_tag_invalid":
        reason = f"unknown system {e['ctx']['tag']!r} ({', '.join(SYSTEMS)})"
    elif kind in ("file", "rate_limit", "labels", "url", "webhooks", "username_mapping",
                  "events", "webhook_secret", "account_name") or not field:  # fmt: skip
        reason = message
    else:
        reason = f"{field}: {message}"
    return ": ".join([*place, reason]) if place else reason


def _tenant_name(data: dict[str, Any], index: int) -> str:
    tenants = data.get("tenants")
    if isinstance(tenants, list) and index < len(tenants) and isinstance(tenants[index], dict):
        tenant_id = tenants[index].get("id")
        if tenant_id not in (None, ""):
            return f"tenant {str(tenant_id)!r}"
    return f"tenants[{index}]"
