import pytest

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.settings import Secret, parse_settings
from bulk_changes.resources.tenant_config import expand_env, load_settings

BASE = {
    "accounts": {
        "j": {
            "system": "jasper",
            "base_url": "http://x/",
            "username": "u",
            "api_key": "k",
            "calls_per_second": 5,
        },
        "r": {
            "system": "revio",
            "base_url": "http://r",
            "username": "u",
            "client_code": "c",
            "password": "p",
            "subscription_key": "s",
            "calls_per_minute": 500,
        },
    },
    "tenants": [{"id": "t", "accounts": {"jasper": "j", "revio": "r"}, "notify": "a@b.c"}],
}


def test_tenants_share_accounts_by_name():
    settings = parse_settings(BASE)
    assert settings.tenant("t").jasper is settings.accounts["j"]


def test_calls_per_minute_becomes_a_rate():
    assert parse_settings(BASE).accounts["r"].rate_limit.calls_per_second == pytest.approx(500 / 60)


def test_a_per_minute_budget_keeps_its_one_minute_window():
    settings = parse_settings(BASE)
    assert settings.accounts["r"].rate_limit.window_seconds == 60
    assert settings.accounts["j"].rate_limit.window_seconds == 1


def test_secret_never_shows_in_repr():
    settings = parse_settings(BASE)
    assert "'k'" not in repr(settings) and "'p'" not in repr(settings)
    assert settings.accounts["j"].api_key.reveal() == "k"
    assert repr(Secret("x")) == "Secret('***')"


def test_unknown_account_reference_is_named():
    data = {**BASE, "tenants": [{"id": "t", "accounts": {"jasper": "missing"}}]}
    with pytest.raises(ConfigurationError, match="missing"):
        parse_settings(data)


def test_account_of_the_wrong_system_is_refused():
    data = {**BASE, "tenants": [{"id": "t", "accounts": {"jasper": "r"}}]}
    with pytest.raises(ConfigurationError, match="revio account"):
        parse_settings(data)


def test_env_expansion_with_default_and_value(monkeypatch):
    monkeypatch.setenv("BC_TEST_KEY", "real")
    assert expand_env({"a": "${BC_TEST_KEY}", "b": "${BC_TEST_NOPE:-dflt}"}) == {
        "a": "real",
        "b": "dflt",
    }


def test_missing_env_without_default_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("BC_TEST_NOPE", raising=False)
    with pytest.raises(ConfigurationError, match="BC_TEST_NOPE"):
        expand_env({"accounts": {"j": {"api_key": "${BC_TEST_NOPE}"}}})


def test_packaged_default_configuration_loads():
    settings = load_settings()
    assert {"acme", "globex"} <= set(settings.tenants)
