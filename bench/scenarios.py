"""Benchmark scenarios: who sends what, on which accounts, at which budgets.

Budgets are the documented ones (Jasper 5 calls/s with 1 in flight, Rev.io 500/min,
Telegence unpublished: 10/s, 4 in flight here), multiplied by the scale, and latencies
divided by it: time runs ``scale`` times faster, everything else is as in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_LATENCY_MS = {"jasper": 150.0, "telegence": 200.0, "revio": 250.0}
BASE_LIMITS = {  # calls, window seconds, in flight
    "jasper": (5.0, 1.0, 1),
    "telegence": (10.0, 1.0, 4),
    "revio": (500.0, 60.0, 8),
}


@dataclass
class Send:
    tenant: str
    change_type: str
    integration: str
    devices: int
    after_seconds: float = 0.0  # after the first message
    label: str = ""


@dataclass
class Scenario:
    name: str
    description: str
    tenants: list[str]
    sends: list[Send]
    constrained: bool = True
    shared_accounts: bool = True  # tenants share one account per system
    # up to this many milliseconds (divided by the scale) between a call's arrival at the
    # simulators and the moment it counts against the limits: the network's jitter
    arrival_jitter_ms: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


def many_accounts(name: str, accounts: int, devices: int) -> Scenario:
    """``accounts`` tenants, each with its own Jasper and Rev.io accounts and one
    username/cost-center change of ``devices`` devices, all sent at once: what one host
    keeps busy (issue 19, 20)."""
    tenants = [f"t{n}" for n in range(1, accounts + 1)]
    return Scenario(
        name,
        f"{accounts} tenants with their own accounts, {devices} username_cost_center on Jasper"
        " each, all at once",
        tenants,
        [Send(t, "username_cost_center", "jasper", devices) for t in tenants],
        shared_accounts=False,
    )


def scenarios(devices: int, memory_devices: int, accounts: int = 60) -> dict[str, Scenario]:
    big = devices
    return {
        s.name: s
        for s in [
            Scenario(
                "jasper_ucc",
                f"{big} username_cost_center on Jasper (Jasper and Rev.io both bind)",
                ["t1"],
                [Send("t1", "username_cost_center", "jasper", big)],
            ),
            Scenario(
                "jasper_status",
                f"{big} device_status on Jasper",
                ["t1"],
                [Send("t1", "device_status", "jasper", big)],
            ),
            Scenario(
                "jasper_jitter",
                f"{big} device_status on Jasper, 0-50 ms of network jitter before each call counts",
                ["t1"],
                [Send("t1", "device_status", "jasper", big)],
                arrival_jitter_ms=50.0,
            ),
            Scenario(
                "telegence_rate_plan",
                f"{big} carrier_rate_plan on Telegence",
                ["t1"],
                [Send("t1", "carrier_rate_plan", "telegence", big)],
            ),
            Scenario(
                "three_tenants",
                # each tenant's bulk change as large as the single-run scenarios' one: three
                # runs as long as one, on three budgets (run with --devices 3333 for the
                # earlier 10,000 split in three)
                f"three tenants with their own accounts, {big} device_status on Jasper each, at once",
                ["t1", "t2", "t3"],
                [Send(t, "device_status", "jasper", big) for t in ("t1", "t2", "t3")],
                shared_accounts=False,
            ),
            Scenario(
                "small_during_large",
                f"a 20-device bulk change sent while a {2 * big}-device one runs on the same account",
                ["t1"],
                [
                    Send("t1", "device_status", "jasper", 2 * big, label="large"),
                    Send("t1", "device_status", "jasper", 20, after_seconds=30.0, label="small"),
                ],
            ),
            Scenario(
                "small_alone",
                "the 20-device bulk change alone (the reference for small_during_large)",
                ["t1"],
                [Send("t1", "device_status", "jasper", 20, label="small")],
            ),
            Scenario(
                "unconstrained",
                f"{big} device_status on Jasper, simulators unconstrained (no latency, no limits): "
                "the project's own cost",
                ["t1"],
                [Send("t1", "device_status", "jasper", big)],
                constrained=False,
            ),
            Scenario(
                "telegence_unconstrained",
                f"{big} carrier_rate_plan on Telegence, simulators unconstrained (no latency, no "
                "limits): the per-device cost of the several-in-flight path",
                ["t1"],
                [Send("t1", "carrier_rate_plan", "telegence", big)],
                constrained=False,
            ),
            many_accounts("twenty_accounts", 20, big),
            many_accounts("forty_accounts", 40, big),
            many_accounts("eighty_accounts", 80, big),
            # --accounts N
            many_accounts("many_accounts", accounts, big),
            Scenario(
                "memory",
                f"{memory_devices} device_status on Jasper, unconstrained: peak memory",
                ["t1"],
                [Send("t1", "device_status", "jasper", memory_devices)],
                constrained=False,
            ),
        ]
    }
