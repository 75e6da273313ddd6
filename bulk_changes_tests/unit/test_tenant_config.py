"""The tenants file is parsed once per process, and again only when it or the environment
its ${VAR} come from changes."""

from __future__ import annotations

from bulk_changes.resources import tenant_config as module
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes_tests.notify_helpers import tenants_file


def counting_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = module.load_settings

    def load(path=None):
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(module, "load_settings", load)
    return parsed


def test_asking_again_for_an_unchanged_file_does_not_parse_it_again(tmp_path, monkeypatch):
    parsed = counting_parses(monkeypatch)
    resource = TenantConfig(path=str(tenants_file(tmp_path)))
    for _ in range(3):
        assert resource.settings().tenant("acme").id == "acme"
    assert len(parsed) == 1


def test_a_changed_file_is_read_again(tmp_path, monkeypatch):
    path = tenants_file(tmp_path)
    resource = TenantConfig(path=str(path))
    assert list(resource.settings().tenant("acme").notify) == ["ops@acme.example"]
    path.write_text(path.read_text().replace("ops@acme.example", "oncall@acme.example"))
    assert list(resource.settings().tenant("acme").notify) == ["oncall@acme.example"]


def test_a_changed_environment_variable_is_read_again(tmp_path, monkeypatch):
    resource = TenantConfig(path=str(tenants_file(tmp_path)))
    monkeypatch.setenv("JASPER_USERNAME", "first")
    assert resource.settings().accounts["jasper-main"].username == "first"
    monkeypatch.setenv("JASPER_USERNAME", "second")
    assert resource.settings().accounts["jasper-main"].username == "second"
