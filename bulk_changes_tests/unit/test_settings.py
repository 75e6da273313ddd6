import pytest

from bulk_changes.domain.errors import ConfigurationError
from bulk_changes.domain.settings import Secret
from bulk_changes.resources.tenant_config import expand_env, load_settings
from bulk_changes.schemas.tenants_file import parse_settings

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


def write_tenants(tmp_path, data):
    import yaml

    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_refused_file_is_named_with_the_account_the_field_and_the_reason(tmp_path):
    data = {**BASE, "accounts": {**BASE["accounts"], "j": {**BASE["accounts"]["j"]}}}
    del data["accounts"]["j"]["api_key"]
    path = write_tenants(tmp_path, data)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(str(path))
    assert str(refused.value) == f"{path}: account 'j': 'api_key' is required"


def test_every_problem_of_the_file_is_named_at_once():
    data = {**BASE, "accounts": {k: dict(v) for k, v in BASE["accounts"].items()}}
    del data["accounts"]["j"]["api_key"]
    data["accounts"]["r"]["calls_per_second"] = 2
    with pytest.raises(ConfigurationError) as refused:
        parse_settings(data)
    assert "account 'j': 'api_key' is required" in str(refused.value)
    assert "account 'r': give calls_per_second or calls_per_minute, not both" in str(refused.value)


def test_secrets_are_read_as_secret_strings_and_never_shown_in_a_refusal():
    from pydantic import SecretStr

    from bulk_changes.schemas.tenants_file import JasperAccountFile

    account = JasperAccountFile.model_validate({**BASE["accounts"]["j"], "api_key": "k-123"})
    assert isinstance(account.api_key, SecretStr) and "k-123" not in repr(account)
    data = {**BASE, "accounts": {**BASE["accounts"], "j": {**BASE["accounts"]["j"]}}}
    data["accounts"]["j"]["api_key"] = "k-123"
    data["accounts"]["j"]["timeout_seconds"] = "k-123"  # refused, and the value not echoed
    with pytest.raises(ConfigurationError) as refused:
        parse_settings(data)
    assert "timeout_seconds" in str(refused.value) and "k-123" not in str(refused.value)


def test_a_secret_from_the_environment_is_expanded_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("BC_TEST_JASPER_KEY", "from-env")
    data = {**BASE, "accounts": {**BASE["accounts"], "j": {**BASE["accounts"]["j"]}}}
    data["accounts"]["j"]["api_key"] = "${BC_TEST_JASPER_KEY}"
    settings = load_settings(str(write_tenants(tmp_path, data)))
    assert settings.accounts["j"].api_key.reveal() == "from-env"
