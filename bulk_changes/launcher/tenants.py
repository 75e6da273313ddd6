"""The tenants file of a stack whose accounts are the simulators: acme and globex, each
on the same Jasper, Telegence and Rev.io accounts."""

from __future__ import annotations

from typing import Any


def simulator_tenants(sims: Any) -> dict[str, Any]:
    """The file's content, built from the running simulators' URLs."""
    common_revio = {
        "system": "revio",
        "base_url": sims.revio_url,
        "username": "sim-user",
        "client_code": "simclient",
        "password": "${E2E_REVIO_PASSWORD:-sim-revio-password}",
        "subscription_key": "sim-subscription-key",
        "calls_per_minute": 500,
        "max_in_flight": 4,
    }
    return {
        "accounts": {
            "jasper-e2e": {
                "system": "jasper",
                "base_url": sims.jasper_url,
                "username": "sim-user",
                "api_key": "sim-jasper-key",
                "calls_per_second": 5,
                "max_in_flight": 1,
            },
            "telegence-e2e": {
                "system": "telegence",
                "base_url": sims.telegence_url,
                "app_id": "sim-app",
                "app_secret": "sim-telegence-secret",
                "calls_per_second": 40,
                "max_in_flight": 6,
                "activation_poll_seconds": 0.2,
            },
            "revio-e2e": common_revio,
        },
        "tenants": [
            {
                "id": tenant,
                "notify": [f"ops@{tenant}.example"],
                "accounts": {
                    "jasper": "jasper-e2e",
                    "telegence": "telegence-e2e",
                    "revio": "revio-e2e",
                },
                "username_mapping": mapping,
                "rate_plan_billing": {"IOT_1GB": 101, "IOT_5GB": 105, "SOC1GB": 201, "SOC5GB": 205},
            }
            for tenant, mapping in (("acme", "field"), ("globex", "both"))
        ],
    }
